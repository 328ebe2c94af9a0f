"""Named feature builders, each returning a polars expression over the long OHLCV frame.

Every builder looks only backwards: rolling windows and shifts with positive lags, computed
per symbol (``.over("symbol")``) on a frame sorted by ``(symbol, ts)``. The point-in-time test
in ``tests/`` runs every registered builder and proves it: changing data after ``t`` changes
no value at or before ``t``.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.errors import ConfigError

Builder = Callable[[FeatureSpec], pl.Expr]
_REGISTRY: dict[str, tuple[Builder, bool, bool]] = {}


def register(name: str, *, needs_window: bool = True, needs_symbol: bool = False) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``; ``needs_*`` declare which spec fields it requires."""

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = (builder, needs_window, needs_symbol)
        return builder

    return wrap


def builder_names() -> list[str]:
    """Return the registered builder names, sorted."""
    return sorted(_REGISTRY)


def feature_expression(feature: FeatureSpec) -> pl.Expr:
    """Return the polars expression for ``feature``, aliased to its name.

    Raises
    ------
    ConfigError
        When the builder is unknown, or a required ``window``/``symbol`` is missing.
    """
    if feature.builder not in _REGISTRY:
        raise ConfigError(
            f"feature {feature.name!r}: unknown builder {feature.builder!r} (known: {', '.join(builder_names())})"
        )
    builder, needs_window, needs_symbol = _REGISTRY[feature.builder]
    if needs_window and feature.window is None:
        raise ConfigError(f"feature {feature.name!r}: builder {feature.builder!r} requires 'window'")
    if needs_symbol and feature.symbol is None:
        raise ConfigError(f"feature {feature.name!r}: builder {feature.builder!r} requires 'symbol'")
    return builder(feature).cast(pl.Float64).alias(feature.name)


def validate_feature_set(features: FeatureSetSpec) -> None:
    """Build every expression once so that a bad feature set fails at the config boundary."""
    for feature in features.features:
        feature_expression(feature)


def _w(feature: FeatureSpec) -> int:
    return int(feature.window)  # type: ignore[arg-type]


@register("log_return")
def _log_return(feature: FeatureSpec) -> pl.Expr:
    return (pl.col("close").log() - pl.col("close").log().shift(_w(feature))).over("symbol")


@register("realized_vol")
def _realized_vol(feature: FeatureSpec) -> pl.Expr:
    step = pl.col("close").log().diff()
    return step.rolling_std(_w(feature)).over("symbol")


@register("range_mean")
def _range_mean(feature: FeatureSpec) -> pl.Expr:
    return ((pl.col("high") - pl.col("low")) / pl.col("close")).rolling_mean(_w(feature)).over("symbol")


@register("volume_zscore")
def _volume_zscore(feature: FeatureSpec) -> pl.Expr:
    volume = pl.col("volume").log1p()
    mean = volume.rolling_mean(_w(feature))
    std = volume.rolling_std(_w(feature))
    return ((volume - mean) / std).over("symbol")


@register("rsi")
def _rsi(feature: FeatureSpec) -> pl.Expr:
    change = pl.col("close").diff()
    gain = change.clip(lower_bound=0.0).rolling_mean(_w(feature))
    loss = (-change).clip(lower_bound=0.0).rolling_mean(_w(feature))
    return (gain / (gain + loss)).over("symbol")


@register("symbol_log_return", needs_symbol=True)
def _symbol_log_return(feature: FeatureSpec) -> pl.Expr:
    # Cross-asset context: the named symbol's return at the same bar, broadcast to every symbol.
    # The frame is sorted by (symbol, ts), so the named symbol's rows are in time order; its return
    # is then looked up by ts. (A window nested in ``.over("ts")`` would shift inside each ts group,
    # where there is one row per symbol, and give null everywhere.)
    is_named = pl.col("symbol") == feature.symbol
    log_close = pl.col("close").log().filter(is_named)
    named_return = log_close - log_close.shift(_w(feature))
    named_ts = pl.col("ts").filter(is_named)
    return pl.col("ts").replace_strict(named_ts, named_return, default=None, return_dtype=pl.Float64)
