"""Compute a feature set over the long OHLCV frame."""

from __future__ import annotations

import polars as pl

from backend.config.schema import FeatureSetSpec
from backend.features.registry import feature_expression


def build_features(bars: pl.DataFrame, features: FeatureSetSpec) -> pl.DataFrame:
    """Return ``bars`` sorted by ``(ts, symbol)`` with one Float64 column per feature.

    Values that cannot be computed yet (warm-up) are null, never filled from the future.
    """
    ordered = bars.sort(["symbol", "ts"])
    expressions = [feature_expression(f) for f in features.features]
    out = ordered.with_columns(expressions)
    names = [f.name for f in features.features]
    # NaN or +-inf (0/0, or rounding noise over a zero std, in a flat window) is treated like a
    # missing value: the model sees null.
    out = out.with_columns([pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n) for n in names])
    return out.sort(["ts", "symbol"])
