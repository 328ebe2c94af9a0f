"""execution.accounting.performance: the protocol's figures and the buy-and-hold curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from execution.accounting.performance import YEAR_MS, buy_and_hold, cagr, max_drawdown, performance, sharpe, sortino

HOUR = 3_600_000


def test_drawdown_counts_from_the_initial_equity_and_the_running_peak() -> None:
    assert max_drawdown(np.array([90.0, 120.0, 60.0, 130.0]), 100.0) == pytest.approx(0.5)
    assert max_drawdown(np.array([110.0, 120.0]), 100.0) == 0.0


def test_sharpe_and_sortino_are_annualised_and_none_without_a_denominator() -> None:
    equity = np.array([101.0, 100.0, 102.0, 101.0])
    returns = equity / np.array([100.0, 101.0, 100.0, 102.0]) - 1.0
    per_year = math.sqrt(YEAR_MS / HOUR)
    assert sharpe(equity, 100.0, HOUR) == pytest.approx(returns.mean() / returns.std() * per_year)
    downside = math.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))
    assert sortino(equity, 100.0, HOUR) == pytest.approx(returns.mean() / downside * per_year)
    assert sharpe(np.full(5, 100.0), 100.0, HOUR) is None
    assert sortino(np.array([101.0, 102.0]), 100.0, HOUR) is None


def test_cagr_compounds_over_the_span() -> None:
    year = YEAR_MS // HOUR
    assert cagr(np.full(2 * year, 121.0), 100.0, HOUR) == pytest.approx(0.1)


def test_performance_reports_every_figure_of_the_protocol() -> None:
    equity = np.array([100.0, 99.0, 101.0, 103.0])
    exposure = np.array([0.0, 50.0, 50.0, 0.0])
    figures = performance(equity, exposure, 100.0, HOUR, traded_notional=200.0, fees=1.234)
    assert figures["return_pct"] == 3.0 and figures["max_drawdown_pct"] == 1.0
    assert figures["turnover"] == round(200.0 / equity.mean(), 4) and figures["fees_paid"] == 1.23
    assert figures["exposure_time_pct"] == 50.0
    assert figures["avg_exposure_pct"] == round(100.0 * float(np.mean(exposure / equity)), 4)
    assert figures["sharpe"] is not None and figures["sortino"] is not None
    assert performance(np.full(3, 100.0), np.zeros(3), 100.0, HOUR, 0.0, 0.0)["sharpe"] is None


def test_buy_and_hold_buys_each_symbol_at_its_first_close_and_keeps_cash_for_one_never_seen() -> None:
    close = np.array([[100.0, np.nan, np.nan], [110.0, 50.0, np.nan], [np.nan, 25.0, np.nan], [121.0, 50.0, np.nan]])
    has_bar = np.isfinite(close)
    equity, exposure, paid = buy_and_hold(close, has_bar, 300.0, 0.01, [0, 1, 2])
    first = 100.0 / 1.01  # notional after one leg of cost
    a = first / 100.0 * np.array([100.0, 110.0, 110.0, 121.0])  # a gap keeps the last mark
    b = np.array([100.0, first, first / 2, first])
    np.testing.assert_allclose(equity, a + b + 100.0)
    np.testing.assert_allclose(exposure, a + np.array([0.0, first, first / 2, first]))
    assert paid == pytest.approx(2 * (100.0 - first))
    only, _, _ = buy_and_hold(close, has_bar, 100.0, 0.0, [0])
    np.testing.assert_allclose(only, [100.0, 110.0, 110.0, 121.0])
