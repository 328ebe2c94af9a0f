"""Tests of the seeded market simulator: determinism, lake validity and realistic structure."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backend.data.lake import OHLCV_SCHEMA, TIMEFRAME_MS, validate_ohlcv
from backend.data.simulator import simulate_ohlcv
from backend.errors import DataError

START = 1_735_689_600_000  # 2025-01-01 00:00 UTC
CLUSTERS = {
    "BTC": "store_of_value",
    "ETH": "l1_major",
    "SOL": "l1_major",
    "ADA": "l1_major",
    "DOGE": "meme",
    "SHIB": "meme",
    "PEPE": "meme",
    "ZZZ": "meme",  # not in the price table: price and volatility come from its name
}


def simulate(
    seed: int = 7, symbols: list[str] | None = None, timeframe: str = "1h", n_bars: int = 500
) -> pl.DataFrame:
    return simulate_ohlcv(symbols or list(CLUSTERS), CLUSTERS, timeframe, START, n_bars, seed)


def wide(frame: pl.DataFrame, column: str) -> np.ndarray:
    """Return a (bars x symbols) array of ``column``, symbols in sorted order."""
    table = frame.pivot(on="symbol", index="ts", values=column).drop("ts")
    return table.select(sorted(table.columns)).to_numpy()


@pytest.fixture(scope="module")
def long_run() -> pl.DataFrame:
    return simulate(seed=11, n_bars=20_000)


def test_same_arguments_give_byte_identical_frames() -> None:
    first = simulate().write_ipc(None).getvalue()
    second = simulate().write_ipc(None).getvalue()

    assert first == second


def test_different_seeds_give_different_prices() -> None:
    assert not np.array_equal(simulate(seed=1)["close"].to_numpy(), simulate(seed=2)["close"].to_numpy())


def test_symbol_order_of_the_arguments_does_not_matter() -> None:
    assert simulate(symbols=["ETH", "BTC"]).equals(simulate(symbols=["BTC", "ETH"]))


def test_output_has_lake_columns_and_passes_lake_validation() -> None:
    frame = simulate_ohlcv(["BTC", "ETH"], CLUSTERS, "5m", START, 300, seed=3, batch_id="sim-3")

    assert frame.schema == pl.Schema(OHLCV_SCHEMA)
    assert validate_ohlcv(frame, "5m").height == 600
    assert frame["source"].unique().to_list() == ["simulated"]
    assert frame["batch_id"].unique().to_list() == ["sim-3"]


@pytest.mark.parametrize("timeframe", sorted(TIMEFRAME_MS))
def test_bars_are_sorted_by_ts_then_symbol_on_the_timeframe_grid(timeframe: str) -> None:
    frame = simulate(timeframe=timeframe, n_bars=50)
    bar_ms = TIMEFRAME_MS[timeframe]

    assert frame.equals(frame.sort("ts", "symbol"))
    for symbol in CLUSTERS:
        ts = frame.filter(symbol=symbol)["ts"].to_numpy()
        np.testing.assert_array_equal(ts, START + bar_ms * np.arange(50))
    assert validate_ohlcv(frame, timeframe).height == 50 * len(CLUSTERS)


def test_open_is_previous_close_and_first_open_is_the_base_price() -> None:
    frame = simulate()
    opens, closes = wide(frame, "open"), wide(frame, "close")

    np.testing.assert_array_equal(opens[1:], closes[:-1])
    first = dict(zip(sorted(CLUSTERS), opens[0], strict=True))
    assert first["BTC"] == 60000.0
    assert first["ETH"] == 3000.0
    assert first["DOGE"] < 1.0
    assert first["PEPE"] < 1.0


def test_high_and_low_extend_beyond_open_and_close() -> None:
    frame = simulate()
    body_high = np.maximum(frame["open"].to_numpy(), frame["close"].to_numpy())
    body_low = np.minimum(frame["open"].to_numpy(), frame["close"].to_numpy())

    assert (frame["high"].to_numpy() > body_high).mean() > 0.95
    assert (frame["low"].to_numpy() < body_low).mean() > 0.95


def test_returns_are_more_correlated_within_a_cluster_than_across(long_run: pl.DataFrame) -> None:
    returns = np.diff(np.log(wide(long_run, "close")), axis=0)
    corr = np.corrcoef(returns.T)
    names = sorted(CLUSTERS)
    within, across = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (within if CLUSTERS[names[i]] == CLUSTERS[names[j]] else across).append(corr[i, j])

    assert min(across) > 0.15  # a shared market factor
    assert np.mean(within) > np.mean(across) + 0.15


def test_annualised_volatility_is_crypto_like(long_run: pl.DataFrame) -> None:
    returns = np.diff(np.log(wide(long_run, "close")), axis=0)
    annualised = returns.std(axis=0) * np.sqrt(365 * 24)

    assert annualised.min() > 0.3
    assert annualised.max() < 2.0
    assert annualised[sorted(CLUSTERS).index("BTC")] < annualised[sorted(CLUSTERS).index("DOGE")]


def test_volatility_clusters_in_time(long_run: pl.DataFrame) -> None:
    returns = np.diff(np.log(wide(long_run, "close")), axis=0)
    absolute = np.abs(returns - returns.mean(axis=0))
    lag1 = [np.corrcoef(absolute[1:, i], absolute[:-1, i])[0, 1] for i in range(absolute.shape[1])]
    weekly_vol = returns[: (len(returns) // 168) * 168].reshape(-1, 168, returns.shape[1]).std(axis=1)

    assert min(lag1) > 0.05
    assert (weekly_vol.max(axis=0) / weekly_vol.min(axis=0)).min() > 2.0


def test_returns_have_fat_tails(long_run: pl.DataFrame) -> None:
    returns = np.diff(np.log(wide(long_run, "close")), axis=0)
    standardised = (returns - returns.mean(axis=0)) / returns.std(axis=0)

    assert (standardised**4).mean(axis=0).min() > 3.5


def test_volume_is_positive_and_rises_with_absolute_return(long_run: pl.DataFrame) -> None:
    volume = wide(long_run, "volume")[1:]
    returns = np.abs(np.diff(np.log(wide(long_run, "close")), axis=0))
    rank_corr = [
        np.corrcoef(np.argsort(np.argsort(volume[:, i])), np.argsort(np.argsort(returns[:, i])))[0, 1]
        for i in range(volume.shape[1])
    ]

    assert volume.min() > 0
    assert min(rank_corr) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bars": 1}, "n_bars must be >= 2, got 1"),
        ({"symbols": []}, "at least one symbol"),
        ({"symbols": ["BTC", "BTC"]}, "distinct"),
        ({"timeframe": "2h"}, "unknown timeframe '2h'"),
        ({"start_ms": START + 60_000}, "not aligned to the 1h timeframe"),
        ({"symbols": ["BTC", "XYZ"]}, "symbol 'XYZ' has no cluster"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "symbols": ["BTC"],
        "clusters": CLUSTERS,
        "timeframe": "1h",
        "start_ms": START,
        "n_bars": 10,
        "seed": 1,
    }
    arguments.update(kwargs)

    with pytest.raises(DataError, match=message):
        simulate_ohlcv(**arguments)  # type: ignore[arg-type]


def test_a_planted_signal_adds_a_daily_drift_of_known_size_and_leaves_everything_else_alone() -> None:
    plain = simulate_ohlcv(["BTC", "ETH"], CLUSTERS, "1h", START, 24 * 20, 5)
    planted = simulate_ohlcv(["BTC", "ETH"], CLUSTERS, "1h", START, 24 * 20, 5, signal_bps=30.0)
    assert simulate_ohlcv(["BTC", "ETH"], CLUSTERS, "1h", START, 24 * 20, 5, signal_bps=0.0).equals(plain)
    added = np.diff(np.log(wide(planted, "close")), axis=0) - np.diff(np.log(wide(plain, "close")), axis=0)
    # +-30 bps every bar, one sign per symbol and day (bars 1..23 of day 0, then whole days).
    np.testing.assert_allclose(np.abs(added), 0.003, rtol=1e-6)
    days = np.sign(added[23:].reshape(19, 24, 2))
    assert (days == days[:, :1, :]).all() and len(np.unique(days[:, 0, 0])) == 2
    np.testing.assert_array_equal(wide(planted, "volume") > 0, True)
