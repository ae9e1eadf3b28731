"""Finding Foundry Local's endpoint from ``foundry service status``, as its SDK does.

A stand-in ``foundry`` first on PATH prints what the real CLI prints (recorded outputs
from Windows and macOS, where the CLI exists), so the real subprocess call, PATH lookup,
decoding and timeout are exercised; only the program at the other end is ours.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from loadbench.errors import TargetUnreachable
from loadbench.models import find_endpoint

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the stand-in `foundry` is a /bin/sh script"
)

RUNNING = "🟢 Model management service is running on http://127.0.0.1:5273/openai/status\n"
NOT_RUNNING = (
    "🔴 Model management service is not running!\n"
    "To start the service, run the following command: foundry service start\n"
)


def _stand_in(
    tmp_path: Path, stdout: bytes, *, stderr: bytes = b"", rc: int = 0, sleep_s: float = 0
) -> None:
    """Puts a ``foundry`` first on PATH that prints the given bytes and exits with ``rc``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "out").write_bytes(stdout)
    (tmp_path / "err").write_bytes(stderr)
    script = bindir / "foundry"
    # exec: the sleeping program is the one killed on timeout, and no orphan holds the pipes.
    script.write_text(
        f"""#!/bin/sh
[ "$*" = "service status" ] || exit 64
cat '{tmp_path / "out"}'
cat '{tmp_path / "err"}' >&2
[ {sleep_s} = 0 ] || exec sleep {sleep_s}
exit {rc}
""",
        encoding="utf-8",
    )
    script.chmod(0o755)
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(autouse=True)
def _restore_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # undone after each test


@pytest.mark.parametrize(
    ("printed", "endpoint"),
    [
        (RUNNING, "http://127.0.0.1:5273/v1"),
        # Windows line ends, the status line not first.
        (
            "Foundry Local v0.8.117\r\n"
            "🟢 Model management service is running on http://127.0.0.1:51995/openai/status\r\n",
            "http://127.0.0.1:51995/v1",
        ),
        (
            "✅ Service started successfully\nEndpoint: http://localhost:59959\n",
            "http://localhost:59959/v1",
        ),
        (
            "running on http://192.168.1.20:8080/openai/status (bound to all)\n",
            "http://192.168.1.20:8080/v1",
        ),
        # Trailing text glued to the URL and no final newline.
        ("Service is running on http://127.0.0.1:5272. Models: 2", "http://127.0.0.1:5272/v1"),
    ],
)
def test_a_running_service_gives_its_v1_endpoint(
    tmp_path: Path, printed: str, endpoint: str
) -> None:
    _stand_in(tmp_path, printed.encode())
    assert find_endpoint() == endpoint


def test_the_url_is_found_on_stderr_too(tmp_path: Path) -> None:
    _stand_in(tmp_path, b"", stderr=RUNNING.encode())
    assert find_endpoint() == "http://127.0.0.1:5273/v1"


def test_bytes_that_are_not_utf8_do_not_stop_the_search(tmp_path: Path) -> None:
    """A Windows console's code page, not UTF-8, around the emoji."""
    _stand_in(tmp_path, b"\xf0\x9f\x9f running \xff on http://127.0.0.1:5273/openai/status\r\n")
    assert find_endpoint() == "http://127.0.0.1:5273/v1"


@pytest.mark.parametrize(
    ("stdout", "stderr", "rc"),
    [
        (NOT_RUNNING, "", 0),
        ("", "Error: service not running\r\n", 1),
        ("", "", 0),
        ("listening on http://127.0.0.1:99999/openai/status\n", "", 0),  # not a port
    ],
)
def test_a_service_that_is_not_running_says_how_to_start_it(
    tmp_path: Path, stdout: str, stderr: str, rc: int
) -> None:
    _stand_in(tmp_path, stdout.encode(), stderr=stderr.encode(), rc=rc)
    with pytest.raises(TargetUnreachable, match="not running") as caught:
        find_endpoint()
    assert caught.value.exit_code == 3
    assert "`foundry service start`" in str(caught.value)
    if stdout or stderr:  # what the CLI said is passed on
        assert (stdout or stderr).splitlines()[0][:40] in str(caught.value)


def test_no_foundry_on_path_names_the_install_and_the_start_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no foundry anywhere
    with pytest.raises(TargetUnreachable, match="no `foundry` command on PATH") as caught:
        find_endpoint()
    assert caught.value.exit_code == 3
    assert "`foundry service start`" in str(caught.value)


def test_a_cli_that_hangs_is_given_up_on_after_the_timeout(tmp_path: Path) -> None:
    _stand_in(tmp_path, RUNNING.encode(), sleep_s=30)
    with pytest.raises(TargetUnreachable, match=r"did not answer within 0\.5 s") as caught:
        find_endpoint(timeout_s=0.5)
    assert "`foundry service start`" in str(caught.value)
