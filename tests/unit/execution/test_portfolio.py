"""Tests for execution.accounting.portfolio: the Decimal cash-only ledger reconciles exactly."""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal

import numpy as np
import pytest

from execution.accounting.portfolio import CENT, Fill, Portfolio, to_decimal

D = Decimal
SYMBOLS = ("BTC", "ETH")


def _fill(side: str, qty: str, price: str, fee: str, symbol: str = "ETH", order_id: str = "o1") -> Fill:
    return Fill(order_id, 1_000, symbol, side, D(qty), D(price), D(fee))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, D("0.10000000")),
        (1 / 3, D("0.33333333")),
        (0.123456785, D("0.12345678")),  # half-even: tie rounds to the even digit 8
        (0.123456775, D("0.12345678")),  # half-even: tie rounds 7 up to the even 8
        (100_000.0, D("100000.00000000")),
        (-2.5, D("-2.50000000")),
    ],
)
def test_to_decimal_puts_floats_on_the_eight_decimal_grid_half_even(value: float, expected: Decimal) -> None:
    result = to_decimal(value)
    assert result == expected
    assert result.as_tuple().exponent == -8


def test_to_decimal_accepts_another_step_and_rounding() -> None:
    assert to_decimal(1.99, D("1"), ROUND_DOWN) == D("1")
    assert to_decimal(np.float64(2.675), D("0.01")) == D("2.68")  # repr("2.675") is exact text, not the binary 2.67499...


def test_fill_notional_is_qty_times_price_on_the_grid() -> None:
    assert _fill("buy", "0.33333333", "3.00000001", "0").notional == D("0.99999999")  # 0.9999999933... rounds down
    assert _fill("buy", "0.33333333", "3.00000002", "0").notional == D("1.00000000")  # 0.9999999966... rounds up
    assert _fill("buy", "10", "100.05", "0").notional == D("1000.50000000")


def test_new_portfolio_holds_only_the_initial_cash() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    assert portfolio.cash == portfolio.initial_cash == D("10000")
    assert portfolio.index == {"BTC": 0, "ETH": 1}
    assert portfolio.qty == [D(0), D(0)]
    assert portfolio.cost_basis == [D(0), D(0)]
    assert portfolio.qty_f.tolist() == [0.0, 0.0]
    assert np.isnan(portfolio.entry_price_f).all()
    assert portfolio.realized_pnl == portfolio.fees_paid == D(0)
    assert portfolio.ledger == []
    assert portfolio.reconciles()


def test_buy_moves_cash_by_notional_plus_fee_and_books_the_cost_basis() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    fill = _fill("buy", "10", "100.05", "4.002")
    portfolio.apply(fill)
    assert portfolio.cash == D("8995.498")
    assert portfolio.qty == [D(0), D(10)]
    assert portfolio.cost_basis == [D(0), D("1004.502")]
    assert portfolio.fees_paid == D("4.002")
    assert portfolio.realized_pnl == 0
    assert portfolio.qty_f.tolist() == [0.0, 10.0]
    assert math.isnan(portfolio.entry_price_f[0])
    assert portfolio.entry_price_f[1] == pytest.approx(100.4502, abs=1e-12)  # average entry includes the fee
    assert portfolio.ledger == [fill]
    assert portfolio.reconciles()


def test_partial_sell_realizes_pnl_on_the_sold_share_of_the_cost_basis() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    portfolio.apply(_fill("buy", "10", "100.05", "4.002", order_id="b"))
    portfolio.apply(_fill("sell", "4", "109.945", "1.75912", order_id="s"))
    # 40 % of the 1004.502 basis leaves; proceeds 439.78 less fee 1.75912.
    assert portfolio.realized_pnl == D("439.78") - D("1.75912") - D("401.8008") == D("36.22008")
    assert portfolio.cost_basis[1] == D("602.7012")
    assert portfolio.qty[1] == D(6)
    assert portfolio.cash == D("9433.51888")
    assert portfolio.fees_paid == D("5.76112")
    assert portfolio.entry_price_f[1] == pytest.approx(100.4502, abs=1e-12)  # average entry is unchanged by a sale
    assert portfolio.reconciles()


