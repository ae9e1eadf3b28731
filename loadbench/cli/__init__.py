"""The command line: the one synchronous entry point, and the one place errors are caught.

Exit codes:
    0    done
    1    a stage broke a threshold or SLO, or a comparison found a regression
    2    bad input: a scenario, an option, a file
    3    the target did not answer before the first stage
    130  interrupted (Ctrl-C, SIGTERM) after the partial results were written

``runner`` composes every other package for one run; the command modules are thin.
"""

from loadbench.cli.annotate_command import annotate
from loadbench.cli.app import main
from loadbench.cli.check_command import check
from loadbench.cli.file_commands import compare, merge, report
from loadbench.cli.run_command import run
from loadbench.cli.serve_command import serve
from loadbench.cli.simulate_command import simulate

for _command in (run, check, report, compare, merge, simulate, serve, annotate):
    main.add_command(_command)

__all__ = ["main"]
