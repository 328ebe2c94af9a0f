"""Cost-aware admission: what an action is expected to earn over the model's horizon against what it costs.

Pure functions of values (ADR-027, ADR-028). The model's ``expected_return`` is the forward log return over
the label horizon *net of the label's round-trip cost* (ADR-007), so the gross expected move is
``expected_return + label_cost``. An action is priced in *legs*: one leg is one order's taker fee plus its
slippage under the execution config's model (half-spread plus the size term on the decision bar's volume,
capped), as a fraction of the order's notional.

=================  ====================================  ===================================================
action             edge (fraction of the notional)        legs it must pay
=================  ====================================  ===================================================
enter, reenter     gross expected move                    2 (this buy and the sell that closes it), plus 1
                                                          when it follows a sell of the symbol within the
                                                          horizon (churn: the sell just paid is wasted)
scale_out          minus the gross expected move          2 (this sell and the buy back a campaign expects),
                   (the loss it avoids)                   plus 1 inside the minimum expected holding
exit inside the    minus the gross expected move          2 (the buy it cuts short and this sell)
minimum holding
=================  ====================================  ===================================================

The action clears when ``edge > legs x leg + margin``, the margin being a profile parameter (>= 0). Full
exits after the minimum expected holding, recovery decisions (severe-loss handling) and ``none`` are not
priced: the way out is never blocked by its cost. The minimum expected holding is the model's label horizon
measured from the symbol's last buy; it never causes a sale (it only restrains one), so it is not a timer.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from execution.brokers.simulated import SlippageModel


class CostReason(str, enum.Enum):
    """Why a decision's edge did or did not have to clear its cost, and whether it did."""

    EDGE_CLEARS_COST = "EDGE_CLEARS_COST"
    EDGE_BELOW_COST = "EDGE_BELOW_COST"
    CHURN_BELOW_COST = "CHURN_BELOW_COST"
    INSIDE_MIN_HOLDING = "INSIDE_MIN_HOLDING"
    NOT_PRICED = "NOT_PRICED"


@dataclass(frozen=True)
class EdgeBasis:
    """What pricing needs from the model: its horizon in event time and the cost its labels are net of."""

    horizon_ms: int
    label_cost: float

    def __post_init__(self) -> None:
        if self.horizon_ms < 1:
            raise ValueError(f"'horizon_ms' must be >= 1, was {self.horizon_ms}")
        if not 0.0 <= self.label_cost < 1.0:
            raise ValueError(f"'label_cost' must be >= 0 and < 1, was {self.label_cost}")


@dataclass(frozen=True)
class Pricing:
    """One priced decision: ``edge`` against ``cost`` (= ``legs`` x one leg) plus ``margin``."""

    edge: float
    cost: float
    margin: float
    legs: int
    reason: CostReason

    @property
    def clears(self) -> bool:
        return self.reason is CostReason.EDGE_CLEARS_COST


def leg_cost(fee_rate: float, slippage: SlippageModel, notional: float, bar_usd: float | None) -> float:
    """Return one order's cost as a fraction of its notional: the fee plus the slippage model's bps."""
    return fee_rate + slippage.bps(notional, bar_usd) / 10_000.0


def price(
    gross_move: float, buys: bool, legs: int, leg: float, margin: float, short_reason: CostReason
) -> Pricing:
    """Price an action: a buy earns ``gross_move``, a sell earns ``-gross_move``; a missing move never clears.

    ``short_reason`` is the reason recorded when the edge falls short (plain, churn or minimum holding).
    """
    edge = gross_move if buys else -gross_move
    cost = legs * leg
    clears = not math.isnan(edge) and edge > cost + margin
    return Pricing(edge, cost, margin, legs, CostReason.EDGE_CLEARS_COST if clears else short_reason)


@dataclass(frozen=True)
class FoldCalibration:
    """The out-of-fold line ``edge = intercept + slope x expected_return`` a fold's rows are priced with."""

    fold: int
    start_ms: int
    rows: int
    intercept: float
    slope: float


def calibrate_edge(
    expected: np.ndarray, realised: np.ndarray, fold: np.ndarray, ts_ms: np.ndarray, horizon_ms: int
) -> tuple[np.ndarray, tuple[FoldCalibration, ...]]:
    """Return the expected net return each row is priced with, calibrated out of fold, and the fitted lines.

    ``expected``, ``realised`` (the net label return) and ``fold`` (the walk-forward fold that predicted the
    row, NaN outside every test span) are ``(time, symbol)`` matrices; ``ts_ms`` the row times. The rows of a
    fold are priced with a least-squares line of ``realised`` on ``expected`` fitted only on earlier predicted
    rows whose label was fully realised before the fold's first row (``ts + horizon_ms <= start``), so no
    label a decision could not have seen is used. The slope is kept within [0, 1]: a model whose outputs did
    not rank returns earns no edge beyond the realised mean, and an edge is never amplified. A fold with no
    such history (the first one) gets no edge at all (NaN: nothing clears its cost).
    """
    out = np.full(expected.shape, np.nan)
    lines: list[FoldCalibration] = []
    predicted = np.isfinite(fold)
    known = predicted & np.isfinite(expected) & np.isfinite(realised)
    for k in np.unique(fold[predicted]):
        rows = fold == k
        start = int(ts_ms[rows.any(axis=1)].min())
        use = known & (ts_ms + horizon_ms <= start)[:, None]
        x, y = expected[use], realised[use]
        if x.size < 2 or not float(x.max() - x.min()) > 0.0:
            continue
        slope = min(max(float(np.mean((x - x.mean()) * (y - y.mean()))) / float(x.var()), 0.0), 1.0)
        intercept = float(y.mean()) - slope * float(x.mean())
        out[rows] = intercept + slope * expected[rows]
        lines.append(FoldCalibration(int(k), start, int(x.size), intercept, slope))
    return out, tuple(lines)
