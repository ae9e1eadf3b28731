"""Load past one core and one machine: a run's stages split across worker processes (or
Ray actors), each running the same engine, and merged back exactly into one result.

``shard`` cuts a stage into workers' parts, ``wire`` is the messages between driver and
workers, ``worker`` runs a part (``python -m loadbench.workers.worker``), ``links`` and
``ray_link`` carry the messages, ``driver`` runs the stages and ``merge`` lays the parts
back together, bucket for bucket.
"""

from loadbench.workers.driver import WorkerRefused, run_stages_in_workers
from loadbench.workers.fleet import EXIT_DEGRADED, Fleet, WorkerInfo
from loadbench.workers.merge import merge_shards
from loadbench.workers.shard import auto_workers, shard_plan

__all__ = [
    "EXIT_DEGRADED",
    "Fleet",
    "WorkerInfo",
    "WorkerRefused",
    "auto_workers",
    "merge_shards",
    "run_stages_in_workers",
    "shard_plan",
]
