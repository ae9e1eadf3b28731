"""Section 6: scaling out: SSE events per second and client CPU per event over 1, 2 and
``auto`` worker processes, side by side in one run, and where each turns client-bound.

Method (rerun it on a bigger machine as it is): the bulk reference server (each response
in one write, so the client does nearly all the work) answers 64-token streams; for each
configuration one ``run_stages_in_workers`` sweeps closed-loop concurrency for a fixed
window per stage, in its own child process. Per stage and configuration:

- events/s: content events of ok requests (TTFT count + ITL count of the merged
  histograms) over the merged measured window;
- CPU per event: the workers' own CPU over the stage (each worker's ``cpu_percent`` × its
  stage's wall time, summed), over those events; the driver, idle between stages, is left
  out;
- verdict: the merged stage's client label (``client-bound`` once any worker used more
  than 60% of a core, ``late wake-ups`` when idle but woken late).

``auto`` is one worker per core less one for a server on the same machine: on a 2-core
box that is 1, and the server shares the cores with every worker, so absolute figures say
little; read the ratios against 1 worker, measured minutes apart on the same cores.

    .venv/bin/python benchmarks/section_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

TOKENS = 64
CONCURRENCY = (16, 64, 256)
WINDOW_S = 3.0
QUICK_WINDOW_S = 1.5
ROUNDS, QUICK_ROUNDS = 3, 1


def _seconds(start: str, end: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def cell(
    url: str, workers: int, window_s: float, concurrency: tuple[int, ...]
) -> list[dict[str, Any]]:
    """One configuration's sweep, in this process: one row per stage."""
    import anyio

    from loadbench.observe import client_label
    from loadbench.run import plan_stages
    from loadbench.scenario import load_scenario
    from loadbench.workers import Fleet, run_stages_in_workers
    from loadbench.workers.wire import ShardResult

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scaling.toml"
        path.write_text(
            textwrap.dedent(
                f"""\
                name = "scaling"
                [target]
                base_url = "{url}"
                [[models]]
                name = "bench-model"
                [prompts]
                items = ["Count to sixty-four."]
                [request]
                max_tokens = {TOKENS}
                [load]
                concurrency = {list(concurrency)}
                duration_s = {window_s}
                warmup = 16
                """
            ),
            encoding="utf-8",
        )
        scenario = load_scenario(str(path))
    cpu_by_stage: list[float] = []

    def on_parts(_plan: Any, parts: list[ShardResult]) -> None:
        cpu_by_stage.append(
            sum(
                p.result.client.cpu_percent
                / 100
                * _seconds(p.result.started_at, p.result.finished_at)
                for p in parts
            )
        )

    fleet = Fleet()

    async def go() -> None:
        await run_stages_in_workers(
            scenario, plan_stages(scenario), url, fleet, workers=workers, on_parts=on_parts
        )

    anyio.run(go)
    for warning in fleet.warnings:
        print(f"{workers} worker(s): {warning}", file=sys.stderr)
    rows = []
    for stage, cpu_s in zip(fleet.state.stages, cpu_by_stage, strict=True):
        fig = stage.figures
        events = fig.histograms["ttft"].total_count + fig.histograms["itl"].total_count
        rows.append(
            {
                "concurrency": stage.plan.concurrency,
                "events": events,
                "events_per_s": events / fig.duration_s if fig.duration_s > 0 else None,
                "cpu_us_per_event": cpu_s / events * 1e6 if events else None,
                "verdict": client_label(
                    stage.client.cpu_percent, bottleneck=stage.client.bottleneck
                ),
                "degraded": fleet.degraded,
            }
        )
    return rows


