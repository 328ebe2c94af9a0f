"""Compute a feature set over the long OHLCV frame."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from backend.config.schema import FeatureSetSpec
from backend.errors import ConfigError
from backend.features.registry import BAR_IN_SEGMENT, CLUSTER, GAP, SEGMENT, feature_plan

# ts in milliseconds stays below 2**42 until the year 2109; symbol codes fit in the bits above.
_TS_BITS = 42


def build_features(
    bars: pl.DataFrame, features: FeatureSetSpec, clusters: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """Return ``bars`` sorted by ``(ts, symbol)`` with one Float64 column per feature.

    Values that cannot be computed yet (warm-up) are null, never filled from the future. A missing
    bar (a step longer than the bar length between two bars of a symbol) ends a segment: every
    per-symbol window restarts after it, so values are null until the window has refilled, and
    nothing is carried across the gap. ``clusters`` maps every symbol to its cluster; it is needed
    only by cluster features.

    Raises
    ------
    ConfigError
        When a feature is invalid, or a cluster feature is asked for without a cluster for every symbol.
    """
    plans = [feature_plan(f) for f in features.features]
    symbols = sorted(bars["symbol"].unique().to_list())
    # Sorting on one integer key is several times faster than on (String, Int64), and window
    # functions group faster on integers than on a String; the symbol is a String again on return.
    keyed = bars.with_columns(pl.col("symbol").cast(pl.Enum(symbols)))
    code = pl.col("symbol").to_physical().cast(pl.Int64)
    ordered = keyed.sort(code * (1 << _TS_BITS) + pl.col("ts"))
    same_symbol = (code == code.shift(1)).fill_null(False)
    # The bar length is the smallest step between two bars of one symbol: a property of the
    # timeframe, the same for every bar, so finding it over the whole frame reads no future value.
    step = ordered.select(pl.when(same_symbol).then(pl.col("ts").diff()).min())[0, 0]
    # The first bar (of the frame, or of a symbol) has no known predecessor: it starts a segment but
    # is not a gap. A later bar whose step exceeds the bar length follows at least one missing bar.
    gap = same_symbol & (pl.col("ts").diff() > (step or 0))
    ordered = ordered.with_columns(gap.cast(pl.Float64).alias(GAP), (~same_symbol | gap).cum_sum().alias(SEGMENT))
    ordered = ordered.with_columns(pl.int_range(pl.len()).over(SEGMENT).alias(BAR_IN_SEGMENT))
    if any(p.needs_clusters for p in plans):
        ordered = ordered.with_columns(_cluster_code(symbols, clusters, features).alias(CLUSTER))
    staged = [p for p in plans if p.inner is not None]
    # Inner stages shared by several features are computed once (their helper is named by content).
    inner = {p.inner.meta.output_name(): p.inner for p in staged}  # type: ignore[union-attr]
    ordered = ordered.with_columns([p.outer for p in plans if p.inner is None] + list(inner.values()))
    # Cross-sectional stages group by ts: the final (ts, symbol) order keeps each ts group contiguous.
    out = ordered.sort(pl.col("ts") * 1024 + code)
    out = out.with_columns([p.outer for p in staged])
    names = [p.name for p in plans]
    # NaN or +-inf (0/0, or rounding noise over a zero std, in a flat window) is treated like a
    # missing value: the model sees null.
    out = out.with_columns([pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n) for n in names])
    out = out.select([*bars.columns, *names])  # helper columns (segments, gaps, inner stages) dropped
    return out.with_columns(pl.col("symbol").cast(pl.String))


def _cluster_code(symbols: list[str], clusters: Mapping[str, str] | None, features: FeatureSetSpec) -> pl.Expr:
    missing = [s for s in symbols if clusters is None or s not in clusters]
    if missing:
        raise ConfigError(
            f"feature set {features.name!r} has cluster features, but symbols {missing} have no cluster "
            "(pass the universe's cluster mapping)"
        )
    names = sorted({clusters[s] for s in symbols})  # type: ignore[index]
    code = {s: names.index(clusters[s]) for s in symbols}  # type: ignore[index]
    return pl.col("symbol").cast(pl.String).replace_strict(code, return_dtype=pl.Int64)
