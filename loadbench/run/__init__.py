"""Planning and driving the load: every request's due time computed first (``plan``), then
the engine that waits, sends and records, with the launch of a server and live progress,
and the search for the highest load within the SLO (``search``), one stage at a time.
"""

from loadbench.run.engine import run_stage, run_stages
from loadbench.run.launch import launched_server
from loadbench.run.limits import ensure_open_files
from loadbench.run.plan import StagePlan, plan_stage, plan_stages
from loadbench.run.progress import Reporter, console, summary_table
from loadbench.run.prompt_figures import PromptFigures, prompt_figures
from loadbench.run.search import (
    Probe,
    SearchState,
    next_probe,
    record_probe,
    replay_search,
    search_plans,
    search_stages,
    start_search,
)
from loadbench.run.stage import RunState, StageResult
from loadbench.run.work import WorkPool

__all__ = [
    "Probe",
    "PromptFigures",
    "Reporter",
    "RunState",
    "SearchState",
    "StagePlan",
    "StageResult",
    "WorkPool",
    "console",
    "ensure_open_files",
    "launched_server",
    "next_probe",
    "plan_stage",
    "plan_stages",
    "prompt_figures",
    "record_probe",
    "replay_search",
    "run_stage",
    "run_stages",
    "search_plans",
    "search_stages",
    "start_search",
    "summary_table",
]
