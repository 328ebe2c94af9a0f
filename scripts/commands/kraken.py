"""`acts kraken connect | status | disconnect`: onboard a Kraken API key into the OS credential store.

The key and the secret are read from a prompt (no echo) or, with ``--stdin``, from the first two
lines of standard input: never from the command line, which shell history keeps. Every check and
every call is :mod:`backend.control.onboarding`'s (the console's Kraken page calls the same functions).
Every logged action (connect, ``status --check``, disconnect) requires ``--author`` (no login-name
default); the author, the settings and the typed key are checked before anything is written.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TextIO

from backend.control.live import LiveGate
from backend.control.onboarding import KrakenEndpoint, OnboardingError, connect, connection_status, disconnect, read_credentials, recheck
from backend.control.store import default_db_path
from backend.clock import WallClock
from backend.config.text import AUTHOR_MAX_CHARS, checked_text, display_text
from backend.kraken.permissions import KeyMode, describe
from backend.kraken.settings import KrakenSettings, load_settings
from backend.secrets.keychain import Keychain


def register(sub: argparse._SubParsersAction) -> None:
    kraken = sub.add_parser("kraken", help="connect a Kraken API key (stored in the OS credential store)")
    actions = kraken.add_subparsers(dest="action", required=True)
    connect_ = actions.add_parser("connect", help="check a key's permissions and store it if accepted")
    connect_.add_argument("--mode", choices=[m.value for m in KeyMode], default=KeyMode.LIVE.value,
                          help="what the key is for: shadow (read-only) or live (also create and cancel orders)")  # fmt: skip
    connect_.add_argument("--stdin", action="store_true", help="read the key then the secret from standard input")
    connect_.add_argument("--author", required=True, help="who connects the key (logged)")
    status = actions.add_parser("status", help="what is connected (never the secret) and the live readiness")
    status.add_argument("--check", action="store_true", help="re-check connectivity and permissions now")
    status.add_argument("--author", default=None, help="who runs the check (needed with --check)")
    status.add_argument("--json", action="store_true")
    gone = actions.add_parser("disconnect", help="remove the stored key")
    gone.add_argument("--author", required=True, help="who disconnects (logged)")
    for parser in (connect_, status, gone):
        parser.add_argument("--base-url", default=None, help="Kraken's base URL (default from conf/kraken; the emulator's URL in tests)")
    kraken.set_defaults(handler=cmd_kraken)


def endpoint_of(settings: KrakenSettings) -> KrakenEndpoint:
    """Return the endpoint the settings name."""
    return KrakenEndpoint(settings.base_url, settings.timeout_ms, settings.rate_limit)


def _read_key(from_stdin: bool) -> tuple[str, str]:
    if from_stdin:
        lines = sys.stdin.read().splitlines()
        return (lines[0] if lines else ""), (lines[1] if len(lines) > 1 else "")
    return getpass.getpass("Kraken API key: "), getpass.getpass("Kraken API secret: ")


def _author(args: argparse.Namespace) -> str | None:
    if args.action == "status" and not args.check:
        return None
    if args.author is None:
        raise OnboardingError("'--author' is required with --check (the check is logged; no default)")
    return checked_text("author", args.author, AUTHOR_MAX_CHARS, OnboardingError)


def cmd_kraken(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Connect, show or disconnect the Kraken key of this home."""
    author = _author(args)
    settings = load_settings(base_url=args.base_url)
    credentials = read_credentials(*_read_key(args.stdin)) if args.action == "connect" else None
    clock = WallClock()
    keychain = Keychain()
    with LiveGate(default_db_path()) as gate:
        if credentials is not None:
            result = connect(credentials, endpoint_of(settings), KeyMode(args.mode), author, keychain, gate, clock)  # type: ignore[arg-type]
            out.write("\n".join(describe(result.report)) + "\n")
            if not result.stored:
                out.write("nothing was stored\n")
                return 1
            out.write(f"stored in the OS credential store ({type(keychain.backend).__name__}); key fingerprint {result.key_fingerprint}\n")
            return 0
        if args.action == "disconnect":
            removed = disconnect(author, keychain, gate, clock)  # type: ignore[arg-type]
            out.write("disconnected: the key was removed from the OS credential store\n" if removed else "no key was connected\n")
            return 0
        if author is not None:
            result = recheck(endpoint_of(settings), author, keychain, gate, clock)
            out.write("\n".join(describe(result.report)) + "\n")
        snapshot = connection_status(keychain, gate, settings.min_shadow_ms)
        if args.json:
            out.write(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
        else:
            out.write(_describe(snapshot))
        return 0


def _describe(snapshot: dict) -> str:
    if "key_fingerprint" not in snapshot:
        lines = ["no Kraken key is connected"]
    else:
        state = "connected" if snapshot["connected"] else "onboarded, but the key is missing from the OS credential store"
        lines = [f"Kraken key {snapshot['key_fingerprint']}: {state}", f"  mode         {snapshot['mode']}",
                 f"  permissions  {', '.join(snapshot['permissions'])}", f"  onboarded by {display_text(snapshot['onboarded_by'])}"]  # fmt: skip
    live = snapshot["live"]
    lines.append(f"  live trading {'ready' if live['ready'] else 'not ready: missing ' + ', '.join(live['missing'])}")
    return "\n".join(lines) + "\n"
