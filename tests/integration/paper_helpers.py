"""Shared helpers for the paper runtime tests: one recorded backtest run per test module."""

from __future__ import annotations

from pathlib import Path

from stubs import small_spec

from backend.clock import WallClock
from backend.engine.pipeline import compile_pipeline
from backend.home import Home
from backend.runs.backtest import run_backtest

REPO = Path(__file__).resolve().parents[2]


def record_run(root: Path) -> tuple[Path, dict[str, object]]:
    """Run the SMALL backtest into ``root/run``; return the folder and its summary."""
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    summary = run_backtest(pipeline, Home(root / "home"), root / "run", WallClock(), lambda _m: None)
    return root / "run", summary
