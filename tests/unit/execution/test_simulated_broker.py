"""Tests for execution.brokers.simulated: next-bar-open fills with slippage by side, bps fees, cash and holding clips."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from execution.accounting.portfolio import Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker

D = Decimal
SYMBOLS = ("BTC", "ETH", "SOL")
ALL = np.array([True, True, True])


@pytest.fixture
def portfolio() -> Portfolio:
    return Portfolio(SYMBOLS, 10_000.0)


@pytest.fixture
def broker() -> SimulatedBroker:
    return SimulatedBroker(fee_bps=40.0, slippage_bps=5.0)


def _opens(btc: float = 50_000.0, eth: float = 100.0, sol: float = 20.0) -> np.ndarray:
    return np.array([btc, eth, sol])


def test_rates_come_from_bps(broker: SimulatedBroker) -> None:
    assert broker.fee_rate == D("0.004")
    assert broker.slippage == pytest.approx(0.0005)
    assert broker.pending == []


def test_submit_only_queues_nothing_trades_until_a_bar(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("o1", "ETH", "buy", D(10)))
    assert [o.order_id for o in broker.pending] == ["o1"]
    assert portfolio.cash == D(10_000) and portfolio.ledger == []


def test_buy_fills_at_the_open_plus_slippage_with_fee_in_bps(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("o1", "ETH", "buy", D(10)))
    fills = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio)
    assert fills == [Fill("o1", 2_000, "ETH", "buy", D(10), D("100.05"), D("4.002"))]
    assert portfolio.cash == D("8995.498")
    assert broker.pending == []
    assert portfolio.reconciles()


def test_sell_fills_at_the_open_minus_slippage(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("b", "ETH", "buy", D(10)))
    broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio)
    broker.submit(MarketOrder("s", "ETH", "sell", D(4)))
    (fill,) = broker.on_bar(3_000, _opens(eth=110.0), ALL, portfolio)
    assert (fill.price, fill.qty, fill.fee) == (D("109.945"), D(4), D("1.75912"))
    assert fill.fee == (fill.notional * broker.fee_rate).quantize(D("0.00000001"))
    assert portfolio.qty[1] == D(6)
    assert portfolio.reconciles()


@pytest.mark.parametrize(("side", "slipped"), [("buy", D("100.10")), ("sell", D("99.90"))])
def test_slippage_always_works_against_the_order(side: str, slipped: Decimal, portfolio: Portfolio) -> None:
    broker = SimulatedBroker(fee_bps=0.0, slippage_bps=10.0)
    portfolio.apply(Fill("seed", 1_000, "ETH", "buy", D(5), D(100), D(0)))
    broker.submit(MarketOrder("o", "ETH", side, D(1)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio)
    assert fill.price == slipped
    assert fill.fee == 0


def test_an_order_for_a_symbol_without_a_bar_waits_for_its_next_bar(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("eth", "ETH", "buy", D(1)))
    broker.submit(MarketOrder("sol", "SOL", "buy", D(1)))
    gap = np.array([True, False, True])
    fills = broker.on_bar(2_000, _opens(eth=np.nan, sol=20.0), gap, portfolio)
    assert [f.order_id for f in fills] == ["sol"]
    assert [o.order_id for o in broker.pending] == ["eth"]
    assert portfolio.qty[1] == 0
    (late,) = broker.on_bar(3_000, _opens(eth=120.0), ALL, portfolio)
    assert (late.order_id, late.ts_ms, late.price) == ("eth", 3_000, D("120.06"))
    assert broker.pending == []


def test_a_buy_larger_than_cash_is_clipped_to_what_cash_pays_for(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("big", "ETH", "buy", D(1_000)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio)
    assert fill.qty == D("99.55181771")  # 10,000 / (100.05 x 1.004), rounded down to the grid
    assert D(0) <= portfolio.cash < D("100.05") * D("1.004") * D("0.00000001")
    assert portfolio.reconciles()


def test_orders_fill_in_submission_order_so_the_later_buy_is_the_one_clipped(
    broker: SimulatedBroker, portfolio: Portfolio
) -> None:
    broker.submit(MarketOrder("first", "ETH", "buy", D(60)))
    broker.submit(MarketOrder("second", "SOL", "buy", D(1_000)))
    first, second = broker.on_bar(2_000, _opens(eth=100.0, sol=20.0), ALL, portfolio)
    assert (first.order_id, first.qty) == ("first", D(60))
    assert second.order_id == "second" and D(0) < second.qty < D(1_000)
    assert portfolio.cash >= 0
    assert portfolio.reconciles()


def test_a_buy_with_no_cash_left_is_dropped_without_a_fill(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    portfolio.cash = D(0)
    broker.submit(MarketOrder("broke", "ETH", "buy", D(1)))
    assert broker.on_bar(2_000, _opens(), ALL, portfolio) == []
    assert broker.pending == []
    assert portfolio.ledger == []


def test_a_sell_never_exceeds_the_held_quantity(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    portfolio.apply(Fill("seed", 1_000, "ETH", "buy", D("2.5"), D(100), D(0)))
    broker.submit(MarketOrder("s", "ETH", "sell", D(10)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio)
    assert fill.qty == D("2.5")
    assert portfolio.qty[1] == 0
    assert portfolio.reconciles()


def test_a_sell_of_nothing_held_is_dropped_without_a_fill(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("s", "BTC", "sell", D(1)))
    assert broker.on_bar(2_000, _opens(), ALL, portfolio) == []
    assert broker.pending == [] and portfolio.ledger == []


def test_pending_notional_counts_buys_at_marks_and_ignores_sells(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("a", "ETH", "buy", D(2)))
    broker.submit(MarketOrder("b", "ETH", "buy", D("0.5")))
    broker.submit(MarketOrder("c", "SOL", "sell", D(100)))
    broker.submit(MarketOrder("d", "BTC", "buy", D("0.1")))
    marks = np.array([60_000.0, 110.0, 25.0])
    assert broker.pending_notional(marks, portfolio.index).tolist() == [6_000.0, 275.0, 0.0]


def test_pending_notional_is_zero_with_nothing_pending(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    assert broker.pending_notional(np.array([1.0, 2.0, 3.0]), portfolio.index).tolist() == [0.0, 0.0, 0.0]


def test_fills_carry_the_campaign_of_their_order(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("b", "ETH", "buy", D(10), "camp-1"))
    broker.submit(MarketOrder("c", "SOL", "buy", D(10)))
    (eth, sol) = broker.on_bar(2_000, _opens(), ALL, portfolio)
    broker.submit(MarketOrder("s", "ETH", "sell", D(4), "camp-1"))
    (sell,) = broker.on_bar(3_000, _opens(), ALL, portfolio)
    assert (eth.campaign_id, sol.campaign_id, sell.campaign_id) == ("camp-1", None, "camp-1")
    assert portfolio.ledger == [eth, sol, sell]