def _run_cell(url: str, workers: int, window_s: float) -> list[dict[str, Any]]:
    argv = [sys.executable, __file__, "--cell", url, str(workers), str(window_s)]
    limit_s = 60 + len(CONCURRENCY) * (window_s + 10)
    out = subprocess.run(argv, capture_output=True, timeout=limit_s, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{workers} worker(s) failed: {out.stderr.decode()[-800:]}")
    for line in out.stderr.decode().splitlines()[-5:]:
        print(f"   ({line})")
    got = {r["concurrency"]: r for r in json.loads(out.stdout.decode().strip().splitlines()[-1])}
    missing = {"events_per_s": None, "cpu_us_per_event": None, "verdict": None}
    return [got.get(c, {"concurrency": c, **missing}) for c in CONCURRENCY]


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the figures; the verdict seen most (ties: the worse one)."""
    out = dict(rows[0])
    for key in ("events_per_s", "cpu_us_per_event"):
        values = sorted(v for r in rows if (v := r[key]) is not None)
        out[key] = statistics.median(values) if values else None
    verdicts = [r["verdict"] for r in rows]
    rank = {"client-bound": 2, "late wake-ups": 1, None: 0}
    out["verdict"] = max(set(verdicts), key=lambda v: (verdicts.count(v), rank[v]))
    return out


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="shorter windows")
    args.add_argument("--cell", nargs=3, metavar=("URL", "WORKERS", "WINDOW_S"), help="internal")
    opts = args.parse_args(argv)
    if opts.cell:
        url, workers, window_s = opts.cell
        print(json.dumps(cell(url, int(workers), float(window_s), CONCURRENCY)))
        return 0
    from procs import Children, start_server

    from loadbench.workers import auto_workers

    window_s = QUICK_WINDOW_S if opts.quick else WINDOW_S
    rounds = QUICK_ROUNDS if opts.quick else ROUNDS
    auto = auto_workers(local_server=True)
    configs = [("1", 1), ("2", 2), (f"auto={auto}", auto)]
    print()
    print(
        f"6. Scaling out: {TOKENS}-token streams from the bulk server, closed loop, "
        f"{window_s:g} s per stage"
    )
    print("   events/s: content events of ok requests over the merged window; µs/ev: the")
    print("   workers' CPU per event; verdict: the merged client label. The server shares")
    print("   the cores with every worker: read the ratios against 1 worker.")
    print(f"   {rounds} round(s), configurations in rotating order; figures: medians")
    children = Children(pin=False, prio=False)
    results: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(children, "bulk", Path(tmp), 600.0, ttft_ms=0.0, itl_ms=0.0)
        url = f"http://127.0.0.1:{server.port}/v1"
        try:
            for r in range(rounds):  # the order rotates, so no configuration always goes first
                for name, workers in configs[r % 3 :] + configs[: r % 3]:
                    runs.setdefault(name, []).append(_run_cell(url, workers, window_s))
                print(f"   round {r + 1}/{rounds} done")
        finally:
            children.stop_all()
    for name, cells in runs.items():
        results[name] = [_median_row([c[i] for c in cells]) for i in range(len(CONCURRENCY))]
    base = {r["concurrency"]: r for r in results["1"]}
    head = "".join(f" | {name + ' worker(s)':^32}" for name, _ in configs)
    print(f"   {'c':>5}{head}")
    sub = "".join(
        f" | {'k ev/s':>7} {'×1':>5} {'µs/ev':>6} {'×1':>5} {'verdict':>5}" for _ in configs
    )
    print(f"   {'':>5}{sub}")
    for c in CONCURRENCY:
        line = f"   {c:>5}"
        for name, _ in configs:
            row = next(r for r in results[name] if r["concurrency"] == c)
            one = base[c]
            eps, cpu = row["events_per_s"], row["cpu_us_per_event"]
            x_eps = eps / one["events_per_s"] if eps and one["events_per_s"] else None
            x_cpu = cpu / one["cpu_us_per_event"] if cpu and one["cpu_us_per_event"] else None
            verdict = {"client-bound": "CLIENT", "late wake-ups": "late"}.get(row["verdict"], "ok")
            line += (
                f" | {_fmt(eps and eps / 1e3, 1):>7} {_fmt(x_eps, 2):>5}"
                f" {_fmt(cpu, 1):>6} {_fmt(x_cpu, 2):>5} {verdict:>7}"
            )
        print(line)
    for name, _ in configs:
        bound = [r["concurrency"] for r in results[name] if r["verdict"] == "client-bound"]
        where = f"c={bound[0]}" if bound else f"not within c<={CONCURRENCY[-1]}"
        print(f"   {name} worker(s): client-bound from {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
