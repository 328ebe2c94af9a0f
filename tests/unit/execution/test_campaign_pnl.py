"""Tests for execution.accounting.campaigns: realised and unrealised PnL per campaign and per position.

Identities tested, exactly in Decimal:
* sum of realised over all rows == Portfolio.realized_pnl;
* sum of unrealised == sum_i(qty_i * mark_i) - sum_i(cost_basis_i)  (market value minus open cost basis);
* sum of realised + unrealised == cash + sum_i(qty_i * mark_i) - initial_cash  (equity minus the start).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from execution.accounting.campaigns import CampaignPnl, PositionPnl, campaign_pnl, campaign_totals, position_pnl
from execution.accounting.portfolio import Fill, Portfolio, to_decimal
from execution.brokers.simulated import MarketOrder, SimulatedBroker, SlippageModel

D = Decimal
SYMBOLS = ("BTC", "ETH", "SOL")


def test_a_closed_campaign_realises_proceeds_minus_cost_with_both_fees() -> None:
    ledger = [
        Fill("b", 1_000, "ETH", "buy", D(10), D(100), D(4), "c1"),
        Fill("s", 2_000, "ETH", "sell", D(10), D(110), D("4.4"), "c1"),
    ]
    (row,) = campaign_pnl(ledger, {})
    assert row == CampaignPnl("c1", "ETH", 1_000, 2_000, 2, D(10), D(10), D(0), D("8.4"), D(0), D("91.6"), D(0))
    assert row.total == D("91.6")


def test_an_open_campaign_is_marked_at_the_last_mark_after_a_partial_sale() -> None:
    ledger = [
        Fill("b", 1_000, "ETH", "buy", D(10), D(100), D(4), "c1"),
        Fill("s", 2_000, "ETH", "sell", D(4), D(120), D("1.92"), "c1"),
    ]
    (row,) = campaign_pnl(ledger, {"ETH": 90.0})
    # Basis 1004; 40 % out = 401.6; realised 480 - 1.92 - 401.6; 6 left worth 540 against 602.4.
    assert (row.open_qty, row.open_cost_basis) == (D(6), D("602.4"))
    assert row.realised == D("76.48")
    assert row.unrealised == D("-62.4")


def test_rows_are_kept_per_campaign_and_symbol_in_order_of_first_fill() -> None:
    ledger = [
        Fill("1", 1_000, "SOL", "buy", D(1), D(20), D(0), "c2"),
        Fill("2", 1_000, "BTC", "buy", D(1), D(100), D(0), "c1"),
        Fill("3", 2_000, "SOL", "sell", D(1), D(25), D(0), "c2"),
        Fill("4", 3_000, "SOL", "buy", D(2), D(30), D(0), "c3"),
        Fill("5", 3_000, "ETH", "buy", D(1), D(10), D(0)),
    ]
    rows = campaign_pnl(ledger, {"BTC": 90.0, "SOL": 31.0, "ETH": 10.0})
    assert [(r.campaign_id, r.symbol, r.realised, r.unrealised) for r in rows] == [
        ("c2", "SOL", D(5), D(0)),
        ("c1", "BTC", D(0), D(-10)),
        ("c3", "SOL", D(0), D(2)),
        (None, "ETH", D(0), D(0)),
    ]
    assert position_pnl(rows) == [
        PositionPnl("BTC", D(1), D(0), D(0), D(-10)),
        PositionPnl("ETH", D(1), D(0), D(0), D(0)),
        PositionPnl("SOL", D(2), D(0), D(5), D(2)),
    ]
    assert position_pnl(rows)[2].total == D(7)
    assert campaign_totals(rows) == {"c2": D(5), "c1": D(-10), "c3": D(2)}


def test_a_campaign_over_two_symbols_totals_both() -> None:
    ledger = [
        Fill("1", 1_000, "SOL", "buy", D(1), D(20), D(0), "c"),
        Fill("2", 1_000, "BTC", "buy", D(1), D(100), D(0), "c"),
    ]
    assert campaign_totals(campaign_pnl(ledger, {"SOL": 21.0, "BTC": 97.0})) == {"c": D(-2)}


def test_an_empty_ledger_has_no_rows() -> None:
    assert campaign_pnl([], {}) == []
    assert position_pnl([]) == []


def test_a_held_symbol_without_a_mark_is_refused() -> None:
    with pytest.raises(KeyError, match="ETH"):
        campaign_pnl([Fill("b", 1_000, "ETH", "buy", D(1), D(100), D(0), "c1")], {"BTC": 1.0})


def _trade(seed: int) -> tuple[Portfolio, dict[str, float]]:
    """Trade random campaigns through the simulated broker: buys, partial and full sells, with slippage and fees."""
    rng = np.random.default_rng(seed)
    portfolio = Portfolio(SYMBOLS, 100_000.0)
    broker = SimulatedBroker(fee_bps=40.0, slippage=SlippageModel(2.5, 5.0, 40.0))
    campaign = {s: f"{s}-0" for s in SYMBOLS}
    count = dict.fromkeys(SYMBOLS, 0)
    prices = np.array([50_000.0, 3_000.0, 100.0])
    for t in range(400):
        prices = prices * np.exp(rng.normal(0.0, 0.01, 3))
        symbol = SYMBOLS[int(rng.integers(0, 3))]
        i = portfolio.index[symbol]
        held = portfolio.qty[i]
        if held and rng.random() < 0.5:
            qty = held if rng.random() < 0.4 else (held * D(repr(round(rng.random(), 3)))).quantize(D("0.00000001"))
            broker.submit(MarketOrder(f"s{t}", symbol, "sell", qty, campaign[symbol]))
            if qty == held:
                count[symbol] += 1
                campaign[symbol] = f"{symbol}-{count[symbol]}"
        else:
            qty = to_decimal(rng.uniform(500.0, 5_000.0) / prices[i])
            broker.submit(MarketOrder(f"b{t}", symbol, "buy", qty, campaign[symbol]))
        broker.on_bar(t, prices, np.ones(3, dtype=bool), portfolio, rng.uniform(1.0, 50.0, 3))
    return portfolio, dict(zip(SYMBOLS, prices.tolist(), strict=True))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_campaign_realised_pnl_sums_exactly_to_the_portfolio_realised_pnl(seed: int) -> None:
    portfolio, marks = _trade(seed)
    rows = campaign_pnl(portfolio.ledger, marks)
    assert len(rows) > 10
    assert sum((r.realised for r in rows), D(0)) == portfolio.realized_pnl
    assert sum((r.fees for r in rows), D(0)) == portfolio.fees_paid
    assert sum((p.realised for p in position_pnl(rows)), D(0)) == portfolio.realized_pnl


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_unrealised_is_market_value_minus_open_cost_basis_and_totals_are_equity_minus_start(seed: int) -> None:
    portfolio, marks = _trade(seed)
    rows = campaign_pnl(portfolio.ledger, marks)
    market_value = sum((q * to_decimal(marks[s]) for s, q in zip(SYMBOLS, portfolio.qty, strict=True)), D(0))
    unrealised = sum((r.unrealised for r in rows), D(0))
    assert unrealised == market_value - sum(portfolio.cost_basis, D(0))
    assert unrealised + portfolio.realized_pnl == portfolio.cash + market_value - portfolio.initial_cash
    for s, q, basis in zip(SYMBOLS, portfolio.qty, portfolio.cost_basis, strict=True):
        (position,) = [p for p in position_pnl(rows) if p.symbol == s]
        assert position.open_qty == q
        assert position.unrealised == q * to_decimal(marks[s]) - basis
