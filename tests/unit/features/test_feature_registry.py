"""The feature registry and build: exact values of each builder, warm-up nulls, and refusals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.data.simulator import simulate_ohlcv
from backend.errors import ConfigError
from backend.features.build import build_features
from backend.features.registry import builder_info, builder_names, feature_plan, validate_feature_set
from tests.stubs import small_spec

START = 1_735_689_600_000
BAR = 300_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "DOGE": "meme"}
N_BARS = 80


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(CLUSTERS), CLUSTERS, "5m", START, N_BARS, seed=9)


def build_one(bars: pl.DataFrame, builder: str, window: int | None = 5, symbol: str | None = None) -> pl.DataFrame:
    spec = FeatureSetSpec(name="t", features=(FeatureSpec(name="f", builder=builder, window=window, symbol=symbol),))
    return build_features(bars, spec, CLUSTERS)


def series(frame: pl.DataFrame, symbol: str, column: str) -> np.ndarray:
    return frame.filter(pl.col("symbol") == symbol).sort("ts")[column].to_numpy()


def test_registry_lists_its_builders_sorted_including_the_core_ones() -> None:
    names = builder_names()
    assert names == sorted(names)
    assert {"log_return", "range_mean", "realized_vol", "rsi", "symbol_log_return", "volume_zscore"} <= set(names)


def test_log_return_is_the_log_change_over_the_window_with_nulls_during_warm_up(bars: pl.DataFrame) -> None:
    out = build_one(bars, "log_return", window=3)
    for symbol in CLUSTERS:
        close = series(bars, symbol, "close")
        got = series(out, symbol, "f")
        assert np.isnan(got[:3]).all()  # nulls come back as NaN in numpy
        np.testing.assert_allclose(got[3:], np.log(close[3:] / close[:-3]), rtol=1e-9, atol=1e-12)


def test_realized_vol_is_the_sample_std_of_the_last_window_log_steps(bars: pl.DataFrame) -> None:
    out = build_one(bars, "realized_vol", window=5)
    close = series(bars, "ETH", "close")
    steps = np.diff(np.log(close))
    expected = [np.std(steps[i - 5 : i], ddof=1) for i in range(5, len(steps) + 1)]
    got = series(out, "ETH", "f")
    assert np.isnan(got[:5]).all()
    np.testing.assert_allclose(got[5:], expected, rtol=1e-9)


def test_range_mean_averages_the_relative_bar_range(bars: pl.DataFrame) -> None:
    out = build_one(bars, "range_mean", window=4)
    frame = bars.filter(pl.col("symbol") == "DOGE").sort("ts")
    rel = ((frame["high"] - frame["low"]) / frame["close"]).to_numpy()
    expected = np.convolve(rel, np.ones(4) / 4, mode="valid")
    np.testing.assert_allclose(series(out, "DOGE", "f")[3:], expected, rtol=1e-9)


def test_volume_zscore_standardises_log_volume_in_the_window(bars: pl.DataFrame) -> None:
    out = build_one(bars, "volume_zscore", window=6)
    volume = np.log1p(series(bars, "BTC", "volume"))
    last = volume[-6:]
    assert series(out, "BTC", "f")[-1] == pytest.approx((last[-1] - last.mean()) / last.std(ddof=1), rel=1e-9)


def test_rsi_is_the_share_of_gains_in_the_window_and_stays_in_unit_range(bars: pl.DataFrame) -> None:
    out = build_one(bars, "rsi", window=5)
    change = np.diff(series(bars, "ETH", "close"))[-5:]
    gain, loss = change.clip(min=0).mean(), (-change).clip(min=0).mean()
    got = series(out, "ETH", "f")
    assert got[-1] == pytest.approx(gain / (gain + loss), rel=1e-9)
    valid = got[~np.isnan(got)]
    assert ((valid >= 0) & (valid <= 1)).all()


def test_symbol_log_return_broadcasts_the_named_symbols_return_to_every_symbol(bars: pl.DataFrame) -> None:
    out = build_one(bars, "symbol_log_return", window=3, symbol="BTC")
    btc_close = series(bars, "BTC", "close")
    expected = np.log(btc_close[3:] / btc_close[:-3])
    for symbol in CLUSTERS:
        got = series(out, symbol, "f")
        assert np.isnan(got[:3]).all()
        np.testing.assert_allclose(got[3:], expected, rtol=1e-9, atol=1e-12)


def test_symbol_log_return_is_null_where_the_named_symbol_has_no_bar_and_until_its_window_refills(bars: pl.DataFrame) -> None:
    gap_ts = START + 40 * BAR
    holed = bars.filter(~((pl.col("symbol") == "BTC") & (pl.col("ts") == gap_ts)))
    out = build_one(holed, "symbol_log_return", window=2, symbol="BTC")
    at_gap = out.filter(pl.col("ts") == gap_ts)
    assert at_gap["symbol"].to_list() == ["DOGE", "ETH"]
    assert at_gap["f"].null_count() == 2
    # A 2-bar return right after the gap would span 3 bars of time: it is null, not stretched.
    assert out.filter(pl.col("ts") == gap_ts + BAR)["f"].null_count() == 3
    assert out.filter(pl.col("ts") == gap_ts + 2 * BAR)["f"].null_count() == 3
    btc = series(holed, "BTC", "close")  # 79 closes, the 41st bar missing
    expected = np.log(btc[42] / btc[40])  # closes at bars 43 and 41 of the full series
    assert out.filter(pl.col("ts") == gap_ts + 3 * BAR)["f"].to_list() == pytest.approx([expected] * 3, rel=1e-12)


def test_flat_window_gives_null_not_nan_or_inf() -> None:
    n = 30
    flat = pl.DataFrame(
        {
            "ts": [START + i * BAR for i in range(n)],
            "symbol": ["BTC"] * n,
            **{c: [100.0] * n for c in ("open", "high", "low", "close")},
            "volume": [5.0] * n,
        }
    )
    spec = FeatureSetSpec(
        name="flat",
        features=(
            FeatureSpec(name="rsi", builder="rsi", window=5),
            FeatureSpec(name="vz", builder="volume_zscore", window=5),
            FeatureSpec(name="vol", builder="realized_vol", window=5),
        ),
    )
    out = build_features(flat, spec, CLUSTERS)
    # 0/0 (rsi) and rounding noise over a zero std (volume z-score) would be NaN or +-inf; the build
    # turns both into null.
    assert out["rsi"].null_count() == n and out["vz"].null_count() == n
    assert out.select(pl.col("rsi", "vz", "vol").is_nan().sum()).row(0) == (0, 0, 0)
    assert out.select(pl.col("rsi", "vz", "vol").is_infinite().sum()).row(0) == (0, 0, 0)
    assert out["vol"].drop_nulls().to_list() == [0.0] * (n - 5)


def test_build_returns_bars_sorted_by_time_then_symbol_with_float_features(bars: pl.DataFrame) -> None:
    features = small_spec().features
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=1)
    out = build_features(shuffled, features, CLUSTERS)
    names = [f.name for f in features.features]
    assert out.columns == [*bars.columns, *names]
    assert out.select("ts", "symbol").equals(bars.sort("ts", "symbol").select("ts", "symbol"))
    assert all(out.schema[n] == pl.Float64 for n in names)
    assert out.equals(build_features(bars, features, CLUSTERS))


def test_window_one_rsi_is_cast_to_float_and_named_after_the_feature(bars: pl.DataFrame) -> None:
    plan = feature_plan(FeatureSpec(name="my_rsi", builder="rsi", window=1))
    assert plan.name == "my_rsi" and plan.inner is None and not plan.needs_clusters
    out = build_features(bars, FeatureSetSpec(name="t", features=(FeatureSpec(name="my_rsi", builder="rsi", window=1),)))
    assert out.columns == [*bars.columns, "my_rsi"]
    assert out.schema["my_rsi"] == pl.Float64
    assert set(out["my_rsi"].drop_nulls().to_list()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            FeatureSpec(name="kama_12", builder="kama", window=12),
            f"feature 'kama_12': unknown builder 'kama' (known: {', '.join(builder_names())})",
        ),
        (FeatureSpec(name="ret", builder="log_return"), "feature 'ret': builder 'log_return' requires 'window'"),
        (
            FeatureSpec(name="btc", builder="symbol_log_return", window=12),
            "feature 'btc': builder 'symbol_log_return' requires 'symbol'",
        ),
        (FeatureSpec(name="vol", builder="realized_vol", symbol="BTC"), "feature 'vol': builder 'realized_vol' requires 'window'"),
    ],
)
def test_bad_feature_is_refused_naming_the_feature_and_builder(feature: FeatureSpec, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        feature_plan(feature)
    assert str(caught.value) == message
    good = FeatureSpec(name="ok", builder="log_return", window=1)
    with pytest.raises(ConfigError) as caught_in_set:
        validate_feature_set(FeatureSetSpec(name="bad", features=(good, feature)))
    assert str(caught_in_set.value) == message


def test_the_configured_feature_set_validates_and_builds_every_feature(bars: pl.DataFrame) -> None:
    features = small_spec().features
    validate_feature_set(features)  # refuses nothing
    out = build_features(bars, features, CLUSTERS)
    late = out.filter(pl.col("ts") >= START + 60 * BAR)
    assert late.select(pl.col(f.name for f in features.features).null_count()).row(0) == (0,) * len(features.features)
