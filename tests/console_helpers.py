"""A small but real ACTS home for the console tests: one SMALL backtest run and one promoted model.

Built once per test session (about 30 s) and copied into each test's own home, so tests may write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stubs import LENIENT_PROMOTION, small_spec

from backend.config.compose import compose_spec
from backend.runs.backtest import run_backtest
from backend.clock import WallClock
from backend.engine.pipeline import compile_pipeline
from backend.home import Home
from backend.runs.candidate import train_candidate
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry
from backend.audit.decisions import write_decisions
from backend.control.store import ControlStore
from backend.runtime.paper import PaperRuntime, load_recorded

RUN_ID = "20250110T000000_000000"
PARTIAL_EVENTS = 2400
_BUILT: dict[Path, Path] = {}


class _Clock:
    def now_ms(self) -> int:
        return 1_736_467_200_000

    def monotonic(self) -> float:
        return WallClock().monotonic()


def _quiet(_message: str) -> None:
    return None


def demo_home(root: Path) -> Path:
    """Build (once per ``root``) a home with a finished SMALL backtest and a promoted model; return it."""
    if root in _BUILT:
        return _BUILT[root]
    home = root / "demo_home"
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    run_backtest(pipeline, Home(home), home / "runs" / RUN_ID, WallClock(), _quiet)
    record = train_candidate(pipeline, Home(home), _Clock(), _quiet)
    bounds = compose_spec(list(LENIENT_PROMOTION)).training.promotion
    promote(ModelRegistry.of_home(Home(home)), record["version"], bounds, _Clock().now_ms(), "console test fixture", author="test")
    # Paper sessions on the recorded run: opened but not started, stopped holding DOGE alone (SMALL's planted
    # signal: BTC and ETH enter at event 2160, DOGE at 2311, BTC and ETH are out by 2325, SOL enters at 2502),
    # and run to the end (written last, so the newest).
    feed = load_recorded(home / "runs" / RUN_ID, ModelRegistry.of_home(Home(home)), allow_run_bundle=True)
    with ControlStore(home / "acts.db") as control:
        for name, events in (("fresh", 0), ("holding", PARTIAL_EVENTS), ("default", None)):
            runtime = PaperRuntime(feed, home / "paper" / name, control)
            if events != 0:
                runtime.run(0.0, events)
                write_decisions(runtime.decisions(), home / "paper" / name / "decisions.parquet")
            runtime.close()
    _BUILT[root] = home
    return home


def copy_home(source: Path, target: Path) -> Path:
    """Copy a built home to ``target`` (a test's own ACTS_HOME)."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
