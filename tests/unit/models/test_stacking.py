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
    stack_inputs,
)

TARGETS = ("p_up", "expected_return", "p_recovery")


def oof(ts: np.ndarray, fold: np.ndarray, general: np.ndarray, specialist: np.ndarray, label: np.ndarray, up: tuple[np.ndarray, np.ndarray] | None = None) -> OutOfFold:
    """Out-of-fold rows where every target has these scores and labels (``up``: other p_up scores)."""
    scores = {f"{t}.{part}": values for t in TARGETS for part, values in (("global", general), ("specialist", specialist))}
    if up is not None:
        scores["p_up.global"], scores["p_up.specialist"] = up
    return OutOfFold(ts, fold, scores, dict.fromkeys(TARGETS, label))


def raw_of(general: np.ndarray, specialist: np.ndarray, own: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {t: (general, specialist, own) for t in TARGETS}


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
    return oof(ts, fold, general, specialist, y), true_p


def test_a_logistic_fit_recovers_the_coefficients_that_generated_the_labels() -> None:
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal(60_000), rng.standard_normal(60_000)
    y = (rng.random(60_000) < sigmoid(-0.5 + 0.8 * x1 + 0.3 * x2)).astype(np.float64)

    c0, c1, c2 = fit_logistic([x1, x2], y, l2=1.0)

    assert (c0, c1, c2) == pytest.approx((-0.5, 0.8, 0.3), abs=0.04)


def test_the_logistic_stacker_calibrates_overconfident_probabilities_below_the_base_rates_log_loss() -> None:
    rows, _ = overconfident_rows(40_000, 2)
    test, _ = overconfident_rows(20_000, 3)

    stacker = fit_stacker(1, "p_up", 10**12, rows, 1000, 1.0, 0.4)
    general, specialist, label = test.scores["p_up.global"], test.scores["p_up.specialist"], test.labels["p_up"]
    calibrated = apply_stacker(stacker, raw_of(general, specialist, np.ones(len(general), dtype=bool)))

    rate = float(rows.labels["p_up"].mean())
    base_rate = log_loss(label, np.full(len(label), rate))
    raw = log_loss(label, 0.6 * general + 0.4 * specialist)
    assert (stacker.method, stacker.reason) == (StackMethod.LOGISTIC, StackReason.FITTED)
    assert log_loss(label, calibrated) < base_rate < raw
    # About a third of the boosters' logit: the stacker undid the overconfidence.
    assert stacker.coef[1] + stacker.coef[2] == pytest.approx(1.0 / 3.0, abs=0.05)


def test_a_fitted_rule_is_kept_only_after_beating_the_fixed_blend_on_the_later_half_then_refitted_on_all_rows() -> None:
    rows, _ = overconfident_rows(8000, 11)
    general, specialist, label = rows.scores["p_up.global"], rows.scores["p_up.specialist"], rows.labels["p_up"]
    columns = [logit(general), logit(specialist)]

    stacker = fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4)

    half = fit_logistic([c[:2000] for c in columns], label[:2000], 1.0)  # fold 0's 4000 rows, earlier half
    later = sigmoid(half[0] + half[1] * columns[0][2000:4000] + half[2] * columns[1][2000:4000])
    assert stacker.check == (log_loss(label[2000:4000], later), log_loss(label[2000:4000], 0.6 * general[2000:4000] + 0.4 * specialist[2000:4000]))
    assert stacker.check[0] < stacker.check[1]
    assert (stacker.reason, stacker.coef) == (StackReason.FITTED, fit_logistic([c[:4000] for c in columns], label[:4000], 1.0))


def flipping_rows(target: str, n: int, seed: int) -> OutOfFold:
    """One earlier fold whose labels follow the boosters' scores backwards in its first half, forwards in its second."""
    rng = np.random.default_rng(seed)
    p = sigmoid(rng.standard_normal(n))
    forwards = np.arange(n) >= n // 2
    if target == "expected_return":
        score = 0.01 * logit(p)
        label = np.where(forwards, score, -score) + 0.01 * rng.standard_normal(n)
    else:
        score = p
        label = (rng.random(n) < np.where(forwards, p, 1.0 - p)).astype(np.float64)
    # Rows arrive out of time order: the fit sorts them by time first.
    shuffle = rng.permutation(n)
    ts = (np.arange(n, dtype=np.int64) * 10)[shuffle]
    return oof(ts, np.zeros(n, dtype=np.int64), score[shuffle], score[shuffle], label[shuffle], (p[shuffle], p[shuffle]))


