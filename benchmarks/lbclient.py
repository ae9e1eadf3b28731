"""loadbench's own engine, driven as ``loadbench run`` drives it, for ``make bench``.

A ``Scenario`` is built from ``loadbench.scenario.model``'s dataclasses and planned with
``plan_stages``; one ``LoadClient`` (``--transport lean`` or ``httpx``) runs two closed-loop
stages through ``engine.run_stage`` under ``anyio.run`` (uvloop when importable, as the CLI
does): a warmup stage (``--warmup-s`` seconds, or ``--warmup-each`` requests per worker),
then the measured stage (``--duration-s``: workers start requests until then, and the
stage ends when the last one finishes). CPU (``time.process_time``) and wall time cover
the measured stage; events are its ok requests' output tokens (one SSE content event each
with the reference server). Prints one JSON object.

Two benchmark-only hooks, both outside loadbench's stamps. ``--stagger-s`` (with a value
above 0) runs ``StaggeredClient``: each worker's first request of a stage waits a random
``0..stagger`` before ``LoadClient.execute`` (so before its send stamp), so that streams are
not phase-locked; it costs nothing per token. ``--timing`` (timing cells only, never a CPU
figure) also swaps ``loadbench.http.client.StreamState`` for ``StampedStreamState``, which keeps
the server's ``"t"``/``"r"`` stamp of each token event (~0.8 µs per token, measured and
reported as ``hook_ns_per_token``).

``--tls`` aims at ``https://host:port/v1`` (the reference server's ``--cert`` port); ``--ca``
makes the client trust that server's CA through ``SSL_CERT_FILE``, as a user with a private CA
would, so the certificate chain and host name are checked as in a real run.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import gc
import json
import os
import random
import signal
import sys
import time
from types import MappingProxyType
from typing import Any

import anyio
from stamps import StampedRequest, clock_offset_ns, timing_errors

import loadbench.http.client
from loadbench.http.client import LoadClient, StreamState
from loadbench.records import RequestRecord
from loadbench.run.engine import RunState, run_stage
from loadbench.run.plan import plan_stages
from loadbench.scenario.model import Api, Arrival, LoadMode, LoadSpec, RequestSpec, Scenario, Target

_MODEL = "bench-model"
_PROMPTS = ("Say hello.",)
# The request task's stamped state: a client wrapper reads it back after execute (here and
# in section_coldstart.py).
CURRENT_STREAM: contextvars.ContextVar[StampedStreamState] = contextvars.ContextVar("stream")


class StampedStreamState(StreamState):
    """Benchmark-only: loadbench's StreamState, plus the server's stamp of each token."""

    __slots__ = ("server_r", "server_t")

    def __init__(self, chat: bool, texts: list[str] | None = None) -> None:
        super().__init__(chat, texts)
        self.server_t: list[int] = []
        self.server_r = 0
        CURRENT_STREAM.set(self)  # the worker task's context: StaggeredClient.execute reads it

    def feed(self, payload: bytes, now_ns: int) -> None:
        tokens = len(self.token_ns)
        super().feed(payload, now_ns)
        if len(self.token_ns) != tokens:
            i = payload.find(b'"t":')
            self.server_t.append(int(payload[i + 4 : payload.find(b",", i)]))
            if not tokens:
                i = payload.find(b'"r":')
                if i >= 0:
                    self.server_r = int(payload[i + 4 : payload.find(b",", i)])


class StaggeredClient(LoadClient):
    """Benchmark-only: staggers each worker's first request and keeps paired stamps."""

    def __init__(self, stagger_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stagger_s = stagger_s
        self.started: set[int] = set()
        self.stamped: list[StampedRequest] = []

    async def execute(
        self,
        *,
        index: int,
        warmup: bool,
        model: str,
        prompt: str,
        due_ns: int | None = None,
        **workload: Any,
    ) -> RequestRecord:
        task = anyio.get_current_task().id
        if self.stagger_s and task not in self.started:
            self.started.add(task)
            await anyio.sleep(random.random() * self.stagger_s)
        rec = await super().execute(
            index=index, warmup=warmup, model=model, prompt=prompt, due_ns=due_ns, **workload
        )
        state = CURRENT_STREAM.get(None)
        if rec.ok and state is not None and state.token_ns:
            self.stamped.append(
                StampedRequest(rec.sent_ns, rec.token_ns, state.server_r, state.server_t)
            )
        return rec


def hook_cost_ns(samples: int = 20_000) -> float:
    """What the stamp hook adds per token event: StampedStreamState.feed - StreamState.feed."""
    payload = (
        b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"bench-model","t":3453454723043,"choices":[{"index":0,"delta":'
        b'{"content":" tok"},"logprobs":null,"finish_reason":null}]}'
    )
    costs = []
    for cls in (StreamState, StampedStreamState):
        best = float("inf")
        for _ in range(3):
            state = cls(True)
            feed = state.feed
            t0 = time.perf_counter_ns()
            for _ in range(samples):
                feed(payload, 1)
            best = min(best, (time.perf_counter_ns() - t0) / samples)
        costs.append(best)
    return costs[1] - costs[0]


def scenario(base_url: str, args: argparse.Namespace) -> Scenario:
    load = LoadSpec(
        mode=LoadMode.CONCURRENCY,
        concurrency=(args.conc,),
        rate=(),
        arrival=Arrival.CONSTANT,
        burstiness=1.0,
        max_concurrency=None,
        requests=None,
        duration_s=args.duration_s,
        warmup=0,
        seed=1,
    )
    return Scenario(
        name="bench",
        path="<benchmarks/lbclient.py>",
        target=Target(base_url, Api.CHAT, None, args.timeout_s, None),
        models=(_MODEL,),
        prompts=_PROMPTS,
        prompts_file=None,
        request=RequestSpec(args.tokens, None, True, MappingProxyType({})),
        load=load,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base_url = f"{'https' if args.tls else 'http'}://{args.host}:{args.port}/v1"
    s = scenario(base_url, args)
    if args.warmup_each:
        warm_load = dataclasses.replace(
            s.load, requests=args.warmup_each * args.conc, duration_s=None
        )
    else:
        warm_load = dataclasses.replace(s.load, duration_s=args.warmup_s)
    (warm_plan,) = plan_stages(dataclasses.replace(s, load=warm_load))
    (plan,) = plan_stages(s)
    options: dict[str, Any] = dict(
        base_url=base_url,
        api=s.target.api,
        spec=s.request,
        timeout_s=s.target.timeout_s,
        max_connections=args.conc,
        transport=args.transport,
    )
    staggered = args.timing or args.stagger_s > 0
    client = StaggeredClient(args.stagger_s, **options) if staggered else LoadClient(**options)
    state = RunState()
    async with client:
        await run_stage(warm_plan, s.prompts, client, state)
        if isinstance(client, StaggeredClient):
            client.started.clear()
            client.stamped.clear()
        cpu0, wall0, mono0 = time.process_time(), time.perf_counter_ns(), time.monotonic_ns()
        stage = await run_stage(plan, s.prompts, client, state)
        cpu1, wall1 = time.process_time(), time.perf_counter_ns()
    fig = stage.figures
    result: dict[str, Any] = {
        "client": f"loadbench-{args.transport}",
        "conc": args.conc,
        "tokens": args.tokens,
        "tls": args.tls,
        "ok": fig.ok,
        "failed": fig.failed,
        "errors": fig.errors,
        "events": fig.output_tokens,
        "cpu_s": cpu1 - cpu0,
        "wall_s": (wall1 - wall0) / 1e9,
        "loop": "uvloop" if args.uvloop else "asyncio",
        "client_health": stage.client.to_dict(),
        "reported": {
            "ttft_ms": fig.latency_ms["ttft"].to_dict(),
            "itl_ms": fig.latency_ms["itl"].to_dict(),
        },
    }
    if isinstance(client, StaggeredClient) and args.timing:
        offset = clock_offset_ns()
        lo = wall0 + int(args.stagger_s * 1e9)
        hi = wall0 + int((args.duration_s - args.stagger_s) * 1e9)
        steady = [r for r in client.stamped if lo <= r.sent_ns < hi]
        result["paired"] = timing_errors(steady, offset)
        result["hook_ns_per_token"] = round(hook_cost_ns())
        result["steady_mono_ns"] = [
            mono0 + int(args.stagger_s * 1e9),
            mono0 + int(args.duration_s * 1e9),
        ]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=["lean", "httpx"], default="lean")
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--warmup-each", type=int, default=0, help="requests per worker instead")
    p.add_argument("--duration-s", type=float, default=2.5)
    p.add_argument("--stagger-s", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=120.0, help="loadbench's target timeout")
    p.add_argument("--timing", action="store_true", help="benchmark-only stamp + stagger hooks")
    p.add_argument("--tls", action="store_true", help="https:// instead of http://")
    p.add_argument("--ca", default="", help="PEM of a CA to trust (sets SSL_CERT_FILE)")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--max-s", type=int, default=120, help="hard limit for this process")
    args = p.parse_args()
    if hasattr(signal, "alarm"):
        signal.alarm(args.max_s)  # SIGALRM's default action ends the process
    args.uvloop = False
    if not args.no_uvloop and sys.platform != "win32":
        try:
            import uvloop  # noqa: F401

            args.uvloop = True
        except ImportError:
            pass
    if args.ca:
        os.environ["SSL_CERT_FILE"] = args.ca
    if args.timing:
        loadbench.http.client.StreamState = StampedStreamState  # type: ignore[misc]
    gc.collect()
    result = anyio.run(run, args, backend_options={"use_uvloop": True} if args.uvloop else {})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
