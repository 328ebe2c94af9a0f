"""`acts bundle list | verify PATH | install PATH|VERSION | rollback | update | build`: shipped model bundles.

Installed bundles live in ``$ACTS_HOME/bundles`` (backend/bundles/store.py); the shipped ones in
the repository's ``bundles/``; the update channel is set in ``conf/bundles/channel.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from backend.runs.bundle_build import build_bundle, export_bundle, load_build_spec
from backend.bundles.channel import apply_update, fetch, load_channel, plan_update
from backend.bundles.compat import LINEAGE_DIR, SHIPPED_DIR, running
from backend.bundles.store import BundleStore
from backend.bundles.use import scan
from backend.bundles.verify import verify_bundle
from backend.clock import WallClock
from backend.errors import BundleError
from backend.home import Home, acts_home
from scripts.cli import progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    bundle = sub.add_parser("bundle", help="shipped model bundles: list, verify, install, rollback, update, build")
    action = bundle.add_subparsers(dest="action", required=True)
    listing = action.add_parser("list", help="the active bundle, the installed and shipped ones, the install log")
    listing.add_argument("--json", action="store_true")
    verify = action.add_parser("verify", help="check every file hash and the compatibility with this code")
    verify.add_argument("path", type=Path)
    install = action.add_parser("install", help="verify, install atomically and smoke-check a bundle folder or shipped version")
    install.add_argument("target", help="a bundle folder, or a shipped <name>/<version> (or <version> of the channel's line)")
    rollback = action.add_parser("rollback", help="make the previously active bundle active again")
    update = action.add_parser("update", help="fetch the channel's bundles, verify them, install a newer one if confirmed")
    update.add_argument("--bundle", default=None, help="bundle line to follow instead of the configured one")
    update.add_argument("--remote", default=None, help="git remote (URL or path) instead of the configured one")
    update.add_argument("--ref", default=None, help="branch or tag instead of the configured one")
    update.add_argument("--path", default=None, help="folder of the bundles in the ref instead of the configured one")
    update.add_argument("--policy", choices=("confirm", "auto"), default=None)
    update.add_argument("--yes", action="store_true", help="confirm the install (policy confirm)")
    for p in (install, rollback, update):
        p.add_argument("--author", required=True, help="who (logged with the action; required, no default)")
    install.add_argument("--reason", default="operator install", help="why (logged)")
    rollback.add_argument("--reason", required=True, help="why (logged)")
    build = action.add_parser("build", help="train, gate and export a bundle from a committed build config, or --from a promoted model")
    build.add_argument("config", nargs="?", default="sim_v1", help="conf/bundles/<config>.yaml or a path (default sim_v1)")
    build.add_argument("overrides", nargs="*", help="extra Hydra overrides (the bundle then differs from the committed one)")
    build.add_argument("--from", dest="model", default=None, help="export this promoted model of the home registry instead of training")
    build.add_argument("--version", default=None, help="bundle version instead of the config's")
    build.add_argument("--out", type=Path, default=SHIPPED_DIR, help="where bundle folders go (default: the repository's bundles/)")
    build.add_argument("--lineage", type=Path, default=None, help="where lineage records go (default registry/bundles or OUT/lineage)")
    build.add_argument("--work-home", type=Path, default=None, help="home to train in (default: a fresh temporary one)")
    bundle.set_defaults(handler=cmd_bundle)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _resolve_target(target: str, line: str) -> Path:
    path = Path(target)
    if path.is_dir():
        return path
    key = target if "/" in target else f"{line}/{target}"
    shipped = SHIPPED_DIR / key
    if not shipped.is_dir():
        raise BundleError(f"'target' must be a bundle folder or a shipped <name>/<version>, was {target!r} (no {shipped})")
    return shipped


def _list(store: BundleStore, out: TextIO, as_json: bool) -> int:
    state = store.state()
    shipped = scan(SHIPPED_DIR, running())
    if as_json:
        payload = {
            **state.as_dict(),
            "installed": store.installed(),
            "shipped": [{"path": str(c.path), "verified": c.verified is not None, "refusal": c.refusal} for c in shipped],
        }
        out.write(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        return 0
    out.write(f"active: {state.active or 'none'}\n")
    for key in store.installed():
        out.write(f"  installed {key}{'  (active)' if key == state.active else ''}\n")
    for candidate in shipped:
        status = f"ok {candidate.verified.manifest.model_version}" if candidate.verified else candidate.refusal
        out.write(f"  shipped   {candidate.path.relative_to(SHIPPED_DIR)}  {status}\n")
    for entry in state.log:
        out.write(f"  log {entry.at_ms} {entry.action} {entry.bundle} (was {entry.previous}) by {entry.author}: {entry.reason}\n")
    return 0


def cmd_bundle(args: argparse.Namespace, out: TextIO, err: TextIO, clock=None, ask: Callable[[str], bool] = _ask) -> int:
    """List, verify, install, roll back, update or build bundles."""
    clock = clock or WallClock()
    home = Home(acts_home())
    store = BundleStore.of_home(home)
    progress = progress_printer(err)
    if args.action == "list":
        return _list(store, out, args.json)
    if args.action == "verify":
        verified = verify_bundle(args.path, running())
        out.write(f"verified {verified.manifest.key}: id {verified.bundle_id}, model {verified.manifest.model_version}, "
                  f"{len(verified.manifest.files)} files\n")  # fmt: skip
        return 0
    if args.action == "install":
        source = _resolve_target(args.target, load_channel().bundle)
        result = store.install(source, args.author, args.reason, clock.now_ms(), running())
        verb = "installed" if result.changed else "already active:"
        out.write(f"{verb} {result.bundle} (id {result.bundle_id[:12]}), previous {result.previous or 'none'}, "
                  f"smoke check passed on {result.smoke.rows} rows\n")  # fmt: skip
        return 0
    if args.action == "rollback":
        entry = store.rollback(args.author, args.reason, clock.now_ms(), running())
        out.write(f"rolled back to {entry.bundle} (was {entry.previous})\n")
        return 0
    if args.action == "update":
        channel = load_channel(bundle=args.bundle, remote=args.remote, ref=args.ref, path=args.path, policy=args.policy)
        runtime = running()
        plan = plan_update(channel, fetch(channel, home), store, runtime)
        out.write(f"channel {plan.source}: {plan.note}\n")
        for candidate in plan.candidates:
            if candidate.refusal:
                out.write(f"  refused {candidate.refusal}\n")
        result = apply_update(plan, channel, store, (lambda _q: True) if args.yes else ask, args.author, clock.now_ms(), runtime)
        if result is not None:
            out.write(f"installed {result.bundle} (previous {result.previous or 'none'})\n")
        elif plan.chosen is not None:
            out.write("not installed: confirm with --yes (or set policy: auto)\n")
        return 0
    return _build(args, out, clock, progress)


def _build(args: argparse.Namespace, out: TextIO, clock, progress) -> int:
    build = load_build_spec(args.config, version=args.version)
    lineage = args.lineage or (LINEAGE_DIR if args.out == SHIPPED_DIR else args.out / "lineage")
    if args.model is not None:
        result = export_bundle(Home(acts_home()), args.model, build, args.out, lineage, running(), clock, progress)
    elif args.work_home is not None:
        result = build_bundle(build, args.overrides, Home(args.work_home), args.out, lineage, running(), clock, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="acts-bundle-build-") as work:
            result = build_bundle(build, args.overrides, Home(Path(work)), args.out, lineage, running(), clock, progress)
    out.write(f"bundle {result.path} ({'unchanged' if result.unchanged else 'written'}): id {result.bundle_id}\n")
    out.write(f"  model {result.model_version}, {result.files} files, {result.bytes} bytes\n")
    for gate in result.gates:
        out.write(f"  gate {'passed' if gate.passed else 'FAILED'} {gate.describe()}\n")
    return 0