@pytest.mark.parametrize("target", ["p_up", "expected_return"])
def test_a_fitted_rule_that_loses_to_the_fixed_blend_on_the_later_half_is_not_used(target: str) -> None:
    rows = flipping_rows(target, 4000, 12)

    stacker = fit_stacker(1, target, 10**12, rows, 100, 1.0, 0.4)

    fitted, blend = stacker.check
    assert (stacker.method, stacker.reason, stacker.coef, stacker.rows) == (StackMethod.FIXED_BLEND, StackReason.NO_GAIN, (0.0, 0.6, 0.4), 4000)
    assert stacker.inputs == (f"{target}.global", f"{target}.specialist")
    # The fit learnt the first half's backward relation; the fixed blend ranks (or calibrates) the second half far better.
    assert (fitted > blend) if target == "p_up" else (fitted < 0.0 < blend)


def test_an_undefined_later_half_rank_correlation_keeps_the_fixed_blend() -> None:
    rows = flipping_rows("expected_return", 4000, 13)
    label = rows.labels["expected_return"].copy()
    label[rows.ts >= 20_000] = 0.001  # the later half's returns are all equal: no ranking to compare
    flat = OutOfFold(rows.ts, rows.fold, rows.scores, {**rows.labels, "expected_return": label})

    stacker = fit_stacker(1, "expected_return", 10**12, flat, 100, 1.0, 0.4)

    assert stacker.reason is StackReason.NO_GAIN and all(math.isnan(c) for c in stacker.check)


def test_a_linear_fit_recovers_weights_and_winsorising_keeps_a_few_crashes_from_setting_them() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    general, specialist = 0.01 * rng.standard_normal(n), 0.01 * rng.standard_normal(n)
    up_general, up_specialist = sigmoid(rng.standard_normal(n)), sigmoid(rng.standard_normal(n))
    y = 0.002 + 0.5 * general + 0.2 * specialist + 0.001 * logit(up_general) + 0.002 * rng.standard_normal(n)
    y[:5] = -50.0 * general[:5] / np.abs(general[:5])  # five huge moves against the signal

    rows = oof(np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), general, specialist, y, (up_general, up_specialist))
    stacker = fit_stacker(1, "expected_return", n, rows, 100, 1e-6, 0.4)
    plain = fit_linear([general, specialist, logit(up_general), logit(up_specialist)], y, 1e-6)

    assert (stacker.method, stacker.inputs) == (StackMethod.LINEAR, stack_inputs("expected_return"))
    assert stacker.coef == pytest.approx((0.002, 0.5, 0.2, 0.001, 0.0), abs=0.02)
    assert plain[1] < 0.0  # without winsorising the five crashes turn the weight's sign


def test_the_first_fold_and_folds_without_enough_rows_or_with_one_class_use_the_declared_fixed_blend() -> None:
    rows, _ = overconfident_rows(4000, 6)
    ones = OutOfFold(rows.ts, rows.fold, rows.scores, dict.fromkeys(TARGETS, np.ones(len(rows.ts))))
    unscored = OutOfFold(rows.ts, rows.fold, {**rows.scores, "p_recovery.global": np.where(rows.fold == 0, np.nan, 0.5)}, rows.labels)

    first = fit_stacker(0, "p_up", 10**12, rows, 100, 1.0, 0.4)
    few = fit_stacker(1, "p_up", 10**12, rows, 2001, 1.0, 0.4)
    single = fit_stacker(1, "p_recovery", 10**12, ones, 100, 1.0, 0.25)
    never = fit_stacker(1, "p_recovery", 10**12, unscored, 100, 1.0, 0.25)

    assert (first.method, first.reason, first.coef, first.rows, first.source_folds) == (StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, (0.0, 0.6, 0.4), 0, ())
    assert (few.method, few.reason, few.rows, few.source_folds) == (StackMethod.FIXED_BLEND, StackReason.TOO_FEW_ROWS, 2000, (0,))
    assert (single.method, single.reason, single.coef) == (StackMethod.FIXED_BLEND, StackReason.ONE_CLASS, (0.0, 0.75, 0.25))
    assert single.inputs == ("p_recovery.global", "p_recovery.specialist")
    # No earlier fold scored the target (its recovery boosters were missing there): nothing to fit on.
    assert (never.method, never.reason, never.rows) == (StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, 0)