def test_selling_everything_clears_quantity_basis_and_entry_price() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    portfolio.apply(_fill("buy", "10", "100.05", "4.002"))
    portfolio.apply(_fill("sell", "4", "109.945", "1.75912"))
    portfolio.apply(_fill("sell", "6", "90", "2.16"))
    assert portfolio.qty[1] == 0
    assert portfolio.cost_basis[1] == 0
    assert portfolio.qty_f[1] == 0.0
    assert math.isnan(portfolio.entry_price_f[1])
    # Total PnL equals the change in cash once flat.
    assert portfolio.realized_pnl == D("36.22008") + D("540") - D("2.16") - D("602.7012") == D("-28.64112")
    assert portfolio.cash - portfolio.initial_cash == portfolio.realized_pnl
    assert portfolio.reconciles()


def test_sale_of_a_third_keeps_basis_and_pnl_on_the_grid() -> None:
    portfolio = Portfolio(SYMBOLS, 1_000.0)
    portfolio.apply(_fill("buy", "3", "33.33333333", "0.1"))
    portfolio.apply(_fill("sell", "1", "40", "0"))
    # Basis 100.09999999; a third of it (33.366666663...) leaves, rounded to the grid.
    assert portfolio.cost_basis[1] == D("66.73333333")
    assert portfolio.realized_pnl == D(40) - D("33.36666666") == D("6.63333334")
    assert portfolio.reconciles()


def test_ledger_reconciles_exactly_over_many_fills_and_symbols() -> None:
    portfolio = Portfolio(SYMBOLS, 50_000.0)
    rng = np.random.default_rng(7)
    for k in range(200):
        symbol = SYMBOLS[k % 2]
        i = portfolio.index[symbol]
        price = to_decimal(rng.uniform(10, 1_000))
        if portfolio.qty[i] > 0 and rng.random() < 0.5:
            qty = (portfolio.qty[i] * D(repr(rng.uniform(0.1, 1.0)))).quantize(CENT, rounding=ROUND_DOWN)
            side = "sell"
        else:
            qty = (portfolio.max_affordable_qty(price, D("0.004")) * D("0.1")).quantize(CENT, rounding=ROUND_DOWN)
            side = "buy"
        if qty <= 0:
            continue
        fee = (qty * price * D("0.004")).quantize(CENT)
        portfolio.apply(Fill(f"o{k}", k, symbol, side, qty, price, fee))
    assert len(portfolio.ledger) > 100
    assert portfolio.reconciles()
    assert portfolio.cash >= 0
    assert portfolio.fees_paid == sum((f.fee for f in portfolio.ledger), D(0))


def test_reconcile_detects_cash_that_does_not_match_the_ledger() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    portfolio.apply(_fill("buy", "10", "100.05", "4.002"))
    portfolio.cash += CENT
    assert not portfolio.reconciles()


def test_reconcile_detects_a_fill_missing_from_the_ledger() -> None:
    portfolio = Portfolio(SYMBOLS, 10_000.0)
    portfolio.apply(_fill("buy", "10", "100.05", "4.002"))
    portfolio.ledger.clear()
    assert not portfolio.reconciles()


def test_max_affordable_qty_is_the_largest_grid_quantity_cash_pays_for_fee_included() -> None:
    portfolio = Portfolio(SYMBOLS, 1_000.0)
    price, fee_rate = D("30.00000000"), D("0.004")
    qty = portfolio.max_affordable_qty(price, fee_rate)
    assert qty == D("33.20053120")  # 1000 / 30.12, rounded down
    assert qty * price * (1 + fee_rate) <= portfolio.cash
    assert (qty + CENT) * price * (1 + fee_rate) > portfolio.cash


@pytest.mark.parametrize("cash", [D(0), D("-0.00000001")])
def test_max_affordable_qty_is_zero_without_cash(cash: Decimal) -> None:
    portfolio = Portfolio(SYMBOLS, 10.0)
    portfolio.cash = cash
    assert portfolio.max_affordable_qty(D("30"), D("0.004")) == 0
