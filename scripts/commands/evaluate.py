"""`acts evaluate`: a run judged out of sample only, against baselines on the same rows (ADR-029).

`acts evaluate --run-dir RUN` evaluates a finished run folder from its recorded inputs and bundle (no retraining);
`acts evaluate [overrides]` first runs the backtest the overrides compose (e.g. `run=real`), then evaluates it.
`--profiles` judges shipped risk presets (conf/risk) on the same rows; `--holdout` sets the final share of the
history's timestamps kept apart from any tuning decision and reported separately.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from backend.config.compose import compose_spec, compose_with_hydra, validate_raw
from backend.runs.backtest import run_backtest
from backend.clock import WallClock
from backend.runs.evaluation import evaluate, load_run, markdown, write_evaluation
from backend.engine.pipeline import compile_pipeline
from backend.home import Home, acts_home
from scripts.cli import progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="out-of-sample return, Sharpe, drawdown, turnover and fees against baselines")
    ev.add_argument("overrides", nargs="*", help="Hydra overrides of the backtest to run first (without --run-dir)")
    ev.add_argument("--run-dir", type=Path, default=None, help="evaluate this finished run folder instead of running one")
    ev.add_argument("--holdout", type=float, default=0.2, help="final share of timestamps kept untouched (default 0.2)")
    ev.add_argument("--profiles", nargs="+", default=(), help="risk presets to judge on the same rows (default: the run's own)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    ev.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Evaluate a run folder (running the backtest first when none is given); write and print the report."""
    profiles = [compose_spec([f"risk={name}"]).risk for name in args.profiles]
    run_dir = args.run_dir
    if run_dir is None:
        raw, run_dir = compose_with_hydra(args.overrides)
        run_backtest(compile_pipeline(validate_raw(raw)), Home(acts_home()), run_dir, WallClock(), progress_printer(err))
    progress_printer(err)(f"evaluating {run_dir} out of sample")
    report = evaluate(load_run(run_dir), profiles, args.holdout)
    write_evaluation(run_dir, report)
    out.write(json.dumps(report, indent=1, sort_keys=True) + "\n" if args.json else markdown(report))
    return 0
