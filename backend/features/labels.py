"""Training labels, kept apart from features: they look forward by design and never feed a decision."""

from __future__ import annotations

import polars as pl

from backend.errors import ConfigError


def forward_return_labels(bars: pl.DataFrame, horizon_bars: int, round_trip_cost: float, bar_ms: int) -> pl.DataFrame:
    """Return ``(ts, symbol, label_return, label_up)`` sorted by ``(ts, symbol)``.

    ``label_return`` is the log return from this bar's close to the close exactly
    ``horizon_bars x bar_ms`` later, net of ``round_trip_cost`` (a fraction: fees and slippage in
    and out); ``label_up`` is 1.0 when that net return is positive. The horizon is measured in
    time, not rows, so a gap never stretches a label past the purge: when the bar at the horizon
    is missing, the label is null.
    """
    future = bars.select(
        (pl.col("ts") - horizon_bars * bar_ms).alias("ts"), "symbol", pl.col("close").alias("future_close")
    )
    frame = bars.select("ts", "symbol", "close").join(future, on=["ts", "symbol"], how="left")
    frame = frame.select(
        "ts",
        "symbol",
        ((pl.col("future_close").log() - pl.col("close").log()) - round_trip_cost).alias("label_return"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("label_return").is_null())
        .then(None)
        .otherwise((pl.col("label_return") > 0).cast(pl.Float64))
        .alias("label_up")
    )
    return frame.sort(["ts", "symbol"])


def recovery_labels(
    bars: pl.DataFrame, horizon_bars: int, lookback_bars: int, recover_fraction: float, bar_ms: int
) -> pl.DataFrame:
    """Return ``(ts, symbol, label_recover, adverse_depth)`` sorted by ``(ts, symbol)``.

    ``adverse_depth`` is the trailing drawdown ``1 - close / max(close)`` over the bars of the last
    ``lookback_bars x bar_ms`` (this bar included): point-in-time, measured in time, so a gap never
    stretches it; at the start of a series it uses the history there is. ``label_recover`` is 1.0
    when some close of the next ``horizon_bars`` bars reaches
    ``close + recover_fraction x (max - close)``, else 0.0. It is null when the horizon is not fully
    observed (any of its ``horizon_bars`` bars, each exactly ``bar_ms`` apart, is missing), or when
    ``adverse_depth`` is 0 (nothing to recover).

    Raises
    ------
    ConfigError
        When a parameter is out of its bounds (named with the bound and the value).
    """
    for name, value in (("horizon_bars", horizon_bars), ("lookback_bars", lookback_bars), ("bar_ms", bar_ms)):
        if value < 1:
            raise ConfigError(f"'{name}' must be >= 1, was {value}")
    if not 0.0 < recover_fraction <= 1.0:
        raise ConfigError(f"'recover_fraction' must be in (0, 1], was {recover_fraction}")
    frame = bars.select("ts", "symbol", "close").sort("symbol", "ts")
    high = pl.col("close").rolling_max_by("ts", window_size=f"{lookback_bars * bar_ms}i")
    # The best close of the next horizon_bars rows, valid only when the row horizon_bars ahead is
    # exactly horizon_bars x bar_ms later: ts is strictly increasing, so no bar in between is missing.
    ahead = pl.col("close").rolling_max(horizon_bars).shift(-horizon_bars)
    observed = pl.col("ts").shift(-horizon_bars) == pl.col("ts") + horizon_bars * bar_ms
    frame = frame.with_columns(
        high.over("symbol").alias("_high"),
        pl.when(observed).then(ahead).over("symbol").alias("_ahead"),
    )
    target = pl.col("close") + recover_fraction * (pl.col("_high") - pl.col("close"))
    frame = frame.select(
        "ts",
        "symbol",
        pl.when(pl.col("_high") > pl.col("close"))
        .then((pl.col("_ahead") >= target).cast(pl.Float64))
        .alias("label_recover"),
        (1.0 - pl.col("close") / pl.col("_high")).alias("adverse_depth"),
    )
    return frame.sort(["ts", "symbol"])
