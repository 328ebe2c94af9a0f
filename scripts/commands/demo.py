"""`acts demo`: the offline quick start (what `make run` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from backend.clock import WallClock
from backend.config.compose import compose_with_hydra, validate_raw
from backend.engine.pipeline import compile_pipeline
from backend.home import Home, acts_home
from backend.runs.backtest import run_backtest
from backend.runs.replay import replay
from scripts.cli import print_summary, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the offline quick start: lake, train, backtest, replay")
    demo.add_argument("overrides", nargs="*")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Build the lake, train, backtest and replay on the embedded defaults, offline."""
    raw, run_dir = compose_with_hydra(args.overrides)
    pipeline = compile_pipeline(validate_raw(raw))
    summary = run_backtest(pipeline, Home(acts_home()), run_dir, WallClock(), progress_printer(err))
    progress_printer(err)("replaying the run from its recorded inputs")
    report = replay(Path(summary["run_dir"]))
    out.write(f"ACTS demo: backtest {pipeline.spec.name} on {summary['symbols']} symbols, offline\n")
    print_summary(summary, out)
    out.write(f"  replay_identical  {report.identical}\n")
    out.write(f"run folder: {summary['run_dir']}\nreport: {summary['report']}\n")
    return 0 if report.identical else 1
