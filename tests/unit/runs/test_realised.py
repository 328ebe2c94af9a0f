"""The out-of-fold calibration's realised returns from the close matrix equal the label join's, bit for bit."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.data.simulator import simulate_ohlcv
from backend.runs.runner import align_column, place, realised_from_close, realised_matrix

COLUMNS = ["ts", "symbol", "open", "high", "low", "close", "volume"]


@pytest.mark.parametrize("horizon", [1, 12])
def test_realised_returns_from_the_close_matrix_are_the_labels_bit_for_bit(horizon: int) -> None:
    spec = small_spec(f"training.label.horizon_bars={horizon}")
    bars = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, 600, spec.seed).select(COLUMNS)
    times = bars["ts"].unique().sort().to_numpy()
    late, last = spec.symbols[0], spec.symbols[-1]
    # A late-listed symbol, one that stops early, a hole of missing bars, a zero close and a NaN close.
    bars = bars.filter(
        ~((pl.col("symbol") == late) & (pl.col("ts") < int(times[100])))
        & ~((pl.col("symbol") == last) & (pl.col("ts") >= int(times[500])))
        & ~((pl.col("symbol") == spec.symbols[1]) & pl.col("ts").is_between(int(times[200]), int(times[230])))
    ).with_columns(
        close=pl.when((pl.col("symbol") == spec.symbols[1]) & (pl.col("ts") == int(times[300]))).then(0.0)
        .when((pl.col("symbol") == spec.symbols[2]) & (pl.col("ts") == int(times[310]))).then(float("nan"))
        .otherwise(pl.col("close"))
    )  # fmt: skip
    times = bars["ts"].unique().sort().to_numpy()[5:]  # the matrix may start after the first bar
    bars = bars.filter(pl.col("ts") >= int(times[0]))
    code = {s: i for i, s in enumerate(spec.symbols)}
    close = align_column(bars, "close", place(bars, times, code), (len(times), len(spec.symbols)))

    ours = realised_from_close(spec, close, times, 0.0013)

    expected = realised_matrix(spec, bars, times, spec.symbols, 0.0013)
    assert ours.tobytes() == expected.tobytes()
    assert np.isnan(ours).sum() > horizon * len(spec.symbols)
