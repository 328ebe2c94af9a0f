"""Tests for backend.models.stacking: out-of-fold fits, calibration, fallbacks, the leakage rule, exact replay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import backend.models.stacking as stacking
from backend.errors import ModelError
from backend.models.metrics import log_loss
from backend.models.stacking import (
    OutOfFold,
    Stacker,
    StackMethod,
    StackReason,
    apply_stacker,
    describe,
    fit_linear,
    fit_logistic,
    fit_stacker,
    logit,
)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def overconfident_rows(n: int, seed: int, folds: int = 2) -> tuple[OutOfFold, np.ndarray]:
    """Rows whose boosters' probabilities are three times too sure of a real signal; returns them and the true p."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal(n)
    true_p = sigmoid(-0.6 + 0.5 * signal)
    y = (rng.random(n) < true_p).astype(np.float64)
    general = sigmoid(3.0 * (-0.6 + 0.5 * signal) + 0.3 * rng.standard_normal(n))
    specialist = sigmoid(3.0 * (-0.6 + 0.5 * signal) + 0.3 * rng.standard_normal(n))
    ts = np.arange(n, dtype=np.int64) * 10
    fold = np.repeat(np.arange(folds), n // folds).astype(np.int64)
    return OutOfFold(ts, fold, general, specialist, y), true_p


def test_a_logistic_fit_recovers_the_coefficients_that_generated_the_labels() -> None:
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal(60_000), rng.standard_normal(60_000)
    y = (rng.random(60_000) < sigmoid(-0.5 + 0.8 * x1 + 0.3 * x2)).astype(np.float64)

    c0, c1, c2 = fit_logistic(x1, x2, y, l2=1.0)

    assert (c0, c1, c2) == pytest.approx((-0.5, 0.8, 0.3), abs=0.04)


def test_the_logistic_stacker_calibrates_overconfident_probabilities_below_the_base_rates_log_loss() -> None:
    rows, _ = overconfident_rows(40_000, 2)
    test, _ = overconfident_rows(20_000, 3)

    stacker = fit_stacker(1, "p_up", 10**12, rows, 1000, 1.0, 0.4)
    own = np.ones(len(test.general), dtype=bool)
    calibrated = apply_stacker(stacker, test.general, test.specialist, own)

    rate = float(rows.label.mean())
    base_rate = log_loss(test.label, np.full(len(test.label), rate))
    raw = log_loss(test.label, 0.6 * test.general + 0.4 * test.specialist)
    assert (stacker.method, stacker.reason) == (StackMethod.LOGISTIC, StackReason.FITTED)
    assert log_loss(test.label, calibrated) < base_rate < raw
    # About a third of the boosters' logit: the stacker undid the overconfidence.
    assert stacker.coef[1] + stacker.coef[2] == pytest.approx(1.0 / 3.0, abs=0.05)


def test_a_linear_fit_recovers_weights_and_winsorising_keeps_a_few_crashes_from_setting_them() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    general, specialist = 0.01 * rng.standard_normal(n), 0.01 * rng.standard_normal(n)
    y = 0.002 + 0.5 * general + 0.2 * specialist + 0.002 * rng.standard_normal(n)
    y[:5] = -50.0 * general[:5] / np.abs(general[:5])  # five huge moves against the signal

    rows = OutOfFold(np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), general, specialist, y)
    stacker = fit_stacker(1, "expected_return", n, rows, 100, 1e-6, 0.4)
    plain = fit_linear(general, specialist, y, 1e-6)

    assert stacker.method is StackMethod.LINEAR
    assert stacker.coef == pytest.approx((0.002, 0.5, 0.2), abs=0.02)
    assert plain[1] < 0.0  # without winsorising the five crashes turn the weight's sign


def test_the_first_fold_and_folds_without_enough_rows_or_with_one_class_use_the_declared_fixed_blend() -> None:
    rows, _ = overconfident_rows(4000, 6)
    ones = OutOfFold(rows.ts, rows.fold, rows.general, rows.specialist, np.ones_like(rows.label))

    first = fit_stacker(0, "p_up", 10**12, rows, 100, 1.0, 0.4)
    few = fit_stacker(1, "p_up", 10**12, rows, 2001, 1.0, 0.4)
    single = fit_stacker(1, "p_recovery", 10**12, ones, 100, 1.0, 0.25)

    assert (first.method, first.reason, first.coef, first.rows, first.source_folds) == (StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, (0.0, 0.6, 0.4), 0, ())
    assert (few.method, few.reason, few.rows, few.source_folds) == (StackMethod.FIXED_BLEND, StackReason.TOO_FEW_ROWS, 2000, (0,))
    assert (single.method, single.reason, single.coef) == (StackMethod.FIXED_BLEND, StackReason.ONE_CLASS, (0.0, 0.75, 0.25))


