"""The simulated broker: market orders fill at the next bar's open, with slippage and taker fees.

Slippage is spread- and size-dependent, in bps of the open, always against the order::

    bps = min(max_bps, half_spread_bps + impact_bps_per_pct_of_bar_volume * 100 * order_usd / bar_usd)

where ``order_usd = qty * open`` and ``bar_usd = open * volume`` of the bar the order fills on. A bar
with zero (or non-finite) volume pays ``max_bps``; a source that records no volume at all pays the
half-spread only (its size term is unknown).
"""

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


@dataclass(frozen=True)
class SlippageModel:
    """Half-spread plus a market-impact term linear in the order's share of the bar's USD volume, capped."""

    half_spread_bps: float
    impact_bps_per_pct_of_bar_volume: float
    max_bps: float

    def bps(self, order_usd: float, bar_usd: float | None) -> float:
        """Return the slippage in bps for an order of ``order_usd`` on a bar that traded ``bar_usd``."""
        if bar_usd is None:
            return min(self.max_bps, self.half_spread_bps)
        if not bar_usd > 0.0:
            return self.max_bps
        impact = self.impact_bps_per_pct_of_bar_volume * 100.0 * order_usd / bar_usd
        return min(self.max_bps, self.half_spread_bps + impact)


class SimulatedBroker:
    """Fills pending market orders against the next bar's open, never beyond available cash."""

    def __init__(self, fee_bps: float, slippage: SlippageModel) -> None:
        self.fee_rate = Decimal(repr(fee_bps)) / Decimal(10_000)
        self.slippage = slippage
        self.pending: list[MarketOrder] = []

    def submit(self, order: MarketOrder) -> None:
        """Queue ``order`` for the next bar of its symbol."""
        self.pending.append(order)

    def on_bar(
        self, ts_ms: int, open_prices: np.ndarray, has_bar: np.ndarray, portfolio: Portfolio, volumes: np.ndarray | None
    ) -> list[Fill]:
        """Fill every pending order whose symbol has a bar now, in submission order.

        ``volumes`` holds each bar's volume in base units (None when the source records none).
        """
        fills, waiting = [], []
        for order in self.pending:
            i = portfolio.index[order.symbol]
            if not has_bar[i]:
                waiting.append(order)
                continue
            direction = 1.0 if order.side == "buy" else -1.0
            open_price = float(open_prices[i])
            bar_usd = None if volumes is None else open_price * float(volumes[i])
            bps = self.slippage.bps(float(order.qty) * open_price, bar_usd)
            price = to_decimal(open_price * (1.0 + direction * bps / 10_000.0))
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
