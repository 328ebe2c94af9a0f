"""Point-in-time: no feature value at or before t changes when any bar after t changes or disappears.

Every registered builder is checked (``builder_names()``), so a new builder is covered the day
it is registered. The perturbations touch every symbol after t, so cross-sectional builders
(breadth, cluster momentum, ranks) are held to the same rule. Labels are the deliberate
exception: they look forward, and the last tests prove the check can tell the difference.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.data.simulator import simulate_ohlcv
from backend.features.build import build_features
from backend.features.labels import forward_return_labels, recovery_labels
from backend.features.registry import builder_info, builder_names
from tests.stubs import small_spec

START = 1_735_689_600_000  # 2025-01-01 00:00 UTC
BAR = 300_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "SOL": "l1_major", "DOGE": "meme"}
N_BARS = 240
WINDOW = 12
CUTS = (4 * WINDOW + 3, 150)  # just after the longest warm-up (vol_ratio: 4 x window), and deep in


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


def drop_after(bars: pl.DataFrame, cut_ts: int, seed: int = 6) -> pl.DataFrame:
    """Remove a random tenth of every symbol's bars after ``cut_ts``: gaps appear only after t."""
    later = (bars["ts"] > cut_ts).to_numpy()
    dropped = later & (np.random.default_rng(seed).random(bars.height) < 0.1)
    return bars.filter(pl.Series(~dropped))


def one_feature(builder: str) -> FeatureSetSpec:
    # Every builder gets a window and a symbol; builders that do not need them ignore them.
    return FeatureSetSpec(name="pit", features=(FeatureSpec(name="f", builder=builder, window=WINDOW, symbol="BTC"),))


def values(bars: pl.DataFrame, features: FeatureSetSpec) -> pl.DataFrame:
    return build_features(bars, features, CLUSTERS).select("ts", "symbol", *(f.name for f in features.features))


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("builder", builder_names())
def test_feature_at_or_before_t_ignores_every_bar_after_t(bars: pl.DataFrame, builder: str, cut: int) -> None:
    cut_ts = START + cut * BAR
    features = one_feature(builder)
    original = values(bars, features)
    changed = values(perturb_after(bars, cut_ts), features)

    past = pl.col("ts") <= cut_ts
    assert_frame_equal(original.filter(past), changed.filter(past), check_exact=True)
    # The check has teeth: values exist before t, and the perturbation did reach the feature after t
    # (calendar and gap features read no price or volume, so prices cannot move them).
    assert original.filter(past)["f"].drop_nulls().len() > 0
    if builder_info(builder).inputs == "market":
        assert not original.filter(~past).equals(changed.filter(~past))


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("builder", builder_names())
def test_feature_at_or_before_t_ignores_bars_missing_after_t(bars: pl.DataFrame, builder: str, cut: int) -> None:
    cut_ts = START + cut * BAR
    features = one_feature(builder)
    original = values(bars, features)
    holed = values(drop_after(bars, cut_ts), features)

    past = pl.col("ts") <= cut_ts
    assert_frame_equal(original.filter(past), holed.filter(past), check_exact=True)
    # Teeth: on the bars that remain after t, the gaps did change values (except calendar features,
    # which depend on the row's own time alone).
    after = original.filter(~past).join(holed.filter(~past), on=["ts", "symbol"], suffix="_holed")
    assert after.height < original.filter(~past).height
    moved = after.filter(pl.col("f").ne_missing(pl.col("f_holed"))).height
    assert (moved > 0) == (builder_info(builder).inputs != "clock")


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("feature_set", ["core_v1", "full_v1"])
def test_the_configured_feature_sets_are_point_in_time(bars: pl.DataFrame, feature_set: str, cut: int) -> None:
    features = small_spec(f"features={feature_set}").features
    cut_ts = START + cut * BAR
    past = pl.col("ts") <= cut_ts
    original = values(bars, features).filter(past)
    for perturbed in (perturb_after(bars, cut_ts), drop_after(bars, cut_ts)):
        assert_frame_equal(original, values(perturbed, features).filter(past), check_exact=True)
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
    original = forward_return_labels(bars, horizon, 0.0, BAR)
    changed = forward_return_labels(perturb_after(bars, cut_ts), horizon, 0.0, BAR)
    before = pl.col("ts") <= cut_ts
    # The labels of the last `horizon` bars up to t read closes after t, so they move ...
    in_reach = before & (pl.col("ts") > cut_ts - horizon * BAR)
    assert (original.filter(in_reach)["label_return"] != changed.filter(in_reach)["label_return"]).all()
    # ... while labels whose whole horizon ends by t do not.
    settled = pl.col("ts") <= cut_ts - horizon * BAR
    assert_frame_equal(original.filter(settled), changed.filter(settled), check_exact=True)


def test_recovery_labels_look_forward_but_their_adverse_depth_is_point_in_time(bars: pl.DataFrame) -> None:
    horizon = 6
    cut_ts = START + 150 * BAR
    original = recovery_labels(bars, horizon, 48, 0.5, BAR)
    changed = recovery_labels(perturb_after(bars, cut_ts), horizon, 48, 0.5, BAR)
    before = pl.col("ts") <= cut_ts
    assert_frame_equal(original.filter(before).select("adverse_depth"), changed.filter(before).select("adverse_depth"), check_exact=True)
    in_reach = before & (pl.col("ts") > cut_ts - horizon * BAR)
    assert not original.filter(in_reach)["label_recover"].equals(changed.filter(in_reach)["label_recover"])
    settled = pl.col("ts") <= cut_ts - horizon * BAR
    assert_frame_equal(original.filter(settled), changed.filter(settled), check_exact=True)
