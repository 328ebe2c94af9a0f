"""`acts train`: train a candidate model (walk-forward, serial or Ray) and register it; `--schedule` retrains continuously."""

from __future__ import annotations

import argparse
import time
from typing import TextIO

from backend.clock import WallClock
from backend.config.compose import compose_with_hydra, validate_raw
from backend.engine.pipeline import compile_pipeline
from backend.home import Home, acts_home
from backend.runs.candidate import train_candidate
from backend.runs.schedule import run_schedule
from scripts.cli import progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a candidate model and record it in the registry")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. training.ray.enabled=true")
    train.add_argument("--schedule", action="store_true", help="retrain on the configured cadence and on drift")
    train.add_argument("--max-iterations", type=int, default=None, help="with --schedule: stop after N iterations")
    train.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace, out: TextIO, err: TextIO, sleep=time.sleep, clock=None) -> int:
    """Train once (or run the schedule) and print what was recorded."""
    raw, _ = compose_with_hydra(args.overrides)
    pipeline = compile_pipeline(validate_raw(raw))
    home = Home(acts_home())
    clock = clock or WallClock()
    progress = progress_printer(err)
    if args.schedule:
        for tick in run_schedule(pipeline, home, clock, sleep, progress, args.max_iterations):
            trigger = tick.trigger.value if tick.trigger else "none"
            out.write(f"iteration {tick.iteration} at {tick.now_ms}: trigger {trigger}: {tick.outcome}\n")
        return 0
    record = train_candidate(pipeline, home, clock, progress)
    out.write(f"candidate {record['version']} ({record['status']})\n")
    for fold in record["fold_metrics"]:
        out.write(
            f"  fold {fold['fold']}: auc {fold['auc']} ic {fold['ic']} log_loss {fold['log_loss']} "
            f"calibration_error {fold['calibration_error']} rows {fold['n']}\n"
        )
    out.write(f"  strategy return after fees on the out-of-sample span: {record['strategy']['return_pct']} %\n")
    out.write(f"promote with: acts models promote {record['version']}\n")
    return 0
