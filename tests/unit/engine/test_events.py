"""Tests for backend.engine.events: a MarketMatrix yields one aligned BarBatch per timestamp, in order."""

from __future__ import annotations

import numpy as np

from backend.engine.events import BarBatch, MarketMatrix

TS = np.array([1_000, 2_000, 3_000], dtype=np.int64)


def _matrix() -> MarketMatrix:
    shape = (3, 2)
    close = np.arange(6, dtype=float).reshape(shape) + 100.0
    has_bar = np.array([[True, True], [True, False], [False, True]])
    return MarketMatrix(
        ts_ms=TS,
        symbols=("BTC", "ETH"),
        open=close - 0.5,
        close=close,
        has_bar=has_bar,
        pred={"p_up": np.full(shape, 0.6), "expected_return": np.linspace(-0.01, 0.01, 6).reshape(shape)},
        feat={"ret_1": np.arange(6, dtype=float).reshape(shape) / 10.0},
    )


def test_batches_yield_one_batch_per_timestamp_in_time_order() -> None:
    batches = list(_matrix().batches())
    assert [b.index for b in batches] == [0, 1, 2]
    assert [b.ts_ms for b in batches] == [1_000, 2_000, 3_000]
    assert all(isinstance(b, BarBatch) and type(b.ts_ms) is int for b in batches)


def test_batch_rows_align_with_the_matrix_for_every_field() -> None:
    matrix = _matrix()
    for t, batch in enumerate(matrix.batches()):
        np.testing.assert_array_equal(batch.open, matrix.open[t])
        np.testing.assert_array_equal(batch.close, matrix.close[t])
        np.testing.assert_array_equal(batch.has_bar, matrix.has_bar[t])
        assert set(batch.pred) == {"p_up", "expected_return"}
        np.testing.assert_array_equal(batch.pred["expected_return"], matrix.pred["expected_return"][t])
        np.testing.assert_array_equal(batch.feat["ret_1"], matrix.feat["ret_1"][t])


def test_batches_are_row_views_not_copies() -> None:
    matrix = _matrix()
    batch = next(matrix.batches())
    assert np.shares_memory(batch.close, matrix.close)
    assert np.shares_memory(batch.pred["p_up"], matrix.pred["p_up"])
    assert np.shares_memory(batch.feat["ret_1"], matrix.feat["ret_1"])


def test_gaps_are_carried_as_has_bar_false() -> None:
    gaps = [tuple(b.has_bar.tolist()) for b in _matrix().batches()]
    assert gaps == [(True, True), (True, False), (False, True)]


def test_an_empty_matrix_yields_no_batches() -> None:
    empty = MarketMatrix(
        np.array([], dtype=np.int64), ("BTC",), np.empty((0, 1)), np.empty((0, 1)), np.empty((0, 1), dtype=bool), {}, {}
    )
    assert list(empty.batches()) == []


def test_backtest_batches_point_at_their_matrix_and_live_batches_at_none() -> None:
    matrix = _matrix()
    assert all(b.matrix is matrix for b in matrix.batches())
    live = BarBatch(0, 1_000, matrix.open[0], matrix.close[0], matrix.has_bar[0], {}, {})
    assert live.matrix is None


def test_volume_rows_are_carried_when_the_matrix_records_volume_and_none_otherwise() -> None:
    matrix = _matrix()
    assert all(b.volume is None for b in matrix.batches())
    volume = np.arange(6, dtype=float).reshape(3, 2) * 10.0
    with_volume = MarketMatrix(matrix.ts_ms, matrix.symbols, matrix.open, matrix.close, matrix.has_bar, {}, {}, volume)
    rows = [b.volume for b in with_volume.batches()]
    assert all(np.shares_memory(r, volume) for r in rows)
    assert [r.tolist() for r in rows] == volume.tolist()


def test_a_detached_batch_is_a_live_event_with_the_same_row() -> None:
    matrix = _matrix()
    live = matrix.batch(1, attached=False)
    assert live.matrix is None and live.index == 1 and live.ts_ms == 2_000
    np.testing.assert_array_equal(live.close, matrix.close[1])
    np.testing.assert_array_equal(live.pred["p_up"], matrix.pred["p_up"][1])
