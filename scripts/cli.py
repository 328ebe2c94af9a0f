"""The ``acts`` command: parse arguments, compose config, call the core. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import yaml

from backend.bundles.store import BundleStore
from backend.clock import WallClock
from backend.config.canonical import canonical_json
from backend.config.compose import compose_with_hydra, load_spec_file, validate_raw
from backend.config.diff import diff_configs, format_changes
from backend.engine.pipeline import compile_pipeline
from backend.errors import ActsError
from backend.secrets.redact import install_log_redaction, redact, redacting_excepthook
from backend.home import Home, acts_home
from backend.runs.backtest import run_backtest
from backend.runs.replay import replay
from scripts.commands import command_modules

SUMMARY_KEYS = (
    "run",
    "spec_hash",
    "profile_version",
    "model_version",
    "events",
    "decisions",
    "orders",
    "fills",
    "final_equity",
    "return_pct",
    "max_drawdown_pct",
    "fees_paid",
    "ledger_reconciles",
    "decision_log_sha256",
    "train_seconds",
    "wall_seconds",
    "events_per_second",
)


def progress_printer(err: TextIO):
    def say(message: str) -> None:
        print(f"[acts] {message}", file=err, flush=True)

    return say


def _spec_tree(reference: str) -> dict:
    """A spec reference is a file path, or comma-separated Hydra overrides ('' or 'default': none)."""
    path = Path(reference)
    if reference not in ("", "default") and path.suffix in (".json", ".yaml", ".yml") and path.exists():
        return load_spec_file(path).model_dump(mode="json")
    overrides = [] if reference in ("", "default") else [o for o in reference.split(",") if o]
    raw, _ = compose_with_hydra(overrides)
    return validate_raw(raw).model_dump(mode="json")


def cmd_config(args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "diff":
        changes = diff_configs(_spec_tree(args.a), _spec_tree(args.b))
        if args.json:
            out.write(json.dumps([{"key": c.key, "old": c.old, "new": c.new} for c in changes], indent=1) + "\n")
        else:
            out.write(format_changes(changes) + "\n")
        return 0
    spec = load_spec_file(Path(args.file)) if args.file else validate_raw(compose_with_hydra(args.overrides)[0])
    pipeline = compile_pipeline(spec)
    if args.action == "show":
        out.write(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=True))
    out.write(f"valid: spec_hash={pipeline.spec_hash} profile_version={pipeline.profile_version}\n")
    return 0


def print_summary(summary: dict, out: TextIO) -> None:
    width = max(len(k) for k in SUMMARY_KEYS)
    for key in SUMMARY_KEYS:
        out.write(f"  {key:<{width}}  {summary.get(key)}\n")


def print_bundle(pipeline, home: Home, out: TextIO) -> None:
    """With ``model.source=bundle``, say which installed bundle the run used."""
    if pipeline.spec.model.source == "bundle":
        store = BundleStore.of_home(home)
        active = store.state().active
        out.write(f"  bundle  {active} (installed in {store.folder(active)})\n")


def cmd_backtest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    raw, run_dir = compose_with_hydra(args.overrides)
    pipeline = compile_pipeline(validate_raw(raw))
    home, wall = Home(acts_home()), WallClock()
    summary = run_backtest(pipeline, home, run_dir, wall, progress_printer(err))
    out.write(f"backtest {pipeline.spec.name} finished\n")
    print_summary(summary, out)
    print_bundle(pipeline, home, out)
    out.write(f"run folder: {summary['run_dir']}\nreport: {summary['report']}\n")
    return 0


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    report = replay(Path(args.run_dir), args.overrides)
    if args.json:
        out.write(json.dumps(report.as_dict(), indent=1, sort_keys=True) + "\n")
    else:
        out.write(f"replay of {report.run_dir}\n")
        out.write(f"  original decision_log_sha256  {report.original_sha256}\n")
        out.write(f"  replayed decision_log_sha256  {report.replay_sha256}\n")
        out.write(f"  decisions: {report.original_decisions} original, {report.replay_decisions} replayed\n")
        if report.changes:
            out.write("  config changes:\n" + "".join(f"    {line}\n" for line in format_changes(list(report.changes)).splitlines()))
        if report.identical:
            out.write("  identical: the replay reproduces every decision\n")
        elif report.first_divergence is None:
            out.write("  same decisions: only the stamps (spec hash, profile version, order ids) differ\n")
        else:
            div = report.first_divergence
            out.write(f"  first divergence at decision seq {div['seq']}:\n")
            out.write(f"    original: {canonical_json(div['original'])}\n    replay:   {canonical_json(div['replay'])}\n")
    # Without overrides a replay must reproduce the run; a difference is a failure.
    return 0 if report.identical or args.overrides else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acts", description="ACTS: AI crypto trading system")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="show, validate or diff composed configs")
    config_sub = config.add_subparsers(dest="action", required=True)
    for action in ("show", "validate"):
        p = config_sub.add_parser(action)
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. risk=aggressive seed=3")
        p.add_argument("--file", help="validate a spec file (spec.json of a run, or YAML) instead")
    diff = config_sub.add_parser("diff", help="changed keys between two configs")
    diff.add_argument("a", help="a spec file, or comma-separated overrides ('default' for none)")
    diff.add_argument("b", help="a spec file, or comma-separated overrides ('default' for none)")
    diff.add_argument("--json", action="store_true")
    backtest = sub.add_parser("backtest", help="train walk-forward and backtest; writes a run folder")
    backtest.add_argument("overrides", nargs="*")
    rep = sub.add_parser("replay", help="replay a run from its recorded inputs")
    rep.add_argument("run_dir")
    rep.add_argument("overrides", nargs="*", help="risk/strategy/execution overrides: report where decisions diverge")
    rep.add_argument("--json", action="store_true")
    for module in command_modules():
        module.register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` like ``parser.parse_args``, also taking overrides that follow an option.

    argparse gives a command's ``overrides`` (``nargs="*"`` after a required positional, as in ``acts replay RUN``
    or ``acts models promote MODEL``) their empty list as soon as the positional before them is read, so
    ``acts models promote MODEL --author dana training.promotion.min_auc=0.55`` used to fail with "unrecognized
    arguments". Left-over words go to ``overrides`` when the command has them and none looks like an option
    (anything after ``--`` is a word); otherwise the refusal is argparse's own (exit 2, naming them).
    """
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    words = extra[extra.index("--") + 1 :] if "--" in extra else []
    before = extra[: extra.index("--")] if "--" in extra else extra
    if not isinstance(getattr(args, "overrides", None), list) or any(w.startswith("-") for w in before):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*args.overrides, *before, *words]
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the ``acts`` command; return its exit code (2 for a refused input).

    ``out`` and ``err`` default to the streams current at the call (not at import), so redirection works.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse(build_parser(), argv)
    try:
        if args.command == "config":
            return cmd_config(args, out)
        if args.command == "backtest":
            return cmd_backtest(args, out, err)
        if args.command == "replay":
            return cmd_replay(args, out)
        return args.handler(args, out, err)
    except ActsError as error:
        err.write(f"acts: error: {redact(str(error))}\n")
        return 2


def run() -> None:
    """Console entry point: secrets are redacted from logs and from any crash traceback."""
    install_log_redaction()
    sys.excepthook = redacting_excepthook()
    sys.exit(main())
