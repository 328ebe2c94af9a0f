"""`acts drill`: the reliability drills (`make drill`), written to a Markdown page.

    acts drill [--trials 100] [--fuzz-examples 500] [--seed 16] [--run-dir RUN] [--work DIR] [--out docs/reliability.md]

SIGKILL drills (backfill, incremental ingest, paper runtime, profile commit, kill-switch engage, bundle install), the
kill-switch drill, Hypothesis fuzzing and emulator faults; see ``scripts.drills``. Without ``--run-dir``
a small backtest is recorded first (the paper drills play it). The drills import Hypothesis (a test
dependency), so they are imported only when this command runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TextIO

from scripts.argtypes import bounded_int

# Four symbols over ten days of 5-minute bars, two folds, small boosters: a backtest in seconds.
# The drills need orders in flight, so the simulator plants a learnable edge (ADR-030): without one the
# cost-aware strategy rightly abstains and there would be nothing to kill mid-order.
DRILL_RUN = (
    "name=drill", "data.days=10", "data.signal_bps=8", "data.symbols=[BTC,ETH,SOL,DOGE]", "training.walk_forward.n_folds=2",
    "training.walk_forward.min_train_bars=1440", "training.walk_forward.purge_bars=48",
    "training.walk_forward.embargo_bars=6", "training.label.horizon_bars=48", "training.max_train_rows=20000",
    "training.num_threads=1", "model.specialist.n_estimators=15", "model.specialist.min_data_in_leaf=20",
    "model.global_model.n_estimators=20", "model.global_model.min_data_in_leaf=20", "risk=aggressive",
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    drill = sub.add_parser("drill", help="reliability drills: SIGKILL, kill switch, fuzzing, emulator faults")
    drill.add_argument("--trials", type=bounded_int(1, 10_000), default=100, help="SIGKILL trials per drill")
    drill.add_argument("--fuzz-examples", type=bounded_int(1, 1_000_000), default=500, help="Hypothesis cases per target")
    drill.add_argument("--seed", type=bounded_int(0, 2**31 - 1), default=16, help="seed of the kill points")
    drill.add_argument("--run-dir", type=Path, help="a recorded run for the paper drills (default: record a small one)")
    drill.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    drill.add_argument("--out", type=Path, default=Path("docs/reliability.md"), help="the page to write")
    drill.set_defaults(handler=cmd_drill)


def record(work: Path, say) -> Path:
    """Record the small drill backtest in ``work/run``; return the run folder."""
    from backend.config.compose import compose_spec
    from backend.runs.backtest import run_backtest
    from backend.clock import WallClock
    from backend.engine.pipeline import compile_pipeline
    from backend.home import Home

    run_backtest(compile_pipeline(compose_spec(list(DRILL_RUN))), Home(work / "home"), work / "run", WallClock(), say)
    return work / "run"


def cmd_drill(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run every drill and write the page."""
    from backend.errors import ConfigError
    from scripts.drills import report

    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
    work = args.work or Path(tempfile.mkdtemp(prefix="acts-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    started, clock = report.now(), time.monotonic()
    run_dir = args.run_dir or record(work, report.progress)
    results = report.run_drills(run_dir, work, args.trials, args.fuzz_examples, args.seed, report.progress)
    page = report.render(results, args.trials, args.fuzz_examples, args.seed, started, time.monotonic() - clock, report.machine())
    report.write_page(args.out, page)
    out.write(f"drill figures written to {args.out}\n")
    return 0
