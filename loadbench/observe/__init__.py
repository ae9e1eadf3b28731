"""What loadbench watches beside its own requests: the client itself, the server's processes,
the machine, its GPUs (NVML or ``nvidia-smi``) and RAPL zones as series over each stage, the
server's ``/metrics`` text, and the readings taken from them (server-side TTFT split, cold
start).
"""

from loadbench.observe.energy import EnergyUse
from loadbench.observe.gpus import GpuReader, GpuReading, NoGpu, NvmlReader
from loadbench.observe.machine import GpuUsage, ServerUsage
from loadbench.observe.monitor import (
    CLIENT_BOUND,
    LATE_WAKE_UPS,
    ClientHealth,
    ClientMonitor,
    ServerMonitor,
    client_label,
    find_listening_pid,
)
from loadbench.observe.nvsmi import SmiReader, find_gpus
from loadbench.observe.scrape import MetricsScraper, beside_api, default_metrics_url
from loadbench.observe.series import StageSeries, summarize
from loadbench.observe.serverside import ServerFigures, cold_start_text

__all__ = [
    "CLIENT_BOUND",
    "LATE_WAKE_UPS",
    "ClientHealth",
    "ClientMonitor",
    "EnergyUse",
    "GpuReader",
    "GpuReading",
    "GpuUsage",
    "MetricsScraper",
    "NoGpu",
    "NvmlReader",
    "ServerFigures",
    "ServerMonitor",
    "ServerUsage",
    "SmiReader",
    "StageSeries",
    "beside_api",
    "client_label",
    "cold_start_text",
    "default_metrics_url",
    "find_gpus",
    "find_listening_pid",
    "summarize",
]
