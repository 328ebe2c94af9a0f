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
    ``volume`` is each bar's traded volume in base units (None when the source records none): the
    simulated broker sizes slippage by it.
    """

    index: int
    ts_ms: int
    open: np.ndarray
    close: np.ndarray
    has_bar: np.ndarray
    pred: Mapping[str, np.ndarray]
    feat: Mapping[str, np.ndarray]
    matrix: MarketMatrix | None = None
    volume: np.ndarray | None = None


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
    volume: np.ndarray | None = None

    def batch(self, t: int, attached: bool = True) -> BarBatch:
        """Return row ``t`` as a batch (row views, no copies); ``attached=False`` leaves out the matrix (a live event)."""
        return BarBatch(
            t,
            int(self.ts_ms[t]),
            self.open[t],
            self.close[t],
            self.has_bar[t],
            {k: v[t] for k, v in self.pred.items()},
            {k: v[t] for k, v in self.feat.items()},
            self if attached else None,
            None if self.volume is None else self.volume[t],
        )

    def batches(self) -> Iterator[BarBatch]:
        """Yield one batch per timestamp, in time order (row views, no copies)."""
        for t in range(len(self.ts_ms)):
            yield self.batch(t)
