"""backend.engine.economics: legs, pricing, and the out-of-fold edge calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.engine.economics import CostReason, EdgeBasis, calibrate_edge, leg_cost, price
from execution.brokers.simulated import SlippageModel

SLIP = SlippageModel(half_spread_bps=5.0, impact_bps_per_pct_of_bar_volume=2.0, max_bps=50.0)


@pytest.mark.parametrize(
    ("horizon", "cost", "message"),
    [(0, 0.01, "'horizon_ms' must be >= 1, was 0"), (1, -0.1, "'label_cost' must be >= 0 and < 1, was -0.1"), (1, 1.0, "was 1.0")],
)
def test_an_edge_basis_out_of_bounds_is_refused_naming_the_field(horizon: int, cost: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EdgeBasis(horizon, cost)


def test_a_leg_is_the_fee_plus_the_slippage_models_bps() -> None:
    assert leg_cost(0.004, SLIP, 10_000.0, None) == pytest.approx(0.004 + 0.0005)
    # 1 % of the bar's USD volume adds 2 bps of impact; a bar with no volume pays the cap.
    assert leg_cost(0.004, SLIP, 10_000.0, 1_000_000.0) == pytest.approx(0.004 + 0.0007)
    assert leg_cost(0.004, SLIP, 10_000.0, 0.0) == pytest.approx(0.004 + 0.005)


def test_a_buy_clears_only_when_its_edge_exceeds_legs_times_a_leg_plus_the_margin() -> None:
    cleared = price(0.0200, True, 2, 0.0045, 0.01, CostReason.EDGE_BELOW_COST)
    assert (cleared.clears, cleared.reason, cleared.cost, cleared.legs) == (True, CostReason.EDGE_CLEARS_COST, 0.009, 2)
    short = price(0.0190, True, 2, 0.0045, 0.01, CostReason.CHURN_BELOW_COST)
    assert (short.clears, short.reason, short.edge) == (False, CostReason.CHURN_BELOW_COST, 0.019)


def test_a_sale_earns_the_loss_it_avoids_and_a_missing_move_never_clears() -> None:
    sale = price(-0.03, False, 3, 0.0045, 0.001, CostReason.INSIDE_MIN_HOLDING)
    assert sale.clears and sale.edge == 0.03
    assert not price(0.03, False, 2, 0.0045, 0.0, CostReason.EDGE_BELOW_COST).clears
    missing = price(math.nan, True, 2, 0.0045, 0.0, CostReason.EDGE_BELOW_COST)
    assert not missing.clears and math.isnan(missing.edge)


def _folds(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(n, dtype=np.int64) * 10
    fold = np.full((n, 2), np.nan)
    size = n // k
    for f in range(k):
        fold[f * size : (f + 1) * size] = f
    return ts, fold


def test_each_fold_is_priced_by_a_line_fitted_only_on_labels_realised_before_it() -> None:
    rng = np.random.default_rng(1)
    ts, fold = _folds(300, 3)
    expected = rng.normal(0.0, 0.01, (300, 2))
    realised = -0.009 + 0.5 * expected + rng.normal(0.0, 0.001, (300, 2))
    edge, lines = calibrate_edge(expected, realised, fold, ts, horizon_ms=50)
    # Fold 0 has no history: no edge. Folds 1 and 2 learn the line from rows realised before they start.
    assert np.isnan(edge[:100]).all() and np.isfinite(edge[100:]).all()
    assert [(line.fold, line.start_ms) for line in lines] == [(1, 1000), (2, 2000)]
    assert lines[0].rows == 2 * 96  # rows 0..95 of both symbols: ts + 50 <= 1000
    assert lines[1].slope == pytest.approx(0.5, abs=0.02) and lines[1].intercept == pytest.approx(-0.009, abs=0.001)
    np.testing.assert_allclose(edge[200:], lines[1].intercept + lines[1].slope * expected[200:])
    # A label realised after the fold starts must not move its line: change those labels, the fit stays.
    changed = realised.copy()
    changed[96:200] = 1.0
    again, _ = calibrate_edge(expected, changed, fold, ts, horizon_ms=50)
    np.testing.assert_array_equal(again[100:200], edge[100:200])


def test_the_slope_is_kept_between_zero_and_one() -> None:
    rng = np.random.default_rng(2)
    ts, fold = _folds(200, 2)
    expected = rng.normal(0.0, 0.01, (200, 2))
    _, inverted = calibrate_edge(expected, -2.0 * expected, fold, ts, horizon_ms=1)
    _, steep = calibrate_edge(expected, 3.0 * expected, fold, ts, horizon_ms=1)
    assert inverted[0].slope == 0.0 and steep[0].slope == 1.0
    assert inverted[0].intercept == pytest.approx(float(np.mean(-2.0 * expected[:100])))


def test_a_fold_without_a_usable_history_gets_no_edge() -> None:
    ts, fold = _folds(200, 2)
    flat = np.full((200, 2), 0.01)
    edge, lines = calibrate_edge(flat, flat, fold, ts, horizon_ms=1)  # no variance in the predictions
    assert lines == () and np.isnan(edge).all()
    edge, lines = calibrate_edge(np.random.default_rng(3).normal(size=(200, 2)), flat, fold, ts, horizon_ms=10_000)
    assert lines == () and np.isnan(edge).all()  # no label realised before fold 1
