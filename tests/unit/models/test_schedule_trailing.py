"""A trailing schedule window follows a growing lake; a fixed one stays put; only lake data may trail."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from stubs import LENIENT_PROMOTION, small_spec

from backend.config.schema import RunSpec
from backend.data.lake import write_ohlcv
from backend.data.simulator import simulate_ohlcv
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ConfigError
from backend.home import Home
from backend.models.registry import ModelRegistry
from backend.runs.schedule import RetrainTrigger, ScheduleTick, run_schedule, utc_date, window_pipeline

SOURCE = "schedfeed"
DAY = 86_400_000
BAR = 300_000
LAKE_START = date(2025, 1, 1)
# The first iteration runs at noon on 2025-01-09; a day later the lake holds one more day of bars.
FIRST_NOW = int(datetime(2025, 1, 9, 12, tzinfo=timezone.utc).timestamp() * 1000)
FAST = (
    "data=lake",
    f"data.source={SOURCE}",
    "data.timeframe=5m",
    "data.days=8",
    "data.symbols=[BTC,ETH]",
    "training.num_threads=1",
    "training.schedule.cadence_hours=24",
    "training.schedule.poll_seconds=86400",
    *LENIENT_PROMOTION,
)


class SimClock:
    """A simulated clock whose ``sleep`` moves time and, once, appends the bars that arrived meanwhile."""

    def __init__(self, now_ms: int, home: Home, arriving: pl.DataFrame) -> None:
        self.now = now_ms
        self.home = home
        self.arriving = arriving

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1000)
        write_ohlcv(self.home.lake, self.arriving.filter(pl.col("ts") < self.now), "5m")


def _quiet(_message: str) -> None:
    return None


def _lake_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def _pipeline(window: str, start: str, *extra: str) -> Pipeline:
    return compile_pipeline(small_spec(*FAST, f"data.start={start}", f"training.schedule.window={window}", *extra))


def _run_two_iterations(tmp_path: Path, pipeline: Pipeline) -> tuple[list[ScheduleTick], ModelRegistry]:
    """Seed the lake up to the first iteration, run two iterations a day apart, the lake growing between."""
    home = Home(tmp_path / "home")
    start_ms = _lake_ms(LAKE_START)
    n_bars = (FIRST_NOW + DAY - start_ms) // BAR
    spec = pipeline.spec
    bars = simulate_ohlcv(list(spec.symbols), spec.universe.clusters, "5m", start_ms, n_bars, 7).with_columns(
        pl.lit(SOURCE).alias("source")
    )
    write_ohlcv(home.lake, bars.filter(pl.col("ts") < FIRST_NOW), "5m")
    clock = SimClock(FIRST_NOW, home, bars)
    ticks = run_schedule(pipeline, home, clock, clock.sleep, _quiet, 2)
    return ticks, ModelRegistry.of_home(home)


def _last_test_end(record: dict) -> int:
    return int(record["folds"][-1]["test_end_ms"])


def test_the_utc_date_of_a_timestamp_is_its_calendar_day() -> None:
    assert utc_date(FIRST_NOW) == date(2025, 1, 9)
    assert utc_date(_lake_ms(date(2025, 1, 10)) - 1) == date(2025, 1, 9)
    assert utc_date(_lake_ms(date(2025, 1, 10))) == date(2025, 1, 10)


def test_a_trailing_window_ends_today_and_a_fixed_one_is_the_spec_itself() -> None:
    trailing = _pipeline("trailing", "2024-06-01")
    fixed = _pipeline("fixed", "2024-06-01")

    moved, window = window_pipeline(trailing, FIRST_NOW)
    same, nothing = window_pipeline(fixed, FIRST_NOW)

    assert window == {"window_start": "2025-01-02", "window_days": 8}
    assert moved.spec.data.start == date(2025, 1, 2) and moved.spec.data.days == 8
    assert moved.spec.data.start_ms <= FIRST_NOW < moved.spec.data.end_ms
    assert moved.spec_hash != trailing.spec_hash and moved.spec.training == trailing.spec.training
    assert trailing.spec.data.start == date(2024, 6, 1)
    assert same is fixed and nothing == {}


def test_a_trailing_schedule_retrains_on_the_bars_the_lake_gained_since_the_last_retrain(tmp_path: Path) -> None:
    ticks, registry = _run_two_iterations(tmp_path, _pipeline("trailing", "2024-06-01"))

    first, second = (registry.load(t.version) for t in ticks)  # type: ignore[arg-type]
    assert [t.trigger for t in ticks] == [RetrainTrigger.INITIAL, RetrainTrigger.CADENCE]
    assert ticks[0].evidence == {"window_start": "2025-01-02", "window_days": 8}
    assert ticks[1].evidence == {
        "last_retrain_ms": FIRST_NOW, "cadence_hours": 24.0, "window_start": "2025-01-03", "window_days": 8
    }
    assert first["evidence"] == ticks[0].evidence and second["evidence"] == ticks[1].evidence
    assert (first["spec"]["data"]["start"], second["spec"]["data"]["start"]) == ("2025-01-02", "2025-01-03")
    assert first["spec_hash"] != second["spec_hash"] and first["version"] != second["version"]
    # The first retrain saw the lake up to its noon; the second tests on bars appended after it.
    assert _last_test_end(first) <= FIRST_NOW < _last_test_end(second)
    assert int(second["folds"][0]["train_start_ms"]) == _lake_ms(date(2025, 1, 3))
    assert first["lake_snapshot"] != second["lake_snapshot"]


def test_a_trailing_drift_check_reads_the_moved_window_and_records_it(tmp_path: Path) -> None:
    quiet = _pipeline(
        "trailing", "2024-06-01", "training.schedule.cadence_hours=48", "training.schedule.drift.max_psi=100",
        "training.schedule.drift.max_log_loss_increase=100", "training.schedule.drift.max_calibration_error=1.0",
    )

    ticks, registry = _run_two_iterations(tmp_path, quiet)

    assert [t.trigger for t in ticks] == [RetrainTrigger.INITIAL, None]
    assert ticks[1].outcome == "no retrain" and ticks[1].evidence["breaches"] == []
    assert ticks[1].evidence["promoted"] == ticks[0].version
    assert (ticks[1].evidence["window_start"], ticks[1].evidence["window_days"]) == ("2025-01-03", 8)
    assert [r["version"] for r in registry.records()] == [ticks[0].version]


def test_a_fixed_schedule_keeps_reading_the_spec_window(tmp_path: Path) -> None:
    ticks, registry = _run_two_iterations(tmp_path, _pipeline("fixed", "2025-01-02"))

    first, second = (registry.load(t.version) for t in ticks)  # type: ignore[arg-type]
    assert [t.trigger for t in ticks] == [RetrainTrigger.INITIAL, RetrainTrigger.CADENCE]
    assert ticks[0].evidence == {} and ticks[1].evidence == {"last_retrain_ms": FIRST_NOW, "cadence_hours": 24.0}
    assert first["spec"]["data"] == second["spec"]["data"] and first["spec_hash"] == second["spec_hash"]
    assert int(second["folds"][0]["train_start_ms"]) == _lake_ms(date(2025, 1, 2))
    assert _last_test_end(second) <= _lake_ms(date(2025, 1, 10))


@pytest.mark.parametrize(("group", "data"), [("simulated", "simulated"), ("shared_binance_1h", "shared")])
def test_a_trailing_window_is_refused_unless_the_data_is_a_lake(group: str, data: str) -> None:
    with pytest.raises(ConfigError) as refused:
        small_spec(f"data={group}", "training.schedule.window=trailing")

    message = str(refused.value)
    assert "'training.schedule.window' 'trailing' needs 'data.kind' 'lake'" in message
    assert f"was data.kind {data!r}" in message


def test_a_trailing_window_over_a_lake_is_accepted() -> None:
    spec: RunSpec = small_spec("data=lake", f"data.source={SOURCE}", "training.schedule.window=trailing")

    assert (spec.training.schedule.window, spec.data.kind) == ("trailing", "lake")
