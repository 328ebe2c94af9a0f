"""`acts live enable --confirm | disable | status`: the operator's explicit switch for live trading.

Enabling is refused, naming what is missing, until a key is onboarded, a connectivity check passed
and a shadow session of the configured minimum length ran, in that order (:mod:`backend.control.live`).
Each enable and disable is logged with its author (required, no login-name default) and time; the
free text is checked (:mod:`backend.config.text`) before anything is written.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from backend.control.live import LiveGate
from backend.control.store import default_db_path
from backend.clock import WallClock
from backend.config.text import AUTHOR_MAX_CHARS, attribution, checked_text, display_text
from backend.errors import ControlError
from backend.kraken.settings import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    live = sub.add_parser("live", help="enable or disable live trading (explicit operator confirmation)")
    actions = live.add_subparsers(dest="action", required=True)
    enable = actions.add_parser("enable", help="enable live trading once every earlier requirement is met")
    enable.add_argument("--confirm", action="store_true", help="confirm: live trading sends real orders")
    enable.add_argument("--author", required=True, help="who confirms (logged)")
    disable = actions.add_parser("disable", help="disable live trading")
    disable.add_argument("--author", required=True, help="who disables (logged)")
    disable.add_argument("--reason", required=True, help="why (logged)")
    status = actions.add_parser("status", help="which live requirements are met")
    status.add_argument("--json", action="store_true")
    live.set_defaults(handler=cmd_live)


def cmd_live(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Enable, disable or show live trading for this home."""
    # The free text is checked before the database is opened: a refusal writes nothing.
    if args.action == "enable":
        checked_text("author", args.author, AUTHOR_MAX_CHARS, ControlError)
    elif args.action == "disable":
        attribution(args.author, args.reason, ControlError)
    settings = load_settings()
    with LiveGate(default_db_path()) as gate:
        if args.action == "enable":
            record = gate.enable(args.author, args.confirm, settings.min_shadow_ms, WallClock())
            out.write(f"live trading enabled by {display_text(record.author)} at {record.ts_ms} for key {record.key_fingerprint}\n")
            return 0
        if args.action == "disable":
            record = gate.disable(args.author, args.reason, WallClock())
            out.write(f"live trading disabled by {display_text(record.author)} at {record.ts_ms}\n")
            return 0
        readiness = gate.readiness(settings.min_shadow_ms)
        if args.json:
            out.write(json.dumps(readiness.as_dict(), indent=1, sort_keys=True) + "\n")
        else:
            for requirement in readiness.met:
                out.write(f"met      {requirement.value}\n")
            for requirement in readiness.missing:
                out.write(f"missing  {requirement.value}\n")
        return 0
