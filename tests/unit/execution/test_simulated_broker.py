"""Tests for execution.brokers.simulated: next-bar-open fills, spread- and size-dependent slippage by side, bps fees, clips."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from execution.accounting.portfolio import Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker, SlippageModel

D = Decimal
SYMBOLS = ("BTC", "ETH", "SOL")
ALL = np.array([True, True, True])


@pytest.fixture
def portfolio() -> Portfolio:
    return Portfolio(SYMBOLS, 10_000.0)


@pytest.fixture
def broker() -> SimulatedBroker:
    return SimulatedBroker(fee_bps=40.0, slippage=SlippageModel(5.0, 0.0, 50.0))


def _opens(btc: float = 50_000.0, eth: float = 100.0, sol: float = 20.0) -> np.ndarray:
    return np.array([btc, eth, sol])


def test_rates_come_from_bps(broker: SimulatedBroker) -> None:
    assert broker.fee_rate == D("0.004")
    assert broker.slippage == SlippageModel(5.0, 0.0, 50.0)
    assert broker.pending == []


def test_submit_only_queues_nothing_trades_until_a_bar(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("o1", "ETH", "buy", D(10)))
    assert [o.order_id for o in broker.pending] == ["o1"]
    assert portfolio.cash == D(10_000) and portfolio.ledger == []


def test_buy_fills_at_the_open_plus_slippage_with_fee_in_bps(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("o1", "ETH", "buy", D(10)))
    fills = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, None)
    assert fills == [Fill("o1", 2_000, "ETH", "buy", D(10), D("100.05"), D("4.002"))]
    assert portfolio.cash == D("8995.498")
    assert broker.pending == []
    assert portfolio.reconciles()


def test_sell_fills_at_the_open_minus_slippage(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("b", "ETH", "buy", D(10)))
    broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, None)
    broker.submit(MarketOrder("s", "ETH", "sell", D(4)))
    (fill,) = broker.on_bar(3_000, _opens(eth=110.0), ALL, portfolio, None)
    assert (fill.price, fill.qty, fill.fee) == (D("109.945"), D(4), D("1.75912"))
    assert fill.fee == (fill.notional * broker.fee_rate).quantize(D("0.00000001"))
    assert portfolio.qty[1] == D(6)
    assert portfolio.reconciles()


@pytest.mark.parametrize(("side", "slipped"), [("buy", D("100.10")), ("sell", D("99.90"))])
def test_slippage_always_works_against_the_order(side: str, slipped: Decimal, portfolio: Portfolio) -> None:
    broker = SimulatedBroker(fee_bps=0.0, slippage=SlippageModel(10.0, 0.0, 10.0))
    portfolio.apply(Fill("seed", 1_000, "ETH", "buy", D(5), D(100), D(0)))
    broker.submit(MarketOrder("o", "ETH", side, D(1)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, None)
    assert fill.price == slipped
    assert fill.fee == 0


def test_an_order_for_a_symbol_without_a_bar_waits_for_its_next_bar(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("eth", "ETH", "buy", D(1)))
    broker.submit(MarketOrder("sol", "SOL", "buy", D(1)))
    gap = np.array([True, False, True])
    fills = broker.on_bar(2_000, _opens(eth=np.nan, sol=20.0), gap, portfolio, None)
    assert [f.order_id for f in fills] == ["sol"]
    assert [o.order_id for o in broker.pending] == ["eth"]
    assert portfolio.qty[1] == 0
    (late,) = broker.on_bar(3_000, _opens(eth=120.0), ALL, portfolio, None)
    assert (late.order_id, late.ts_ms, late.price) == ("eth", 3_000, D("120.06"))
    assert broker.pending == []


def test_a_buy_larger_than_cash_is_clipped_to_what_cash_pays_for(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("big", "ETH", "buy", D(1_000)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, None)
    assert fill.qty == D("99.55181771")  # 10,000 / (100.05 x 1.004), rounded down to the grid
    assert D(0) <= portfolio.cash < D("100.05") * D("1.004") * D("0.00000001")
    assert portfolio.reconciles()


def test_orders_fill_in_submission_order_so_the_later_buy_is_the_one_clipped(
    broker: SimulatedBroker, portfolio: Portfolio
) -> None:
    broker.submit(MarketOrder("first", "ETH", "buy", D(60)))
    broker.submit(MarketOrder("second", "SOL", "buy", D(1_000)))
    first, second = broker.on_bar(2_000, _opens(eth=100.0, sol=20.0), ALL, portfolio, None)
    assert (first.order_id, first.qty) == ("first", D(60))
    assert second.order_id == "second" and D(0) < second.qty < D(1_000)
    assert portfolio.cash >= 0
    assert portfolio.reconciles()


def test_a_buy_with_no_cash_left_is_dropped_without_a_fill(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    portfolio.cash = D(0)
    broker.submit(MarketOrder("broke", "ETH", "buy", D(1)))
    assert broker.on_bar(2_000, _opens(), ALL, portfolio, None) == []
    assert broker.pending == []
    assert portfolio.ledger == []


def test_a_sell_never_exceeds_the_held_quantity(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    portfolio.apply(Fill("seed", 1_000, "ETH", "buy", D("2.5"), D(100), D(0)))
    broker.submit(MarketOrder("s", "ETH", "sell", D(10)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, None)
    assert fill.qty == D("2.5")
    assert portfolio.qty[1] == 0
    assert portfolio.reconciles()


def test_a_sell_of_nothing_held_is_dropped_without_a_fill(broker: SimulatedBroker, portfolio: Portfolio) -> None:
    broker.submit(MarketOrder("s", "BTC", "sell", D(1)))
    assert broker.on_bar(2_000, _opens(), ALL, portfolio, None) == []
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
    (eth, sol) = broker.on_bar(2_000, _opens(), ALL, portfolio, None)
    broker.submit(MarketOrder("s", "ETH", "sell", D(4), "camp-1"))
    (sell,) = broker.on_bar(3_000, _opens(), ALL, portfolio, None)
    assert (eth.campaign_id, sol.campaign_id, sell.campaign_id) == ("camp-1", None, "camp-1")
    assert portfolio.ledger == [eth, sol, sell]


# ---------------------------------------------------------------- size-dependent slippage
IMPACT = SlippageModel(half_spread_bps=2.5, impact_bps_per_pct_of_bar_volume=10.0, max_bps=40.0)


def _volumes(eth: float) -> np.ndarray:
    return np.array([1.0, eth, 1.0])


def _fill_price(side: str, qty: str, eth_volume: float, model: SlippageModel = IMPACT) -> Decimal:
    portfolio = Portfolio(SYMBOLS, 1_000_000.0)
    portfolio.apply(Fill("seed", 1_000, "ETH", "buy", D(1_000), D(100), D(0)))
    broker = SimulatedBroker(fee_bps=0.0, slippage=model)
    broker.submit(MarketOrder("o", "ETH", side, D(qty)))
    (fill,) = broker.on_bar(2_000, _opens(eth=100.0), ALL, portfolio, _volumes(eth_volume))
    return fill.price


@pytest.mark.parametrize(
    ("order_usd", "bar_usd", "bps"),
    [
        (0.0, 1_000.0, 2.5),  # no size: the half-spread
        (10.0, 1_000.0, 12.5),  # 1 % of the bar: + 10 bps
        (25.0, 1_000.0, 27.5),  # 2.5 % of the bar: + 25 bps
        (50.0, 1_000.0, 40.0),  # 5 % would be 52.5: capped
        (10.0, 0.0, 40.0),  # a bar that traded nothing: the cap
        (10.0, float("nan"), 40.0),  # unknown volume on the bar: the cap
        (10.0, None, 2.5),  # a source without volume: the half-spread only
    ],
)
def test_slippage_bps_is_half_spread_plus_impact_capped(order_usd: float, bar_usd: float | None, bps: float) -> None:
    assert IMPACT.bps(order_usd, bar_usd) == pytest.approx(bps)


def test_a_larger_order_pays_more_slippage_per_unit() -> None:
    small, large = _fill_price("buy", "1", 1_000.0), _fill_price("buy", "10", 1_000.0)
    assert (small, large) == (D("100.035"), D("100.125"))  # 2.5 + 1 bps, 2.5 + 10 bps
    assert large > small


def test_the_same_order_pays_less_on_a_busier_bar() -> None:
    assert _fill_price("buy", "10", 10_000.0) == D("100.035") < _fill_price("buy", "10", 1_000.0)


def test_the_cap_holds_for_an_order_larger_than_the_bar() -> None:
    assert _fill_price("buy", "500", 100.0) == D("100.40")
    assert _fill_price("sell", "500", 100.0) == D("99.60")


@pytest.mark.parametrize(("side", "price"), [("buy", D("100.125")), ("sell", D("99.875"))])
def test_buys_pay_up_and_sells_receive_less_by_the_same_bps(side: str, price: Decimal) -> None:
    assert _fill_price(side, "10", 1_000.0) == price


def test_a_bar_with_zero_volume_pays_the_cap() -> None:
    assert _fill_price("buy", "0.001", 0.0) == D("100.40")


def test_slippage_is_deterministic_for_identical_inputs() -> None:
    prices = {_fill_price("buy", "3.3", 777.0) for _ in range(5)}
    assert len(prices) == 1


def test_volume_is_read_for_the_symbol_that_fills() -> None:
    portfolio = Portfolio(SYMBOLS, 1_000_000.0)
    broker = SimulatedBroker(fee_bps=0.0, slippage=IMPACT)
    broker.submit(MarketOrder("sol", "SOL", "buy", D(5)))  # 100 USD on a 10,000 USD bar: 1 %
    (fill,) = broker.on_bar(2_000, _opens(sol=20.0), ALL, portfolio, np.array([0.0, 0.0, 500.0]))
    assert fill.price == D("20.025")
