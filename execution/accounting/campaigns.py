"""Realised and unrealised PnL per campaign and per position, recomputed from the ledger alone.

The ledger is replayed with the portfolio's own cost-basis rule (average cost per symbol, buy fees in
the basis, sell fees out of the proceeds, the basis taken out quantised like ``Portfolio.apply``), so:

* the realised PnL of all rows sums exactly to ``Portfolio.realized_pnl``;
* the unrealised PnL of all rows equals ``sum(qty_i * mark_i) - sum(cost_basis_i)`` exactly, that is
  market value minus open cost basis, and realised plus unrealised equals
  ``cash + sum(qty_i * mark_i) - initial_cash`` (the Decimal mark-to-market equity minus the start).

A sell is attributed to its fill's campaign. The per-campaign split is exact when a symbol's position
belongs to one campaign at a time (the engine's rule); if two campaigns shared a symbol, the basis a sell
takes out is the symbol's average cost, and only the totals stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from execution.accounting.portfolio import CENT, Fill, to_decimal


@dataclass(frozen=True)
class CampaignPnl:
    """One campaign's trading in one symbol: quantities, fees and PnL (Decimal, fees included)."""

    campaign_id: str | None
    symbol: str
    first_ts: int
    last_ts: int
    fills: int
    bought_qty: Decimal
    sold_qty: Decimal
    open_qty: Decimal
    fees: Decimal
    open_cost_basis: Decimal
    realised: Decimal
    unrealised: Decimal

    @property
    def total(self) -> Decimal:
        return self.realised + self.unrealised


@dataclass(frozen=True)
class PositionPnl:
    """One symbol's PnL over every campaign that traded it."""

    symbol: str
    open_qty: Decimal
    fees: Decimal
    realised: Decimal
    unrealised: Decimal

    @property
    def total(self) -> Decimal:
        return self.realised + self.unrealised


@dataclass
class _Open:
    first_ts: int
    last_ts: int = 0
    fills: int = 0
    bought: Decimal = Decimal(0)
    sold: Decimal = Decimal(0)
    qty: Decimal = Decimal(0)
    basis: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    realised: Decimal = Decimal(0)


def campaign_pnl(ledger: Iterable[Fill], marks: Mapping[str, float]) -> list[CampaignPnl]:
    """Return PnL per (campaign, symbol), in order of each pair's first fill.

    ``marks`` maps a symbol to its last price; only symbols with an open quantity need one.

    Raises
    ------
    KeyError
        When a symbol still held has no mark.
    """
    sym_qty: dict[str, Decimal] = {}
    sym_basis: dict[str, Decimal] = {}
    rows: dict[tuple[str | None, str], _Open] = {}
    for fill in ledger:
        row = rows.setdefault((fill.campaign_id, fill.symbol), _Open(first_ts=fill.ts_ms))
        row.last_ts = fill.ts_ms
        row.fills += 1
        row.fees += fill.fee
        if fill.side == "buy":
            cost = fill.notional + fill.fee
            sym_qty[fill.symbol] = sym_qty.get(fill.symbol, Decimal(0)) + fill.qty
            sym_basis[fill.symbol] = sym_basis.get(fill.symbol, Decimal(0)) + cost
            row.bought += fill.qty
            row.qty += fill.qty
            row.basis += cost
        else:
            share = fill.qty / sym_qty[fill.symbol]
            basis_out = (sym_basis[fill.symbol] * share).quantize(CENT, rounding=ROUND_HALF_EVEN)
            sym_qty[fill.symbol] -= fill.qty
            sym_basis[fill.symbol] -= basis_out
            row.sold += fill.qty
            row.qty -= fill.qty
            row.basis -= basis_out
            row.realised += fill.notional - fill.fee - basis_out
    out = []
    for (campaign_id, symbol), row in rows.items():
        value = row.qty * to_decimal(marks[symbol]) if row.qty else Decimal(0)
        out.append(
            CampaignPnl(
                campaign_id, symbol, row.first_ts, row.last_ts, row.fills, row.bought, row.sold, row.qty,
                row.fees, row.basis, row.realised, value - row.basis,
            )  # fmt: skip
        )
    return out


def position_pnl(rows: Sequence[CampaignPnl]) -> list[PositionPnl]:
    """Sum campaign rows per symbol, sorted by symbol."""
    totals: dict[str, PositionPnl] = {}
    for r in rows:
        p = totals.get(r.symbol, PositionPnl(r.symbol, Decimal(0), Decimal(0), Decimal(0), Decimal(0)))
        totals[r.symbol] = PositionPnl(
            r.symbol, p.open_qty + r.open_qty, p.fees + r.fees, p.realised + r.realised, p.unrealised + r.unrealised
        )
    return [totals[s] for s in sorted(totals)]


def campaign_totals(rows: Sequence[CampaignPnl]) -> dict[str, Decimal]:
    """Return realised plus unrealised PnL per campaign id (over its symbols); fills without a campaign are left out."""
    totals: dict[str, Decimal] = {}
    for r in rows:
        if r.campaign_id is not None:
            totals[r.campaign_id] = totals.get(r.campaign_id, Decimal(0)) + r.total
    return totals
