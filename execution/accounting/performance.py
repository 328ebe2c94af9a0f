"""Performance of an equity curve, and the buy-and-hold curves it is compared with (pure functions).

Returns are simple returns per bar; annualising counts every day of the year (crypto trades every day):
``bars_per_year = 365 days / bar length``. Sharpe is ``mean / std x sqrt(bars_per_year)`` of the bar
returns (risk-free rate 0, population std), Sortino the same mean over the downside deviation
``sqrt(mean(min(r, 0)^2))``; either is None when its denominator is 0 (a flat curve has no Sharpe).
A buy-and-hold curve buys its symbols at their first close in the span, paying one leg of cost (taker fee
plus half-spread) and marks them at every later close (a symbol without a bar keeps its last mark), as the
strategy's equity is marked; neither pays the cost of selling at the end.
"""

from __future__ import annotations

import math

import numpy as np

YEAR_MS = 365 * 86_400_000


def _bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    previous = np.concatenate([[initial], equity[:-1]])
    return equity / previous - 1.0


def max_drawdown(equity: np.ndarray, initial: float) -> float:
    """Return the largest fall from a running peak (the peak starts at ``initial``), as a fraction."""
    peak = np.maximum.accumulate(np.concatenate([[initial], equity]))
    return float(np.max(1.0 - np.concatenate([[initial], equity]) / peak))


def sharpe(equity: np.ndarray, initial: float, bar_ms: int) -> float | None:
    """Return the annualised Sharpe ratio of the bar returns, or None for a curve that never moves."""
    returns = _bar_returns(equity, initial)
    std = float(returns.std())
    return float(returns.mean()) / std * math.sqrt(YEAR_MS / bar_ms) if std > 0.0 else None


def sortino(equity: np.ndarray, initial: float, bar_ms: int) -> float | None:
    """Return the annualised Sortino ratio, or None when no bar lost money."""
    returns = _bar_returns(equity, initial)
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(returns.mean()) / downside * math.sqrt(YEAR_MS / bar_ms) if downside > 0.0 else None


def cagr(equity: np.ndarray, initial: float, bar_ms: int) -> float:
    """Return the compound annual growth rate over the span (``len(equity)`` bars), as a fraction."""
    years = len(equity) * bar_ms / YEAR_MS
    return float((equity[-1] / initial) ** (1.0 / years) - 1.0)


def performance(
    equity: np.ndarray, exposure: np.ndarray, initial: float, bar_ms: int, traded_notional: float, fees: float
) -> dict[str, float | None]:
    """Return the protocol's figures for one curve (percentages as percent, rounded for reports).

    ``exposure`` is the gross value held at each bar's closes; ``turnover`` is the traded notional over the
    mean equity (how many times the book was traded); ``exposure_time_pct`` the share of bars holding anything.
    """
    ratio = exposure / equity
    return {
        "return_pct": round(100.0 * (float(equity[-1]) / initial - 1.0), 4),
        "cagr_pct": round(100.0 * cagr(equity, initial, bar_ms), 4),
        "sharpe": _round(sharpe(equity, initial, bar_ms)),
        "sortino": _round(sortino(equity, initial, bar_ms)),
        "max_drawdown_pct": round(100.0 * max_drawdown(equity, initial), 4),
        "turnover": round(traded_notional / float(equity.mean()), 4),
        "fees_paid": round(fees, 2),
        "exposure_time_pct": round(100.0 * float(np.mean(exposure > 0.0)), 4),
        "avg_exposure_pct": round(100.0 * float(ratio.mean()), 4),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def buy_and_hold(close: np.ndarray, has_bar: np.ndarray, initial: float, leg: float, columns: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (equity, gross exposure, fees-and-spread paid) of ``initial`` split equally over ``columns``.

    Each column's share stays cash until the column's first bar, is then spent on it at that close (one
    ``leg`` of cost, a fraction of the notional) and held. A column with no bar in the span stays cash.
    """
    rows = np.arange(close.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(has_bar, rows, -1), axis=0)
    marks = np.take_along_axis(close, np.maximum(last, 0), axis=0)
    share = initial / len(columns)
    equity = np.zeros(close.shape[0])
    exposure = np.zeros(close.shape[0])
    paid = 0.0
    for j in columns:
        seen = last[:, j] >= 0
        if not seen.any():
            equity += share
            continue
        first = int(np.argmax(seen))
        notional = share / (1.0 + leg)
        qty = notional / float(close[first, j])
        paid += share - notional
        value = np.where(seen, qty * marks[:, j], 0.0)
        equity += np.where(seen, value, share)
        exposure += value
    return equity, exposure, paid