def test_a_stacker_reads_only_earlier_folds_rows_before_its_cutoff_with_a_known_label_and_score() -> None:
    rows, _ = overconfident_rows(9000, 7, folds=3)
    cutoff = int(rows.ts[5000])  # inside fold 1's rows: fold 1 is only partly before the cut-off
    base = fit_stacker(2, "p_up", cutoff, rows, 100, 1.0, 0.4)

    # Leakage test: rewrite every label the fold may not know (after the cut-off, or in its own and later
    # folds' rows) and blank some scores and labels; nothing changes.
    label = rows.label.copy()
    late = (rows.ts >= cutoff) | (rows.fold >= 2)
    label[late] = 1.0 - label[late]
    general = rows.general.copy()
    general[late] = np.nan
    label[-10:] = np.nan
    again = fit_stacker(2, "p_up", cutoff, OutOfFold(rows.ts, rows.fold, general, rows.specialist, label), 100, 1.0, 0.4)

    assert again == base
    assert (base.rows, base.source_folds, base.label_cutoff_ms) == (5000, (0, 1), cutoff)
    # One readable label moved does move the fit.
    label[4999] = 1.0 - label[4999]
    moved = fit_stacker(2, "p_up", cutoff, OutOfFold(rows.ts, rows.fold, general, rows.specialist, label), 100, 1.0, 0.4)
    assert moved.coef != base.coef
    # Unknown labels and missing scores are not rows.
    holes = rows.label.copy()
    holes[:100] = np.nan
    general = rows.general.copy()
    general[100:150] = np.nan
    assert fit_stacker(2, "p_up", cutoff, OutOfFold(rows.ts, rows.fold, general, rows.specialist, holes), 100, 1.0, 0.4).rows == 4850


def test_applying_a_fixed_blend_leaves_rows_without_a_specialist_at_the_global_score_exactly() -> None:
    general = np.array([0.2, 0.7, 0.9])
    specialist = np.array([0.4, 0.7, 0.1])
    own = np.array([True, False, True])
    fixed = Stacker(0, "p_up", StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, (0.0, 0.6, 0.4), 0, 5, ())

    out = apply_stacker(fixed, general, specialist, own)

    assert out.tolist() == [0.6 * 0.2 + 0.4 * 0.4, 0.7, 0.6 * 0.9 + 0.4 * 0.1]
    assert general.tolist() == [0.2, 0.7, 0.9]  # the input is not written


@pytest.mark.parametrize(("target", "method"), [("p_up", StackMethod.LOGISTIC), ("p_recovery", StackMethod.LOGISTIC), ("expected_return", StackMethod.LINEAR)])
def test_applying_a_fitted_stacker_is_its_formula_on_logits_for_probabilities_and_on_scores_for_returns(target: str, method: StackMethod) -> None:
    general, specialist = np.array([0.3, 0.55]), np.array([0.45, 0.6])
    stacker = Stacker(1, target, method, StackReason.FITTED, (-0.2, 0.7, 0.4), 10, 5, (0,))

    out = apply_stacker(stacker, general, specialist, np.array([True, True]))

    if method is StackMethod.LOGISTIC:
        expected = sigmoid(-0.2 + 0.7 * logit(general) + 0.4 * logit(specialist))
    else:
        expected = -0.2 + 0.7 * general + 0.4 * specialist
    assert out.tobytes() == expected.tobytes()


def test_logit_clips_certain_probabilities_to_finite_values() -> None:
    out = logit(np.array([0.0, 0.5, 1.0]))

    assert out[1] == 0.0 and np.isfinite(out).all()
    assert out[0] == pytest.approx(-math.log(1e9 - 1.0)) and out[2] == pytest.approx(math.log(1e9 - 1.0), rel=1e-8)


def test_a_stacker_survives_json_exactly_so_a_replay_applies_the_same_coefficients() -> None:
    rows, _ = overconfident_rows(4000, 8)
    fitted = fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4)

    again = Stacker.from_json(json.loads(json.dumps(fitted.to_json())))

    assert again == fitted
    assert again.to_json() == {
        "fold": 1,
        "target": "p_up",
        "method": "logistic",
        "reason": "fitted",
        "coef": list(fitted.coef),
        "rows": 2000,
        "label_cutoff_ms": 10**12,
        "source_folds": [0],
    }


def test_fitting_the_same_rows_twice_gives_the_same_coefficients_to_the_bit() -> None:
    rows, _ = overconfident_rows(30_000, 9)

    assert fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4) == fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4)
    assert fit_stacker(1, "expected_return", 10**12, rows, 100, 1.0, 0.4) == fit_stacker(1, "expected_return", 10**12, rows, 100, 1.0, 0.4)


def test_a_logistic_fit_that_does_not_converge_in_its_steps_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(10)
    x1 = rng.standard_normal(500)
    y = (x1 > 0).astype(np.float64)
    monkeypatch.setattr(stacking, "NEWTON_STEPS", 1)

    with pytest.raises(ModelError, match=r"logistic stacker did not converge in 1 Newton steps on 500 rows"):
        fit_logistic(x1, x1, y, 1.0)


def test_describe_says_which_rule_a_fold_uses_and_why() -> None:
    fitted = Stacker(2, "p_up", StackMethod.LOGISTIC, StackReason.FITTED, (-0.5, 0.25, 0.125), 1200, 9, (0, 1))
    fallback = Stacker(0, "expected_return", StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, (0.0, 0.6, 0.4), 0, 9, ())

    assert describe(fitted) == "fold 2: p_up logistic stacker (-0.5, 0.25, 0.125) fitted on 1200 out-of-fold rows of folds [0, 1]"
    assert describe(fallback) == "fold 0: expected_return uses the fixed blend (no_earlier_fold, 0 usable rows)"
