"""Finding a running Foundry Local: its port changes on every service start.

Foundry Local's service on Windows and macOS binds 127.0.0.1 on a port it picks at start
(Foundry-Local PR #447; older builds used 5272, the workshop says 5273), so a fixed URL
in a scenario goes stale. Its own SDK (0.x) finds the service the way this module does:
run ``foundry service status`` and take the first ``http://host:port`` in what it prints,
e.g. ``🟢 Model management service is running on http://127.0.0.1:5273/openai/status``.
The OpenAI-compatible routes live under ``/v1`` on that host and port.

On Linux there is no ``foundry`` CLI (the runtime is SDK-only there); a script or test
that serves through the SDK knows its URL and passes it as ``base_url`` instead.
"""

from __future__ import annotations

import re
import subprocess

from loadbench.errors import TargetUnreachable

STATUS_COMMAND = ("foundry", "service", "status")
START_HINT = "foundry service start"
# Scheme, host (a name or an IPv4 address) and port, as the SDK matches them; the path
# the CLI prints after the port (/openai/status) is not part of the endpoint.
_URL = re.compile(r"http://([A-Za-z0-9.-]+):(\d{1,5})(?![\d])")


def parse_status(output: str) -> str | None:
    """The service's ``http://host:port`` from ``foundry service status``, or None.

    None when no URL is printed, which is how the CLI says the service is not running.
    """
    match = _URL.search(output)
    if match is None or not 0 < int(match.group(2)) < 65536:
        return None
    return f"http://{match.group(1)}:{int(match.group(2))}"


def find_endpoint(*, timeout_s: float = 10.0) -> str:
    """The OpenAI-compatible base URL (``http://host:port/v1``) of the running service.

    Raises ``TargetUnreachable`` (exit 3) naming the command that fixes it when there is
    no ``foundry`` on PATH, the command hangs past ``timeout_s`` (the CLI can stall while
    the service starts) or it prints no URL (the service is not running).
    """
    command = " ".join(STATUS_COMMAND)
    try:
        done = subprocess.run(
            STATUS_COMMAND,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # the CLI prints emoji; a Windows console code page may not
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise TargetUnreachable(
            "Foundry Local: no `foundry` command on PATH; install Foundry Local "
            f"(https://aka.ms/foundry-local) and run `{START_HINT}`, or give the "
            "endpoint as base_url"
        ) from None
    except subprocess.TimeoutExpired:
        raise TargetUnreachable(
            f"Foundry Local: `{command}` did not answer within {timeout_s:g} s; "
            f"run `{START_HINT}` and try again"
        ) from None
    except OSError as exc:
        raise TargetUnreachable(f"Foundry Local: cannot run `{command}`: {exc}") from None
    url = parse_status(done.stdout) or parse_status(done.stderr)
    if url is None:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        detail = f" (it said: {said[0][:120]})" if said else ""
        raise TargetUnreachable(
            f"Foundry Local: the service is not running{detail}; run `{START_HINT}`"
        )
    return url + "/v1"
