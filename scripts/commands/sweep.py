"""`acts sweep OVERRIDES...`: backtest every variant of Hydra sweep overrides; print and write the comparison.

    acts sweep risk=aggressive,balanced,conservative risk.entry_min_p_up=choice(0.55,0.6)
    acts sweep risk=aggressive,balanced sweep.ray.address=10.0.0.5:6379 sweep.out=/data/sweeps/s1

Variants sharing bars and model share one training and one market matrix in Ray's object store;
each variant's engine loop is a Ray task (``sweep.ray.enabled=false``: in this process). Writes a run
folder per variant and ``comparison.csv`` / ``comparison.parquet`` under ``sweep.out``.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from backend.clock import WallClock
from backend.home import Home, acts_home
from backend.runs.sweep import run_sweep
from backend.runs.variants import format_table
from scripts.cli import progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="backtest many variants (Hydra sweep syntax) as Ray tasks; writes a comparison table")
    sweep.add_argument("overrides", nargs="*", help="run overrides, swept with commas or choice()/range(); sweep.<key>=... for the sweep itself")
    sweep.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the sweep, print the comparison table and where it was written."""
    result = run_sweep(args.overrides, Home(acts_home()), WallClock(), progress_printer(err))
    out.write(f"sweep of {len(result.variants)} variant(s) finished\n{format_table(result.table)}\n")
    out.write(f"comparison: {result.settings.out}/comparison.csv (and .parquet); run folders: {result.settings.out}/<variant>\n")
    return 0
