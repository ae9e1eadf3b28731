"""Read this machine's GPUs the way a loadbench run does, for ~3 s, and print what came back.

Run once on a machine with an NVIDIA GPU (no server needed):

    .venv/bin/python scripts/gpu_check.py            # NVML if installed, else nvidia-smi
    .venv/bin/python scripts/gpu_check.py --smi      # nvidia-smi only, even with NVML

It prints which reader was chosen (or why none), each device's readings per tick, the
energy per meter (NVML's counter or integrated power; RAPL where readable) and what was
absent and why. Exit 0 when a GPU was read, 1 when none was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

import anyio

from loadbench.observe import GpuReader, NoGpu, ServerMonitor, SmiReader, find_gpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smi", action="store_true", help="use nvidia-smi even with NVML")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()

    reader: GpuReader | NoGpu
    if args.smi:
        path = shutil.which("nvidia-smi")
        reader = SmiReader(path) if path else NoGpu("no nvidia-smi on PATH")
    else:
        reader = find_gpus()
    print(f"reader: {reader.reason if isinstance(reader, NoGpu) else reader.source}")
    monitor = ServerMonitor(None, interval_s=args.interval, gpus=reader)

    async def watch() -> None:
        with anyio.move_on_after(args.seconds):
            await monitor.sample()

    anyio.run(watch)
    usage = monitor.finish(output_tokens=1000)
    series = usage.series
    if series is not None:
        names = [n for n, _ in series.columns if n.startswith(("gpu", "rapl"))]
        for i, t_s in enumerate(series.t_s):
            values = {n: series.column(n)[i] for n in names}
            print(f"t={t_s:6.3f}s  " + "  ".join(f"{n}={v}" for n, v in values.items()))
    for gpu in usage.gpus:
        print("gpu:", json.dumps(gpu.to_dict()))
    for use in usage.energy:  # joules_per_output_token as if 1000 tokens came out
        print("energy:", json.dumps(use.to_dict()))
    for meter, why in usage.absent.items():
        print(f"absent: {meter}: {why}")
    return 0 if usage.gpus else 1


if __name__ == "__main__":
    sys.exit(main())
