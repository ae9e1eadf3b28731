"""``python -m loadbench`` and the ``loadbench`` script.

The import is guarded: a Ctrl-C while the modules still load (a fraction of a second, but
seconds on a loaded box) ends like one before the first request, not with a traceback.
"""

import sys


def run() -> None:
    try:
        from loadbench.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the first request: no results written\n")
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
