"""Named feature builders, each returning polars expressions over the long OHLCV frame.

Every builder looks only backwards. ``build_features`` sorts the frame by ``(symbol, ts)`` and
adds helper columns before it evaluates the builders:

- ``_seg``: a contiguous run of one symbol's bars with no missing bar inside. A bar is missing
  when the step to the previous bar of the symbol exceeds the frame's bar length. Per-symbol
  windows run ``.over(SEGMENT)``, so a gap restarts every window: the values after a gap are
  null until the window has refilled (warm-up again), and nothing is forward-filled across it.
- ``_bar_in_seg``: the bar's position in its segment (0 at the first bar after a gap).
- ``_gap``: 1.0 when the bar follows a missing bar, else 0.0.
- ``_cluster``: the symbol's cluster code, when the caller gave a cluster mapping.

Cross-sectional builders (breadth, cluster momentum, ranks, the named symbol's return) are
two-stage (:class:`Staged`): a per-symbol inner expression is computed first, then an outer
expression combines the values of every symbol at the same ``ts`` (``.over("ts")``). Polars
evaluates a window nested inside ``.over("ts")`` within each ``ts`` group, so the stages must be
separate columns.

The point-in-time test in ``tests/unit/features`` runs every registered builder and proves it:
changing or removing any bar of any symbol after ``t`` changes no value at or before ``t``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.errors import ConfigError

SEGMENT = "_seg"
BAR_IN_SEGMENT = "_bar_in_seg"
GAP = "_gap"
CLUSTER = "_cluster"

Inputs = Literal["market", "timeline", "clock"]
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
# 1970-01-01 was a Thursday: shifting by 3 days puts Monday 00:00 UTC at phase 0 of the week.
_MONDAY_OFFSET_MS = 3 * _DAY_MS


@dataclass(frozen=True)
class Staged:
    """A cross-sectional feature: ``outer`` combines the per-symbol ``inner`` values at each ``ts``."""

    inner: pl.Expr
    outer: Callable[[pl.Expr], pl.Expr]


Builder = Callable[[FeatureSpec], "pl.Expr | Staged"]


@dataclass(frozen=True)
class BuilderInfo:
    """A registered builder and what it needs.

    ``inputs`` says what the value depends on besides the row's own time: ``market`` (prices or
    volumes, and bar presence), ``timeline`` (only which bars exist: gap features) or ``clock``
    (only the row's own ``ts``: calendar features).
    """

    builder: Builder
    needs_window: bool
    needs_symbol: bool
    needs_clusters: bool
    inputs: Inputs


@dataclass(frozen=True)
class FeaturePlan:
    """How to compute one feature: an optional inner (per-symbol) stage and the final expression."""

    name: str
    inner: pl.Expr | None
    outer: pl.Expr
    needs_clusters: bool


_REGISTRY: dict[str, BuilderInfo] = {}


def register(
    name: str,
    *,
    needs_window: bool = True,
    needs_symbol: bool = False,
    needs_clusters: bool = False,
    inputs: Inputs = "market",
) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``; ``needs_*`` declare which spec fields and context it requires."""

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = BuilderInfo(builder, needs_window, needs_symbol, needs_clusters, inputs)
        return builder

    return wrap


def builder_names() -> list[str]:
    """Return the registered builder names, sorted."""
    return sorted(_REGISTRY)


def builder_info(name: str) -> BuilderInfo:
    """Return the registration of builder ``name``.

    Raises
    ------
    ConfigError
        When no builder has that name.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown feature builder {name!r} (known: {', '.join(builder_names())})")
    return _REGISTRY[name]


def inner_column(inner: pl.Expr) -> str:
    """Return the helper column that holds an inner (per-symbol) stage.

    Named by the expression's content, so cross-sectional features with the same inner stage (the
    12-bar return under breadth, rank and cluster momentum) compute it once.
    """
    return "__inner__" + hashlib.sha256(inner.meta.serialize(format="json").encode()).hexdigest()[:16]


def feature_plan(feature: FeatureSpec) -> FeaturePlan:
    """Return the expressions that compute ``feature``, cast to Float64 and aliased to its name.

    Raises
    ------
    ConfigError
        When the builder is unknown, or a required ``window``/``symbol`` is missing.
    """
    if feature.builder not in _REGISTRY:
        raise ConfigError(
            f"feature {feature.name!r}: unknown builder {feature.builder!r} (known: {', '.join(builder_names())})"
        )
    info = _REGISTRY[feature.builder]
    if info.needs_window and feature.window is None:
        raise ConfigError(f"feature {feature.name!r}: builder {feature.builder!r} requires 'window'")
    if info.needs_symbol and feature.symbol is None:
        raise ConfigError(f"feature {feature.name!r}: builder {feature.builder!r} requires 'symbol'")
    built = info.builder(feature)
    if isinstance(built, Staged):
        helper = inner_column(built.inner)
        inner = built.inner.cast(pl.Float64).alias(helper)
        outer = built.outer(pl.col(helper))
        return FeaturePlan(feature.name, inner, outer.cast(pl.Float64).alias(feature.name), info.needs_clusters)
    return FeaturePlan(feature.name, None, built.cast(pl.Float64).alias(feature.name), info.needs_clusters)


def validate_feature_set(features: FeatureSetSpec) -> None:
    """Build every expression once so that a bad feature set fails at the config boundary."""
    for feature in features.features:
        feature_plan(feature)


# ---------------------------------------------------------------- helpers
def _w(feature: FeatureSpec) -> int:
    return int(feature.window)  # type: ignore[arg-type]


def _seg(expr: pl.Expr) -> pl.Expr:
    # The frame is sorted by segment and segments are numbered in row order, so the groups' results
    # laid end to end ("explode") are already in row order: no scatter back is needed.
    return expr.over(SEGMENT, mapping_strategy="explode")


def _log_close() -> pl.Expr:
    return pl.col("close").log()


def _step() -> pl.Expr:
    # One-bar log return; the first bar of a segment has none (its predecessor is missing).
    return _log_close().diff()


def _return(window: int) -> pl.Expr:
    return _seg(_log_close() - _log_close().shift(window))


def _ema(expr: pl.Expr, span: int) -> pl.Expr:
    # Recursive, so it remembers its whole segment; no value until `span` bars have been seen.
    return expr.ewm_mean(span=span, adjust=False, min_samples=span)


# ---------------------------------------------------------------- returns
@register("log_return")
def _log_return(feature: FeatureSpec) -> pl.Expr:
    return _return(_w(feature))


# ---------------------------------------------------------------- volatility and range
@register("realized_vol")
def _realized_vol(feature: FeatureSpec) -> pl.Expr:
    return _seg(_step().rolling_std(_w(feature)))


@register("range_mean")
def _range_mean(feature: FeatureSpec) -> pl.Expr:
    return _seg(((pl.col("high") - pl.col("low")) / pl.col("close")).rolling_mean(_w(feature)))


@register("parkinson_vol")
def _parkinson_vol(feature: FeatureSpec) -> pl.Expr:
    # Parkinson (1980): per-bar variance from the high-low range, sqrt(mean(ln(H/L)^2) / (4 ln 2)).
    squared = (pl.col("high") / pl.col("low")).log().pow(2)
    return _seg((squared.rolling_mean(_w(feature)) / (4.0 * math.log(2.0))).sqrt())


@register("garman_klass_vol")
def _garman_klass_vol(feature: FeatureSpec) -> pl.Expr:
    # Garman-Klass (1980): 0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2 per bar, averaged. Each term is >= 0
    # (|ln(C/O)| <= ln(H/L)), but a sliding-sum mean can round a zero to a tiny negative: clip it.
    hl = (pl.col("high") / pl.col("low")).log().pow(2)
    co = (pl.col("close") / pl.col("open")).log().pow(2)
    per_bar = 0.5 * hl - (2.0 * math.log(2.0) - 1.0) * co
    return _seg(per_bar.rolling_mean(_w(feature)).clip(lower_bound=0.0).sqrt())


@register("vol_ratio")
def _vol_ratio(feature: FeatureSpec) -> pl.Expr:
    # Volatility regime: realised vol over `window` bars relative to that over 4 x `window` bars.
    window = _w(feature)
    return _seg(_step().rolling_std(window) / _step().rolling_std(4 * window))


@register("true_range_mean")
def _true_range_mean(feature: FeatureSpec) -> pl.Expr:
    # Average true range relative to the close; the first bar of a segment has no previous close.
    previous = pl.col("close").shift(1)
    true_range = pl.max_horizontal(
        pl.col("high") - pl.col("low"), (pl.col("high") - previous).abs(), (pl.col("low") - previous).abs()
    )
    return _seg(pl.when(previous.is_not_null()).then(true_range).rolling_mean(_w(feature)) / pl.col("close"))


# ---------------------------------------------------------------- volume
@register("volume_zscore")
def _volume_zscore(feature: FeatureSpec) -> pl.Expr:
    volume = pl.col("volume").log1p()
    mean = volume.rolling_mean(_w(feature))
    std = volume.rolling_std(_w(feature))
    return _seg((volume - mean) / std)


@register("relative_volume")
def _relative_volume(feature: FeatureSpec) -> pl.Expr:
    return _seg(pl.col("volume") / pl.col("volume").rolling_mean(_w(feature)))


@register("signed_volume_ratio")
def _signed_volume_ratio(feature: FeatureSpec) -> pl.Expr:
    # Buying or selling pressure: volume signed by the bar's direction (close vs open), over all volume.
    signed = (pl.col("close") - pl.col("open")).sign() * pl.col("volume")
    window = _w(feature)
    return _seg(signed.rolling_sum(window) / pl.col("volume").rolling_sum(window))


@register("amihud_illiquidity")
def _amihud_illiquidity(feature: FeatureSpec) -> pl.Expr:
    # Amihud (2002): mean |return| per unit of traded notional, on a log scale (notional spans decades).
    impact = _step().abs() / (pl.col("close") * pl.col("volume"))
    return _seg((impact.rolling_mean(_w(feature)) * 1e6).log1p())


# ---------------------------------------------------------------- trend
@register("ema_distance")
def _ema_distance(feature: FeatureSpec) -> pl.Expr:
    return _seg(pl.col("close") / _ema(pl.col("close"), _w(feature)) - 1.0)


@register("sma_distance")
def _sma_distance(feature: FeatureSpec) -> pl.Expr:
    return _seg(pl.col("close") / pl.col("close").rolling_mean(_w(feature)) - 1.0)


@register("trend_slope")
def _trend_slope(feature: FeatureSpec) -> pl.Expr:
    # Least-squares slope of log close on the bar index over the window, per bar: a fixed-weight sum
    # sum_k (k - mean k) y_k / sum_k (k - mean k)^2, exact and numerically stable.
    # A window of 1 has no slope: 0/0, which the build turns into null.
    window = _w(feature)
    centre = (window - 1) / 2.0
    weights = [k - centre for k in range(window)]
    scale = sum(w * w for w in weights)
    return _seg(_log_close().rolling_sum(window, weights=weights) / scale)


@register("macd")
def _macd(feature: FeatureSpec) -> pl.Expr:
    # MACD-like: EMA(window) - EMA(2 x window) of the close, relative to the close.
    window = _w(feature)
    return _seg((_ema(pl.col("close"), window) - _ema(pl.col("close"), 2 * window)) / pl.col("close"))


@register("macd_histogram")
def _macd_histogram(feature: FeatureSpec) -> pl.Expr:
    # The MACD line minus its signal line, an EMA over ceil(0.75 x window) bars (12/26/9 scaled).
    window = _w(feature)
    line = (_ema(pl.col("close"), window) - _ema(pl.col("close"), 2 * window)) / pl.col("close")
    return _seg(line - _ema(line, max(1, math.ceil(0.75 * window))))


@register("drawdown_from_high")
def _drawdown_from_high(feature: FeatureSpec) -> pl.Expr:
    return _seg(1.0 - pl.col("close") / pl.col("close").rolling_max(_w(feature)))


@register("channel_width")
def _channel_width(feature: FeatureSpec) -> pl.Expr:
    window = _w(feature)
    return _seg((pl.col("high").rolling_max(window) - pl.col("low").rolling_min(window)) / pl.col("close"))


@register("price_zscore")
def _price_zscore(feature: FeatureSpec) -> pl.Expr:
    window = _w(feature)
    close = pl.col("close")
    return _seg((close - close.rolling_mean(window)) / close.rolling_std(window))


# ---------------------------------------------------------------- oscillators
@register("rsi")
def _rsi(feature: FeatureSpec) -> pl.Expr:
    change = pl.col("close").diff()
    gain = change.clip(lower_bound=0.0).rolling_mean(_w(feature))
    loss = (-change).clip(lower_bound=0.0).rolling_mean(_w(feature))
    return _seg(gain / (gain + loss))


def _stochastic_k(window: int) -> pl.Expr:
    lowest = pl.col("low").rolling_min(window)
    return (pl.col("close") - lowest) / (pl.col("high").rolling_max(window) - lowest)


@register("stochastic_k")
def _stochastic_k_builder(feature: FeatureSpec) -> pl.Expr:
    return _seg(_stochastic_k(_w(feature)))


@register("stochastic_d")
def _stochastic_d(feature: FeatureSpec) -> pl.Expr:
    # %D: the 3-bar mean of %K.
    return _seg(_stochastic_k(_w(feature)).rolling_mean(3))


# ---------------------------------------------------------------- calendar (UTC)
def _phase(period_ms: int, offset_ms: int = 0) -> pl.Expr:
    return ((pl.col("ts") + offset_ms) % period_ms).cast(pl.Float64) * (2.0 * math.pi / period_ms)


@register("hour_sin", needs_window=False, inputs="clock")
def _hour_sin(feature: FeatureSpec) -> pl.Expr:
    return _phase(_DAY_MS).sin()


@register("hour_cos", needs_window=False, inputs="clock")
def _hour_cos(feature: FeatureSpec) -> pl.Expr:
    return _phase(_DAY_MS).cos()


@register("dow_sin", needs_window=False, inputs="clock")
def _dow_sin(feature: FeatureSpec) -> pl.Expr:
    return _phase(_WEEK_MS, _MONDAY_OFFSET_MS).sin()


@register("dow_cos", needs_window=False, inputs="clock")
def _dow_cos(feature: FeatureSpec) -> pl.Expr:
    return _phase(_WEEK_MS, _MONDAY_OFFSET_MS).cos()


# ---------------------------------------------------------------- gaps
@register("is_gap", needs_window=False, inputs="timeline")
def _is_gap(feature: FeatureSpec) -> pl.Expr:
    return pl.col(GAP)


@register("bars_since_gap", inputs="timeline")
def _bars_since_gap(feature: FeatureSpec) -> pl.Expr:
    # Capped at `window` so that the feature stays stationary on long gap-free stretches.
    return pl.min_horizontal(pl.col(BAR_IN_SEGMENT), pl.lit(_w(feature)))


# ---------------------------------------------------------------- cross-asset context
@register("symbol_log_return", needs_symbol=True)
def _symbol_log_return(feature: FeatureSpec) -> Staged:
    # The named symbol's return at the same bar, broadcast to every symbol by ts; null for every
    # symbol at a ts where the named symbol has no bar (or is warming up after a gap).
    is_named = pl.col("symbol") == feature.symbol

    def outer(inner: pl.Expr) -> pl.Expr:
        return pl.col("ts").replace_strict(
            pl.col("ts").filter(is_named), inner.filter(is_named), default=None, return_dtype=pl.Float64
        )

    return Staged(_return(_w(feature)), outer)


@register("market_return")
def _market_return(feature: FeatureSpec) -> Staged:
    # Equal-weighted mean return of the symbols with a value at the same ts.
    return Staged(_return(_w(feature)), lambda inner: inner.mean().over("ts"))


@register("relative_return")
def _relative_return(feature: FeatureSpec) -> Staged:
    return Staged(_return(_w(feature)), lambda inner: inner - inner.mean().over("ts"))


@register("market_breadth")
def _market_breadth(feature: FeatureSpec) -> Staged:
    # Share of the symbols with a value at the same ts whose return over the window is positive.
    return Staged(_return(_w(feature)), lambda inner: (inner > 0.0).cast(pl.Float64).mean().over("ts"))


@register("cluster_momentum", needs_clusters=True)
def _cluster_momentum(feature: FeatureSpec) -> Staged:
    # Mean return over the window of the symbol's cluster (the symbol included) at the same ts.
    return Staged(_return(_w(feature)), lambda inner: inner.mean().over("ts", CLUSTER))


@register("cross_sectional_rank")
def _cross_sectional_rank(feature: FeatureSpec) -> Staged:
    # Rank of the return among the symbols with a value at the same ts, ties averaged, scaled to
    # [0, 1]; null when only one symbol has a value (0/0).
    def outer(inner: pl.Expr) -> pl.Expr:
        return ((inner.rank("average") - 1.0) / (inner.count() - 1)).over("ts")

    return Staged(_return(_w(feature)), outer)
