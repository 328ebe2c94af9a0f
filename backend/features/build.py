"""Compute a feature set over the long OHLCV frame."""

from __future__ import annotations

import polars as pl

from backend.config.schema import FeatureSetSpec
from backend.features.registry import feature_expression

# ts in milliseconds stays below 2**42 until the year 2109; symbol codes fit in the bits above.
_TS_BITS = 42


def build_features(bars: pl.DataFrame, features: FeatureSetSpec) -> pl.DataFrame:
    """Return ``bars`` sorted by ``(ts, symbol)`` with one Float64 column per feature.

    Values that cannot be computed yet (warm-up) are null, never filled from the future.
    """
    symbols = sorted(bars["symbol"].unique().to_list())
    # Sorting on one integer key is several times faster than on (String, Int64), and window
    # functions group faster on an Enum than on a String; the symbol is a String again on return.
    keyed = bars.with_columns(pl.col("symbol").cast(pl.Enum(symbols)))
    code = pl.col("symbol").to_physical().cast(pl.Int64)
    ordered = keyed.sort(code * (1 << _TS_BITS) + pl.col("ts"))
    out = ordered.with_columns([feature_expression(f) for f in features.features])
    names = [f.name for f in features.features]
    # NaN or +-inf (0/0, or rounding noise over a zero std, in a flat window) is treated like a
    # missing value: the model sees null.
    out = out.with_columns([pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n) for n in names])
    out = out.sort(pl.col("ts") * 1024 + code)
    return out.with_columns(pl.col("symbol").cast(pl.String))
