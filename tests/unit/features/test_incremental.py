"""Incremental features equal a batch recompute over the whole history, for every builder, gaps included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backend.config.compose import compose_spec
from backend.data.simulator import simulate_ohlcv
from backend.errors import DataError
from backend.features.build import build_features
from backend.features.incremental import IncrementalFeatures, lookback_bars
from backend.features.registry import builder_names

START_MS = 1_735_689_600_000
BAR_MS = 300_000


@pytest.fixture(scope="module")
def setup() -> tuple:
    spec = compose_spec(["features=full_v1"])
    symbols = ["BTC", "DOGE", "ETH", "SOL"]
    bars = simulate_ohlcv(symbols, spec.universe.clusters, "5m", START_MS, 900, seed=11)
    # Gaps: SOL misses bars in the history and in the live part, DOGE misses the newest-but-two bar.
    holes = ((pl.col("symbol") == "SOL") & pl.col("ts").is_in([START_MS + k * BAR_MS for k in (300, 301, 880)])) | (
        (pl.col("symbol") == "DOGE") & (pl.col("ts") == START_MS + 897 * BAR_MS)
    )
    return spec, bars.filter(~holes)


def test_the_full_feature_set_covers_every_builder(setup: tuple) -> None:
    spec, _ = setup
    assert sorted({f.builder for f in spec.features.features}) == builder_names()


def test_incremental_rows_equal_a_batch_recompute(setup: tuple) -> None:
    spec, bars = setup
    names = [f.name for f in spec.features.features]
    batch = build_features(bars, spec.features, spec.universe.clusters)
    live_from = START_MS + 870 * BAR_MS
    assert lookback_bars(spec.features) < 870
    inc = IncrementalFeatures(spec.features, spec.universe.clusters)
    inc.seed(bars.filter(pl.col("ts") < live_from))
    rows = [inc.update(part) for _, part in bars.filter(pl.col("ts") >= live_from).group_by("ts", maintain_order=True)]
    got = pl.concat(rows).sort("ts", "symbol")
    want = batch.filter(pl.col("ts") >= live_from).sort("ts", "symbol")
    assert got.select("ts", "symbol").equals(want.select("ts", "symbol")) and got.height == 30 * 4 - 2
    for name in names:
        a, b = got[name].to_numpy().astype(float), want[name].to_numpy().astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-9, atol=1e-12), name
    assert got.filter(pl.col("symbol") == "SOL")["is_gap"].sum() == 1


def test_the_history_is_bounded_and_updates_are_checked(setup: tuple) -> None:
    spec, bars = setup
    inc = IncrementalFeatures(spec.features, spec.universe.clusters, history_bars=50)
    inc.update(bars.filter(pl.col("ts") == START_MS))  # no seed: the first update starts the history
    inc.seed(bars.filter(pl.col("ts") < START_MS + 100 * BAR_MS))
    assert inc._history["ts"].n_unique() == 50 and inc.last_ts == START_MS + 99 * BAR_MS
    with pytest.raises(DataError, match="exactly one bar time, got 2"):
        inc.update(bars.filter(pl.col("ts").is_in([START_MS + 100 * BAR_MS, START_MS + 101 * BAR_MS])))
    with pytest.raises(DataError, match="is not after the last one"):
        inc.update(bars.filter(pl.col("ts") == START_MS + 99 * BAR_MS))
    inc.seed(bars.head(0))
    assert inc.last_ts is None
