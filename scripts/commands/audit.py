"""`acts audit diff`: replay a run under another profile or config (or compare two runs) and report the effect.

    acts audit diff RUN_DIR --set risk.entry_min_p_up=0.6 [--set ...]
    acts audit diff RUN_DIR --profile-file my_profile.yaml [--set ...]
    acts audit diff RUN_DIR --profile balanced@v3        (a version from the profile store)
    acts audit diff RUN_A RUN_B                          (two runs over the same recorded inputs)

Text by default, ``--json`` for JSON on stdout, ``--html PATH`` also writes a self-contained page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from backend.audit.report import write_report
from backend.clock import WallClock
from backend.control.store import default_db_path
from backend.errors import AuditError
from backend.runs.audit_diff import (
    audit_replay,
    audit_runs,
    profile_file_override,
    render_html,
    render_text,
    store_profile_override,
)


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="audits of recorded runs")
    actions = audit.add_subparsers(dest="action", required=True)
    diff = actions.add_parser("diff", help="replay a run under another profile or config, or compare two runs")
    diff.add_argument("run_dir", help="a finished run folder")
    diff.add_argument("run_b", nargs="?", help="a second run over the same inputs (instead of a replay)")
    diff.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="a risk/strategy/execution override for the replay (repeatable)")
    diff.add_argument("--profile-file", help="replay under the risk profile in this YAML file")
    diff.add_argument("--profile", help="replay under a profile version from the store: NAME@vN, vN, or NAME (latest)")
    diff.add_argument("--json", action="store_true", help="print JSON instead of text")
    diff.add_argument("--html", help="also write the report as a self-contained HTML page here")
    audit.set_defaults(handler=cmd_audit)


def _overrides(args: argparse.Namespace, wall: WallClock) -> list[str]:
    if args.profile_file and args.profile:
        raise AuditError("give --profile-file or --profile, not both (each replaces the whole risk profile)")
    overrides = []
    if args.profile_file:
        overrides.append(profile_file_override(Path(args.profile_file)))
    if args.profile:
        overrides.append(store_profile_override(args.profile, Path(args.run_dir), default_db_path(), wall))
    # --set comes last, so it can adjust the profile it follows.
    return overrides + list(args.sets)


def cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Audit the effect of a profile or config change on a recorded run."""
    html_path = Path(args.html) if args.html else None
    if html_path is not None and not html_path.parent.is_dir():
        raise AuditError(f"--html {html_path}: folder {html_path.parent} does not exist")
    wall = WallClock()
    if args.run_b is not None:
        if args.sets or args.profile_file or args.profile:
            raise AuditError("give a second run or overrides (--set, --profile-file, --profile), not both")
        audit = audit_runs(Path(args.run_dir), Path(args.run_b))
    else:
        audit = audit_replay(Path(args.run_dir), _overrides(args, wall), wall)
    if args.json:
        out.write(json.dumps(audit.as_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n")
    else:
        out.write(render_text(audit))
    if html_path is not None:
        write_report(html_path, render_html(audit))
        err.write(f"[acts] audit page: {html_path}\n")
    return 0
