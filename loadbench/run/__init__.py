"""Planning and driving the load: every request's due time computed first (``plan``), then
the engine that waits, sends and records, with the launch of a server and live progress.
"""

from loadbench.run.engine import RunState, StageResult, run_stages
from loadbench.run.launch import launched_server
from loadbench.run.limits import ensure_open_files
from loadbench.run.plan import StagePlan, plan_stage, plan_stages
from loadbench.run.progress import Reporter, console, summary_table

__all__ = [
    "Reporter",
    "RunState",
    "StagePlan",
    "StageResult",
    "console",
    "ensure_open_files",
    "launched_server",
    "plan_stage",
    "plan_stages",
    "run_stages",
    "summary_table",
]
