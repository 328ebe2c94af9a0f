"""Market events: one batch per timestamp, holding every symbol's bar (or its absence)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BarBatch:
    """All bars that closed at one timestamp, aligned to the run's symbol order.

    ``has_bar`` is False where a symbol has no bar (a gap): its prices are NaN and nothing is
    evaluated for it. ``pred`` and ``feat`` hold the model outputs and features per symbol.
    ``matrix`` is the matrix a backtest batch is row ``index`` of (None for a live batch): the
    engine evaluates state-independent guards over the whole matrix once, ahead of the loop.
    """

    index: int
    ts_ms: int
    open: np.ndarray
    close: np.ndarray
    has_bar: np.ndarray
    pred: Mapping[str, np.ndarray]
    feat: Mapping[str, np.ndarray]
    matrix: MarketMatrix | None = None


@dataclass(frozen=True)
class MarketMatrix:
    """A run's inputs as aligned ``(time, symbol)`` matrices: the backtest and replay event source."""

    ts_ms: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    close: np.ndarray
    has_bar: np.ndarray
    pred: Mapping[str, np.ndarray]
    feat: Mapping[str, np.ndarray]

    def batches(self) -> Iterator[BarBatch]:
        """Yield one batch per timestamp, in time order (row views, no copies)."""
        pred_items = tuple(self.pred.items())
        feat_items = tuple(self.feat.items())
        for t in range(len(self.ts_ms)):
            yield BarBatch(
                t,
                int(self.ts_ms[t]),
                self.open[t],
                self.close[t],
                self.has_bar[t],
                {k: v[t] for k, v in pred_items},
                {k: v[t] for k, v in feat_items},
                self,
            )
