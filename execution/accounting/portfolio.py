"""A cash-only portfolio: Decimal cash and quantities for the ledger, float mirrors for fast marks.

Money is Decimal (the ledger must reconcile exactly); the float arrays exist so that marking
30 positions on every bar stays a single vector operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

import numpy as np

CENT = Decimal("0.00000001")
QTY = Decimal("0.00000001")


def to_decimal(value: float, step: Decimal = CENT, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Convert a float to a Decimal on a fixed grid, deterministically."""
    return Decimal(repr(float(value))).quantize(step, rounding=rounding)


@dataclass(frozen=True)
class Fill:
    """An executed trade: quantity and price, with the fee charged in USD, and the campaign it belongs to."""

    order_id: str
    ts_ms: int
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    campaign_id: str | None = None

    @property
    def notional(self) -> Decimal:
        return (self.qty * self.price).quantize(CENT, rounding=ROUND_HALF_EVEN)


class Portfolio:
    """Cash, positions and the ledger of every fill and fee."""

    def __init__(self, symbols: tuple[str, ...], initial_cash: float) -> None:
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        self.initial_cash = to_decimal(initial_cash)
        self.cash = self.initial_cash
        self.qty = [Decimal(0)] * len(symbols)
        self.cost_basis = [Decimal(0)] * len(symbols)
        self.qty_f = np.zeros(len(symbols))
        self.entry_price_f = np.full(len(symbols), np.nan)
        self.realized_pnl = Decimal(0)
        self.fees_paid = Decimal(0)
        self.ledger: list[Fill] = []

    def max_affordable_qty(self, price: Decimal, fee_rate: Decimal) -> Decimal:
        """Return the largest quantity that cash pays for at ``price``, fee included."""
        if self.cash <= 0:
            return Decimal(0)
        return (self.cash / (price * (1 + fee_rate))).quantize(QTY, rounding=ROUND_DOWN)

    def apply(self, fill: Fill) -> None:
        """Book a fill: move cash, quantity and cost basis, and append it to the ledger."""
        i = self.index[fill.symbol]
        if fill.side == "buy":
            self.cash -= fill.notional + fill.fee
            self.cost_basis[i] += fill.notional + fill.fee
            self.qty[i] += fill.qty
        else:
            share = fill.qty / self.qty[i]
            basis_out = (self.cost_basis[i] * share).quantize(CENT, rounding=ROUND_HALF_EVEN)
            self.cash += fill.notional - fill.fee
            self.realized_pnl += fill.notional - fill.fee - basis_out
            self.cost_basis[i] -= basis_out
            self.qty[i] -= fill.qty
        self.fees_paid += fill.fee
        self.qty_f[i] = float(self.qty[i])
        self.entry_price_f[i] = float(self.cost_basis[i] / self.qty[i]) if self.qty[i] > 0 else np.nan
        self.ledger.append(fill)

    def reconciles(self) -> bool:
        """Return True when replaying the ledger from the initial cash gives the current cash exactly."""
        cash = self.initial_cash
        for fill in self.ledger:
            cash += -(fill.notional + fill.fee) if fill.side == "buy" else fill.notional - fill.fee
        return cash == self.cash
