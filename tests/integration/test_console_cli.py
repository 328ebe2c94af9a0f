"""`acts console`: the command starts Streamlit headless on the chosen local port against ACTS_HOME."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.cli import main
from scripts.commands.console import streamlit_command

START_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until Streamlit answers its health check."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"console at {url} did not become healthy in {timeout_s} s")


def test_console_serves_the_home_on_localhost_and_stops_cleanly_on_sigterm(acts_home: Path) -> None:
    port = free_port()
    out, err, result = io.StringIO(), io.StringIO(), {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(["console", "--port", str(port)], out, err)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "server pid" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        banner = out.getvalue()
        pid = int(re.search(r"server pid (\d+)", banner).group(1))
        assert f"http://127.0.0.1:{port}" in banner and f"ACTS_HOME={acts_home.resolve()}" in banner
        wait_healthy(f"http://127.0.0.1:{port}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert b"<title>" in page.read()
    finally:
        os.kill(pid, signal.SIGTERM)
        thread.join(timeout=60)
    assert result["code"] == 0 and err.getvalue() == ""


def test_console_on_a_taken_port_fails_with_streamlit_exit_code_and_warns_off_loopback(acts_home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, err = io.StringIO(), io.StringIO()
        code = main(["console", "--port", str(port), "--host", "127.0.0.2"], out, err)
    assert code not in (0,) and "has no login; binding 127.0.0.2" in err.getvalue()


@pytest.mark.parametrize(("argv", "message"), [(["--port", "0"], "'--port' must be 1 to 65535, was 0"),
                                               (["--host", " "], "'--host' must be an address")])  # fmt: skip
def test_console_refuses_a_bad_port_or_host(acts_home: Path, argv: list[str], message: str) -> None:
    err = io.StringIO()
    assert main(["console", *argv], io.StringIO(), err) == 2
    assert message in err.getvalue()


def test_streamlit_command_is_headless_local_and_quiet() -> None:
    command = streamlit_command("127.0.0.1", 8501)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("backend/console/app.py")
    assert {"--server.headless=true", "--server.address=127.0.0.1", "--server.port=8501", "--browser.gatherUsageStats=false"} <= set(command)
