"""`acts control kill | resume | status`: the kill switch from the command line.

The state and its action log live in ``$ACTS_HOME/acts.db`` (``backend.control.store``); a runtime
reads it before every event. Times come from the wall clock here, in the shell.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime
from typing import TextIO

from backend.clock import WallClock
from backend.control.store import ControlStatus, default_db_path, kill, resume, status


def register(sub: argparse._SubParsersAction) -> None:
    control = sub.add_parser("control", help="the kill switch: kill, resume, status")
    actions = control.add_subparsers(dest="action", required=True)
    for name, text in (("kill", "stop new risk and cancel open orders before the next event"), ("resume", "admit new risk again")):
        p = actions.add_parser(name, help=text)
        p.add_argument("--reason", required=True, help="why (logged with the action)")
        p.add_argument("--author", default=None, help="who (default: the login name)")
    show = actions.add_parser("status", help="the kill switch and the last logged action")
    show.add_argument("--json", action="store_true")
    control.set_defaults(handler=cmd_control)


def _utc(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _describe(snapshot: ControlStatus) -> str:
    state = "ON: no new risk is admitted" if snapshot.killed else "off: trading allowed"
    lines = [f"kill switch {state}", f"  since        {_utc(snapshot.since_ms)}", f"  actions      {snapshot.actions}"]
    last = snapshot.last_action
    if last is not None:
        lines.append(f"  last action  {last.action} by {last.author} at {_utc(last.ts_ms)}: {last.reason}")
    lines.append(f"  database     {default_db_path()}")
    return "\n".join(lines) + "\n"


def cmd_control(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Kill, resume or show the kill switch of the home's runtime."""
    if args.action == "status":
        snapshot = status()
        if args.json:
            out.write(json.dumps(snapshot.as_dict(), indent=1, sort_keys=True) + "\n")
        else:
            out.write(_describe(snapshot))
        return 0
    act = kill if args.action == "kill" else resume
    out.write(_describe(act(args.author or getpass.getuser(), args.reason, WallClock())))
    return 0
