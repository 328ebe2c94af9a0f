"""`acts train`: train a candidate model (walk-forward, serial or Ray) and register it; `--schedule` retrains continuously."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

from backend.runs.bundle_build import bundle_version_at, export_bundle, load_build_spec
from backend.bundles.compat import running
from backend.clock import WallClock
from backend.config.compose import compose_with_hydra, validate_raw
from backend.engine.pipeline import compile_pipeline
from backend.home import Home, acts_home
from backend.runs.candidate import train_candidate
from backend.runs.schedule import ScheduleTick, run_schedule
from scripts.cli import progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a candidate model and record it in the registry")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. training.ray.enabled=true")
    train.add_argument("--schedule", action="store_true", help="retrain on the configured cadence and on drift")
    train.add_argument("--max-iterations", type=int, default=None, help="with --schedule: stop after N iterations")
    train.add_argument(
        "--bundle-out", type=Path, default=None, help="with --schedule: export each promoted model as a candidate bundle here"
    )
    train.add_argument("--bundle-config", default="sim_v1", help="build config naming the candidate bundles (default sim_v1)")
    train.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace, out: TextIO, err: TextIO, sleep=time.sleep, clock=None) -> int:
    """Train once (or run the schedule) and print what was recorded."""
    raw, _ = compose_with_hydra(args.overrides)
    pipeline = compile_pipeline(validate_raw(raw))
    home = Home(acts_home())
    clock = clock or WallClock()
    progress = progress_printer(err)
    if args.schedule:
        on_promoted = None
        if args.bundle_out is not None:
            load_build_spec(args.bundle_config)  # a bad build config is refused before any training

            def on_promoted(tick: ScheduleTick) -> None:
                spec = load_build_spec(args.bundle_config, version=bundle_version_at(tick.now_ms))
                result = export_bundle(home, tick.version, spec, args.bundle_out, args.bundle_out / "lineage", running(), clock, progress)
                out.write(f"candidate bundle {result.path}: model {result.model_version}, {result.bytes} bytes\n")
        for tick in run_schedule(pipeline, home, clock, sleep, progress, args.max_iterations, on_promoted):
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
    out.write(f"promote with: acts models promote {record['version']} --author WHO\n")
    return 0
