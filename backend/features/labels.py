"""Training labels, kept apart from features: they look forward by design and never feed a decision."""

from __future__ import annotations

import polars as pl


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
