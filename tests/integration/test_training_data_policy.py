"""The training data policy on the training path: ``load_bars`` over a lake source, against the CoinAPI emulator.

``FORCE_LOCAL_DATA_FOR_TRAINING`` (default true) reads the lake as it is; ``ALLOW_PROVIDER_CALLS_DURING_TRAINING``
tops the lake up by an incremental ingest first; both true is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import CANARY, use_coinapi
from stubs import small_spec

from backend.config.schema import RunSpec
from backend.data import lake
from backend.data.raw import RawStore
from backend.data.simulator import simulate_ohlcv
from backend.data.state import IngestState
from backend.errors import ConfigError, DataError
from backend.home import Home
from backend.runs.runner import BAR_COLUMNS, load_bars
from backend.sandbox.coinapi import CoinApiEmulator

DAY_BARS = 288  # 5-minute bars a day


def lake_spec(source: str) -> RunSpec:
    """A two-day 5m BTC run over ``source`` in the lake."""
    return small_spec(
        "data=lake", f"data.source={source}", "data.timeframe=5m", "data.start=2025-01-01", "data.days=2",
        "data.symbols=[BTC]", "training.num_threads=1",
    )


def all_bars(spec: RunSpec) -> pl.DataFrame:
    """The two days of bars the provider holds."""
    return simulate_ohlcv(["BTC"], spec.universe.clusters, "5m", spec.data.start_ms, 2 * DAY_BARS, 5)


def seed_lake(home: Home, spec: RunSpec, source: str) -> pl.DataFrame:
    """Write the first day into the lake under ``source``; return it (bar columns)."""
    first_day = all_bars(spec).head(DAY_BARS)
    lake.write_ohlcv(home.lake, first_day.with_columns(pl.lit(source).alias("source")), "5m")
    return first_day.select(BAR_COLUMNS)


def lake_state(home: Home) -> dict[str, int]:
    """Every file under the home with its modification time."""
    return {str(p.relative_to(home.root)): p.stat().st_mtime_ns for p in home.root.rglob("*") if p.is_file()}


@pytest.fixture
def emulator() -> Iterator[CoinApiEmulator]:
    spec = lake_spec("coinapi")
    with CoinApiEmulator(all_bars(spec), api_key=CANARY, universe=spec.universe) as running:
        yield running


@pytest.fixture
def policy_env(monkeypatch: pytest.MonkeyPatch, emulator: CoinApiEmulator):
    """Point CoinAPI at the emulator and return a setter of the two training flags (None: unset)."""
    use_coinapi(monkeypatch, emulator.base_url)

    def set_flags(force: str | None, allow: str | None) -> None:
        for name, value in (("FORCE_LOCAL_DATA_FOR_TRAINING", force), ("ALLOW_PROVIDER_CALLS_DURING_TRAINING", allow)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_flags


def test_the_default_policy_reads_the_lake_as_is_and_never_calls_the_provider(
    acts_home: Path, emulator: CoinApiEmulator, policy_env
) -> None:
    policy_env(None, None)
    spec, home = lake_spec("coinapi"), Home(acts_home)
    held = seed_lake(home, spec, "coinapi")
    messages: list[str] = []

    bars, _ = load_bars(spec, home, messages.append)

    assert emulator.request_log == []
    assert bars.equals(held)
    assert not (acts_home / "raw").exists() and not (acts_home / "data").exists()
    assert messages == [
        "training data policy lake_only (ALLOW_PROVIDER_CALLS_DURING_TRAINING=false): "
        "reading lake source 'coinapi' as is, no provider call"
    ]


def test_allowed_provider_calls_top_the_lake_up_before_it_is_read(
    acts_home: Path, emulator: CoinApiEmulator, policy_env
) -> None:
    policy_env("false", "true")
    spec, home = lake_spec("coinapi"), Home(acts_home)
    seed_lake(home, spec, "coinapi")
    messages: list[str] = []

    bars, snapshot = load_bars(spec, home, messages.append)

    assert emulator.request_log  # the provider was asked
    assert bars.height == 2 * DAY_BARS
    assert bars.equals(all_bars(spec).select(BAR_COLUMNS))
    assert sorted(snapshot) == ["ohlcv/source=coinapi/timeframe=5m/symbol=BTC/2025-01.parquet"]
    raw = RawStore(acts_home / "raw")
    try:
        records = raw.records()
        assert any(r.endpoint.startswith("/v1/ohlcv/") and r.status == 200 for r in records)
        assert all(raw.object_path(r.sha256).is_file() for r in records)
    finally:
        raw.close()
    state = IngestState(acts_home / "data" / "ingest.sqlite")
    try:
        cursor = state.cursor("coinapi", "BTC", "5m")
        assert cursor is not None and cursor.next_ms == spec.data.end_ms
    finally:
        state.close()
    assert any(m.startswith("coinapi BTC 5m: page 1") for m in messages)
    assert messages[-1] == (
        "lake topped up from coinapi before training (training data policy lake_after_ingest): "
        "1 pages, 576 bars received over 1 series"
    )


def test_a_second_top_up_continues_from_the_cursor_and_adds_only_new_bars(
    acts_home: Path, emulator: CoinApiEmulator, policy_env
) -> None:
    policy_env("false", "true")
    spec, home = lake_spec("coinapi"), Home(acts_home)
    load_bars(spec, home, lambda _m: None)
    before = len(emulator.request_log)
    messages: list[str] = []

    bars, _ = load_bars(spec, home, messages.append)

    # Only the history is asked again, from the cursor less the 12-bar lookback; /v1/symbols is not.
    assert [(path, status) for _, path, status in emulator.request_log[before:]] == [
        ("/v1/ohlcv/KRAKEN_SPOT_BTC_USD/history?period_id=5MIN&time_start=2025-01-02T23%3A00%3A00.000Z&limit=100000", 200)
    ]
    assert bars.equals(all_bars(spec).select(BAR_COLUMNS))
    assert messages[-1].endswith("1 pages, 12 bars received over 1 series")


def test_both_training_flags_true_are_refused_before_anything_is_written(
    acts_home: Path, emulator: CoinApiEmulator, policy_env
) -> None:
    policy_env("true", "true")
    spec, home = lake_spec("coinapi"), Home(acts_home)
    seed_lake(home, spec, "coinapi")
    before = lake_state(home)
    messages: list[str] = []

    with pytest.raises(ConfigError) as caught:
        load_bars(spec, home, messages.append)

    assert str(caught.value) == (
        "FORCE_LOCAL_DATA_FOR_TRAINING=true contradicts ALLOW_PROVIDER_CALLS_DURING_TRAINING=true; "
        "set one of them to false"
    )
    assert lake_state(home) == before
    assert emulator.request_log == [] and messages == []


@pytest.mark.parametrize("source", ["binance", "sim-0123456789ab"])
def test_allowed_calls_over_a_source_no_provider_fills_read_the_lake_as_is(
    acts_home: Path, emulator: CoinApiEmulator, policy_env, source: str
) -> None:
    policy_env("false", "true")
    spec, home = lake_spec(source), Home(acts_home)
    held = seed_lake(home, spec, source)
    messages: list[str] = []

    bars, _ = load_bars(spec, home, messages.append)

    assert bars.equals(held)
    assert emulator.request_log == []
    assert not (acts_home / "raw").exists()
    assert messages == [
        f"training data policy lake_after_ingest, but lake source {source!r} is not filled by a provider "
        "(only ['coinapi', 'kraken', 'kraken_trades'] are): reading the lake as is, no provider call"
    ]


def test_a_failed_top_up_is_a_data_error_naming_the_series_and_the_lake_is_unchanged(
    acts_home: Path, emulator: CoinApiEmulator, policy_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_env("false", "true")
    monkeypatch.setenv("HIST_MARKET_DATA_API_KEY", "not-the-key")
    spec, home = lake_spec("coinapi"), Home(acts_home)
    seed_lake(home, spec, "coinapi")
    files = lake.lake_files(home.lake, "coinapi", "5m", ["BTC"])
    before = lake.snapshot(files, home.lake)

    with pytest.raises(DataError) as caught:
        load_bars(spec, home, lambda _m: None)

    assert str(caught.value).startswith("topping up lake source 'coinapi' before training failed for BTC: ")
    assert "HTTP 401" in str(caught.value) and "not-the-key" not in str(caught.value)
    assert lake.snapshot(lake.lake_files(home.lake, "coinapi", "5m", ["BTC"]), home.lake) == before
    assert [status for *_, status in emulator.request_log] == [401]