def test_a_stacker_reads_only_earlier_folds_rows_before_its_cutoff_with_a_known_label_and_score() -> None:
    rows, _ = overconfident_rows(9000, 7, folds=3)
    cutoff = int(rows.ts[5000])  # inside fold 1's rows: fold 1 is only partly before the cut-off
    base = fit_stacker(2, "p_up", cutoff, rows, 100, 1.0, 0.4)

    def with_(label: np.ndarray, general: np.ndarray) -> OutOfFold:
        return OutOfFold(rows.ts, rows.fold, {**rows.scores, "p_up.global": general}, {**rows.labels, "p_up": label})

    # Leakage test: rewrite every label the fold may not know (after the cut-off, or in its own and later
    # folds' rows) and blank some scores and labels; nothing changes.
    label = rows.labels["p_up"].copy()
    late = (rows.ts >= cutoff) | (rows.fold >= 2)
    label[late] = 1.0 - label[late]
    general = rows.scores["p_up.global"].copy()
    general[late & (rows.fold >= 2)] = np.nan
    label[-10:] = np.nan
    again = fit_stacker(2, "p_up", cutoff, with_(label, general), 100, 1.0, 0.4)

    assert again == base
    assert (base.rows, base.source_folds, base.label_cutoff_ms) == (5000, (0, 1), cutoff)
    # One readable label moved does move the fit.
    label[4999] = 1.0 - label[4999]
    assert fit_stacker(2, "p_up", cutoff, with_(label, general), 100, 1.0, 0.4).coef != base.coef
    # Unknown labels and missing scores are not rows.
    holes = rows.labels["p_up"].copy()
    holes[:100] = np.nan
    general = rows.scores["p_up.global"].copy()
    general[100:150] = np.nan
    assert fit_stacker(2, "p_up", cutoff, with_(holes, general), 100, 1.0, 0.4).rows == 4850


def test_applying_a_fixed_blend_leaves_rows_without_a_specialist_at_the_global_score_exactly() -> None:
    general = np.array([0.2, 0.7, 0.9])
    specialist = np.array([0.4, 0.7, 0.1])
    own = np.array([True, False, True])
    fixed = Stacker(0, "p_up", StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, ("p_up.global", "p_up.specialist"), (0.0, 0.6, 0.4), 0, 5, ())

    out = apply_stacker(fixed, {"p_up": (general, specialist, own)})

    assert out.tolist() == [0.6 * 0.2 + 0.4 * 0.4, 0.7, 0.6 * 0.9 + 0.4 * 0.1]
    assert general.tolist() == [0.2, 0.7, 0.9]  # the input is not written


@pytest.mark.parametrize(("target", "method"), [("p_up", StackMethod.LOGISTIC), ("p_recovery", StackMethod.LOGISTIC), ("expected_return", StackMethod.LINEAR)])
def test_applying_a_fitted_stacker_is_its_formula_on_logits_for_probabilities_and_on_scores_for_returns(target: str, method: StackMethod) -> None:
    general, specialist = np.array([0.3, 0.55]), np.array([0.45, 0.6])
    up_general, up_specialist = np.array([0.2, 0.7]), np.array([0.4, 0.35])
    raw = {**raw_of(general, specialist, np.array([True, True])), "p_up": (up_general, up_specialist, np.array([True, True]))}
    inputs = stack_inputs(target)
    coef = (-0.2, 0.7, 0.4, 0.1, -0.3)[: len(inputs) + 1]
    stacker = Stacker(1, target, method, StackReason.FITTED, inputs, coef, 10, 5, (0,))

    out = apply_stacker(stacker, raw)

    own_g, own_s = (up_general, up_specialist) if target == "p_up" else (general, specialist)
    if method is StackMethod.LOGISTIC:
        expected = sigmoid(-0.2 + 0.7 * logit(own_g) + 0.4 * logit(own_s))
    else:
        expected = -0.2 + 0.7 * general + 0.4 * specialist + 0.1 * logit(up_general) + -0.3 * logit(up_specialist)
    assert out.tobytes() == expected.tobytes()


