"""The simulated broker: market orders fill at the next bar's open, with slippage and taker fees."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from execution.accounting.portfolio import CENT, Fill, Portfolio, to_decimal


@dataclass(frozen=True)
class MarketOrder:
    """An admitted order waiting for the next bar of its symbol."""

    order_id: str
    symbol: str
    side: str
    qty: Decimal
    campaign_id: str | None = None


class SimulatedBroker:
    """Fills pending market orders against the next bar's open, never beyond available cash."""

    def __init__(self, fee_bps: float, slippage_bps: float) -> None:
        self.fee_rate = Decimal(repr(fee_bps)) / Decimal(10_000)
        self.slippage = slippage_bps / 10_000.0
        self.pending: list[MarketOrder] = []

    def submit(self, order: MarketOrder) -> None:
        """Queue ``order`` for the next bar of its symbol."""
        self.pending.append(order)

    def on_bar(self, ts_ms: int, open_prices: np.ndarray, has_bar: np.ndarray, portfolio: Portfolio) -> list[Fill]:
        """Fill every pending order whose symbol has a bar now, in submission order."""
        fills, waiting = [], []
        for order in self.pending:
            i = portfolio.index[order.symbol]
            if not has_bar[i]:
                waiting.append(order)
                continue
            direction = 1.0 if order.side == "buy" else -1.0
            price = to_decimal(open_prices[i] * (1.0 + direction * self.slippage))
            qty = order.qty
            if order.side == "buy":
                # Cash only: the fill shrinks to what cash pays for if the price moved against us.
                qty = min(qty, portfolio.max_affordable_qty(price, self.fee_rate))
            else:
                qty = min(qty, portfolio.qty[i])
            if qty <= 0:
                continue
            fee = (qty * price * self.fee_rate).quantize(CENT, rounding=ROUND_HALF_EVEN)
            fill = Fill(order.order_id, ts_ms, order.symbol, order.side, qty, price, fee, order.campaign_id)
            portfolio.apply(fill)
            fills.append(fill)
        self.pending = waiting
        return fills

    def pending_notional(self, marks: np.ndarray, index: dict[str, int]) -> np.ndarray:
        """Return pending buy notional per symbol at ``marks`` (open orders count toward exposure)."""
        out = np.zeros(len(marks))
        for order in self.pending:
            if order.side == "buy":
                out[index[order.symbol]] += float(order.qty) * marks[index[order.symbol]]
        return out
