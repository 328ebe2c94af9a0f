"""`acts console [--port N] [--host 127.0.0.1]`: the operator console, Streamlit headless on localhost.

The console serves ``$ACTS_HOME`` (resolved here and passed to the server) and reads and writes only
through ``backend.control``. It binds to 127.0.0.1 unless ``--host`` says otherwise; it has no login,
so binding it elsewhere exposes the kill switch and profile edits to that network.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from backend.errors import ConfigError
from backend.home import acts_home

APP = Path(__file__).resolve().parents[2] / "backend" / "console" / "app.py"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    console = sub.add_parser("console", help="the operator console (Streamlit) on http://127.0.0.1:8501")
    console.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
    console.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    console.set_defaults(handler=cmd_console)


def streamlit_command(host: str, port: int) -> list[str]:
    """The Streamlit server command line: headless, no usage statistics, no file watcher."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"'--port' must be 1 to 65535, was {port}")
    if not host.strip():
        raise ConfigError(f"'--host' must be an address such as 127.0.0.1, was {host!r}")
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless=true", f"--server.port={port}", f"--server.address={host}",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none", "--server.runOnSave=false",
        "--global.developmentMode=false", "--client.toolbarMode=minimal",
    ]  # fmt: skip


def cmd_console(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the console server until it stops; a stop by SIGINT or SIGTERM is a normal exit (0)."""
    command = streamlit_command(args.host, args.port)
    home = acts_home().resolve()
    if args.host not in LOOPBACK:
        err.write(f"[acts] warning: the console has no login; binding {args.host} exposes it to that network\n")
    env = dict(os.environ, ACTS_HOME=str(home))
    child = subprocess.Popen(command, env=env)
    out.write(f"ACTS console on http://{args.host}:{args.port} (ACTS_HOME={home}, server pid {child.pid}); Ctrl-C stops it\n")
    out.flush()
    code = child.wait()
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code
