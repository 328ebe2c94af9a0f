"""Training labels, kept apart from features: they look forward by design and never feed a decision."""

from __future__ import annotations

import polars as pl


def forward_return_labels(bars: pl.DataFrame, horizon_bars: int, round_trip_cost: float) -> pl.DataFrame:
    """Return ``(ts, symbol, label_return, label_up)`` for a frame sorted by ``(ts, symbol)``.

    ``label_return`` is the log return from this bar's close to the close ``horizon_bars`` later,
    net of ``round_trip_cost`` (a fraction: fees and slippage in and out); ``label_up`` is 1.0
    when that net return is positive. The last ``horizon_bars`` bars of each symbol have no label.
    """
    log_close = pl.col("close").log()
    gross = (log_close.shift(-horizon_bars) - log_close).over("symbol")
    frame = bars.sort(["symbol", "ts"]).select(
        "ts", "symbol", (gross - round_trip_cost).alias("label_return")
    )
    frame = frame.with_columns(
        pl.when(pl.col("label_return").is_null())
        .then(None)
        .otherwise((pl.col("label_return") > 0).cast(pl.Float64))
        .alias("label_up")
    )
    return frame.sort(["ts", "symbol"])
