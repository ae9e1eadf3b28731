"""What loadbench watches beside its own requests: the server's processes and GPUs, its
``/metrics`` text, and the readings taken from them (server-side TTFT split, cold start).
"""

from loadbench.observe.monitor import (
    ClientHealth,
    ClientMonitor,
    ServerMonitor,
    ServerUsage,
    find_listening_pid,
)
from loadbench.observe.scrape import MetricsScraper, beside_api, default_metrics_url
from loadbench.observe.serverside import ServerFigures, cold_start_text

__all__ = [
    "ClientHealth",
    "ClientMonitor",
    "MetricsScraper",
    "ServerFigures",
    "ServerMonitor",
    "ServerUsage",
    "beside_api",
    "cold_start_text",
    "default_metrics_url",
    "find_listening_pid",
]
