"""Point-in-time: no feature value at or before t changes when any bar after t changes.

Every registered builder is checked (``builder_names()``), so a new builder is covered the day
it is registered. Labels are the deliberate exception: they look forward, and the last test
proves the test can tell the difference.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.data.simulator import simulate_ohlcv
from backend.features.build import build_features
from backend.features.labels import forward_return_labels

BAR_MS = 300_000  # 5-minute bars
from backend.features.registry import builder_names
from tests.stubs import small_spec

START = 1_735_689_600_000  # 2025-01-01 00:00 UTC
BAR = 300_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "SOL": "l1_major", "DOGE": "meme"}
N_BARS = 240
WINDOW = 12
CUTS = (WINDOW + 3, 150)  # just after warm-up, and deep into the series


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(CLUSTERS), CLUSTERS, "5m", START, N_BARS, seed=21)


def perturb_after(bars: pl.DataFrame, cut_ts: int, seed: int = 5) -> pl.DataFrame:
    """Scale every price and volume of every symbol's bars after ``cut_ts`` by random factors."""
    later = (bars["ts"] > cut_ts).to_numpy()
    rng = np.random.default_rng(seed)
    price_factor = np.where(later, np.exp(rng.normal(0.0, 0.05, bars.height)), 1.0)
    volume_factor = np.where(later, np.exp(rng.normal(0.0, 0.5, bars.height)), 1.0)
    return bars.with_columns(
        *(pl.col(c) * pl.Series(price_factor) for c in ("open", "high", "low", "close")),
        pl.col("volume") * pl.Series(volume_factor),
    )


def one_feature(builder: str) -> FeatureSetSpec:
    # Every builder gets a window and a symbol; builders that do not need them ignore them.
    return FeatureSetSpec(name="pit", features=(FeatureSpec(name="f", builder=builder, window=WINDOW, symbol="BTC"),))


def values(bars: pl.DataFrame, features: FeatureSetSpec) -> pl.DataFrame:
    return build_features(bars, features).select("ts", "symbol", *(f.name for f in features.features))


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("builder", builder_names())
def test_feature_at_or_before_t_ignores_every_bar_after_t(bars: pl.DataFrame, builder: str, cut: int) -> None:
    cut_ts = START + cut * BAR
    features = one_feature(builder)
    original = values(bars, features)
    changed = values(perturb_after(bars, cut_ts), features)

    past = pl.col("ts") <= cut_ts
    assert_frame_equal(original.filter(past), changed.filter(past), check_exact=True)
    # The check has teeth: values exist before t, and the perturbation did reach the feature after t.
    assert original.filter(past)["f"].drop_nulls().len() > 0
    assert not original.filter(~past).equals(changed.filter(~past))


@pytest.mark.parametrize("cut", CUTS)
def test_the_configured_feature_set_is_point_in_time(bars: pl.DataFrame, cut: int) -> None:
    features = small_spec().features
    cut_ts = START + cut * BAR
    past = pl.col("ts") <= cut_ts
    original = values(bars, features).filter(past)
    changed = values(perturb_after(bars, cut_ts), features).filter(past)
    assert_frame_equal(original, changed, check_exact=True)
    assert original.height == len(CLUSTERS) * (cut + 1)


def test_changing_btc_after_t_moves_the_cross_asset_feature_of_other_symbols_only_after_t(bars: pl.DataFrame) -> None:
    cut_ts = START + 150 * BAR
    features = one_feature("symbol_log_return")
    btc_only = perturb_after(bars.filter(pl.col("symbol") == "BTC"), cut_ts)
    changed_bars = pl.concat([bars.filter(pl.col("symbol") != "BTC"), btc_only])
    original = values(bars, features).filter(pl.col("symbol") == "ETH")
    changed = values(changed_bars, features).filter(pl.col("symbol") == "ETH")
    past = pl.col("ts") <= cut_ts
    assert_frame_equal(original.filter(past), changed.filter(past), check_exact=True)
    assert not original.filter(~past).equals(changed.filter(~past))


def test_labels_do_look_forward_so_the_check_separates_them_from_features(bars: pl.DataFrame) -> None:
    horizon = 6
    cut_ts = START + 150 * BAR
    original = forward_return_labels(bars, horizon, 0.0, BAR_MS)
    changed = forward_return_labels(perturb_after(bars, cut_ts), horizon, 0.0, BAR_MS)
    before = pl.col("ts") <= cut_ts
    # The labels of the last `horizon` bars up to t read closes after t, so they move ...
    in_reach = before & (pl.col("ts") > cut_ts - horizon * BAR)
    assert (original.filter(in_reach)["label_return"] != changed.filter(in_reach)["label_return"]).all()
    # ... while labels whose whole horizon ends by t do not.
    settled = pl.col("ts") <= cut_ts - horizon * BAR
    assert_frame_equal(original.filter(settled), changed.filter(settled), check_exact=True)