def test_a_stacker_reading_boosters_the_fold_lacks_is_an_error() -> None:
    stacker = Stacker(1, "expected_return", StackMethod.LINEAR, StackReason.FITTED, stack_inputs("expected_return"), (0.0, 1.0, 1.0, 1.0, 1.0), 10, 5, (0,))
    scores = np.array([0.1])

    with pytest.raises(ModelError, match=r"stacker of fold 1 for expected_return reads \['p_up.global', 'p_up.specialist'\], which the fold has no boosters for"):
        apply_stacker(stacker, {"expected_return": (scores, scores, np.array([True]))})


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
        "inputs": ["p_up.global", "p_up.specialist"],
        "coef": list(fitted.coef),
        "rows": 2000,
        "label_cutoff_ms": 10**12,
        "source_folds": [0],
        "check": list(fitted.check),
    }


def test_fitting_the_same_rows_twice_gives_the_same_coefficients_to_the_bit() -> None:
    rows, _ = overconfident_rows(30_000, 9)

    assert fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4) == fit_stacker(1, "p_up", 10**12, rows, 100, 1.0, 0.4)
    assert fit_stacker(1, "expected_return", 10**12, rows, 100, 1.0, 0.4) == fit_stacker(1, "expected_return", 10**12, rows, 100, 1.0, 0.4)


def test_a_logistic_fit_on_boosters_that_never_vary_converges_to_the_base_rate() -> None:
    # Found by CI: a fold whose boosters all said p = 1e-9 (logit -20.72 on every row); with a 1e-12 absolute
    # bound Newton's method cycled between two points 7e-12 apart and the training run failed.
    never = np.full(503, logit(np.array([0.0]))[0])
    y = np.zeros(503)
    y[[344, 348, 388, 405, 409, 413, 417, 421, 425, 429, 433, 437, 441, 445, 449, 453, 456, 457, 460, 463, 466, 469, 472, 475]] = 1.0

    c0, c1, c2 = fit_logistic([never, never.copy()], y, 1.0)

    assert c0 == pytest.approx(math.log(24 / 479), abs=1e-9)
    assert (c1, c2) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_a_logistic_fit_that_does_not_converge_in_its_steps_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(10)
    x1 = rng.standard_normal(500)
    y = (x1 > 0).astype(np.float64)
    monkeypatch.setattr(stacking, "NEWTON_STEPS", 1)

    with pytest.raises(ModelError, match=r"logistic stacker did not converge in 1 Newton steps on 500 rows"):
        fit_logistic([x1, x1], y, 1.0)


def test_describe_says_which_rule_a_fold_uses_and_why() -> None:
    fitted = Stacker(2, "p_up", StackMethod.LOGISTIC, StackReason.FITTED, stack_inputs("p_up"), (-0.5, 0.25, 0.125), 1200, 9, (0, 1))
    fallback = Stacker(0, "expected_return", StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, ("expected_return.global", "expected_return.specialist"), (0.0, 0.6, 0.4), 0, 9, ())

    assert describe(fitted) == "fold 2: p_up logistic stacker (-0.5, 0.25, 0.125) fitted on 1200 out-of-fold rows of folds [0, 1]"
    assert describe(fallback) == "fold 0: expected_return uses the fixed blend (no_earlier_fold, 0 usable rows)"
    checked = Stacker(2, "p_up", StackMethod.LOGISTIC, StackReason.FITTED, stack_inputs("p_up"), (-0.5, 0.25, 0.125), 1200, 9, (0, 1), (0.61, 0.625))
    lost = Stacker(3, "expected_return", StackMethod.FIXED_BLEND, StackReason.NO_GAIN, ("expected_return.global", "expected_return.specialist"), (0.0, 0.6, 0.4), 800, 9, (0,), (-0.01, 0.02))
    assert describe(checked) == (
        "fold 2: p_up logistic stacker (-0.5, 0.25, 0.125) fitted on 1200 out-of-fold rows of folds [0, 1]; "
        "later-half log loss 0.61 fitted vs 0.625 fixed blend"
    )
    assert describe(lost) == "fold 3: expected_return uses the fixed blend (no_out_of_fold_gain, 800 usable rows; later-half IC -0.01 fitted vs 0.02 fixed blend)"
