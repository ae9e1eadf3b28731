"""Section 4: start-up, from spawning ``loadbench run`` until the server parses its first POST.

The CLI probes ``GET /v1/models`` first, so the figure covers imports, reading the
scenario, the probe and the first request's way to the server.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from harness import PEERS_SOURCE, PEERS_STARTUP, Bench, median
from procs import PY, RefServer

# Guard: a median of 0.30 s measured on 2026-11-25, plus ~30%.
GUARD_S = 0.4


def section_startup(b: Bench, server: RefServer) -> None:
    p = b.plan
    print()
    print("4. Start-up: spawning `loadbench run <scenario> -q -o <file>` until the server")
    print("   parses its first POST (the CLI probes GET /v1/models first); 1 request, c=1")
    exe = Path(PY).with_name("loadbench.exe" if os.name == "nt" else "loadbench")
    found = str(exe) if exe.exists() else shutil.which("loadbench")
    if found is None:
        print("   loadbench's console script not found next to this Python; skipped")
        return
    scenario = b.tmp / "startup.toml"
    scenario.write_text(
        f'name = "bench-startup"\n[target]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n'
        '[[models]]\nname = "bench-model"\n[prompts]\nitems = ["Say hello."]\n'
        "[request]\nmax_tokens = 16\n[load]\nconcurrency = [1]\nrequests = 1\nwarmup = 0\n"
    )
    trials: list[float] = []
    totals: list[float] = []
    for i in range(p.startup_trials):
        server.reset()
        argv = [found, "run", str(scenario), "-q", "-o", str(b.tmp / f"startup-{i}.json")]
        spawned = time.monotonic_ns()
        _, _, error = b.children.run(argv, b.children.client_core, 30.0)
        total = (time.monotonic_ns() - spawned) / 1e9
        first = server.stats()["first_post_ns"]
        if error or not first:
            print(f"   trial {i + 1}: {error or 'no POST reached the server'}")
            continue
        trials.append((first - spawned) / 1e9)
        totals.append(total)
    b.cells.append({"section": "startup", "to_first_post_s": trials, "process_wall_s": totals})
    first_post = median(trials)
    if trials:
        print("   to first POST: " + ", ".join(f"{t:.3f}" for t in trials) + " s")
        print("   whole process (request, result file, summary, exit): ", end="")
        print(", ".join(f"{t:.2f}" for t in totals) + " s")
    name = "start-up: to first POST, median"
    print("   median to first POST: " + b.target(name, first_post, GUARD_S, " s"))
    print(f"   peers, launch to load ({PEERS_SOURCE};")
    print(f"   not re-run here): {PEERS_STARTUP}")
