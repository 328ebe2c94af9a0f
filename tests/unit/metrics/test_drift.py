"""Drift monitors: population stability, rolling performance, and the verdict against thresholds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from backend.models.drift import (
    PSI_EPS,
    DriftVerdict,
    drift_verdict,
    feature_drift,
    performance_drift,
    population_stability_index,
)
from backend.models.metrics import calibration_error, log_loss


def test_psi_uses_reference_quantile_bins_and_sums_share_differences_times_log_ratio() -> None:
    reference = np.arange(1.0, 11.0)  # quartile edges 3.25, 5.5, 7.75: bins of 3, 2, 2, 3 values
    current = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 6.0, 6.0, 9.0, 9.0, 9.0])  # 5, 0, 2, 3 values
    ref = np.array([0.3, 0.2, 0.2, 0.3])
    cur = np.array([0.5, PSI_EPS, 0.2, 0.3])
    expected = float(np.sum((cur - ref) * np.log(cur / ref)))
    assert population_stability_index(reference, current, bins=4) == pytest.approx(expected, rel=1e-12)


def test_psi_is_zero_for_the_same_sample_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=20_000)
    assert population_stability_index(reference, reference) == 0.0
    same = population_stability_index(reference, rng.normal(size=20_000))
    shifted = population_stability_index(reference, rng.normal(0.5, 1.0, size=20_000))
    assert same < 0.01 < 0.2 < shifted


def test_psi_merges_repeated_edges_of_a_reference_with_few_values_and_drops_non_finite() -> None:
    reference = [0.0] * 8 + [1.0] * 2 + [math.nan, math.inf]
    # Deciles of the reference are all 0 except the top two: edges {0, 1} -> bins (<0), [0, 1), [1, ..).
    current = [1.0] * 5 + [0.0] * 5
    ref = np.array([PSI_EPS, 0.8, 0.2])
    cur = np.array([PSI_EPS, 0.5, 0.5])
    expected = float(np.sum((cur - ref) * np.log(cur / ref)))
    assert population_stability_index(reference, current) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("reference", "current", "bins", "message"),
    [
        ([1.0], [1.0], 0, r"'bins' must be >= 1, was 0"),
        ([math.nan], [1.0], 10, r"'reference' has no finite values"),
        ([1.0], [], 10, r"'current' has no finite values"),
        ([[1.0]], [1.0], 10, r"'reference' must be 1-D, has shape \(1, 1\)"),
    ],
)
def test_psi_refuses_bad_input(reference, current, bins: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        population_stability_index(reference, current, bins)


def test_feature_drift_reports_each_column_and_nan_for_a_column_without_data() -> None:
    rng = np.random.default_rng(2)
    reference = pl.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(size=5000), "c": [None] * 5000}, schema_overrides={"c": pl.Float64})
    current = pl.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(1.0, 1.0, size=5000), "c": rng.normal(size=5000)})
    drift = feature_drift(reference, current, ["b", "a", "c"])
    assert list(drift) == ["b", "a", "c"]
    assert drift["a"] < 0.01 and drift["b"] > 0.25 and math.isnan(drift["c"])
    assert drift["a"] == population_stability_index(reference["a"].to_numpy(), current["a"].to_numpy())


def test_feature_drift_refuses_a_missing_column_naming_the_side() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"current frame has no column\(s\) \['b'\]"):
        feature_drift(pl.DataFrame({"a": [1.0], "b": [2.0]}), frame, ["a", "b"])
    with pytest.raises(ValueError, match=r"reference frame has no column\(s\) \['b'\]"):
        feature_drift(frame, frame, ["b"])


def test_performance_drift_equals_the_metrics_over_each_trailing_window() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(float)
    window = 50
    losses, calibration = performance_drift(y, p, window)
    assert np.isnan(losses[: window - 1]).all() and np.isnan(calibration[: window - 1]).all()
    for i in range(window - 1, 300):
        rows = slice(i - window + 1, i + 1)
        assert losses[i] == pytest.approx(log_loss(y[rows], p[rows]), rel=1e-9)
        assert calibration[i] == pytest.approx(calibration_error(y[rows], p[rows]), rel=1e-9, abs=1e-12)


def test_performance_drift_rises_when_the_model_stops_fitting() -> None:
    rng = np.random.default_rng(4)
    p = np.full(400, 0.8)
    y = np.r_[(rng.random(200) < 0.8), (rng.random(200) < 0.2)].astype(float)
    losses, calibration = performance_drift(y, p, 100)
    assert losses[-1] > 2 * losses[199] and calibration[-1] > 0.4 > 0.1 > calibration[199]


def test_performance_drift_of_a_series_shorter_than_the_window_is_all_nan() -> None:
    losses, calibration = performance_drift([1.0, 0.0], [0.5, 0.5], 3)
    assert np.isnan(losses).all() and np.isnan(calibration).all() and len(losses) == 2


@pytest.mark.parametrize(
    ("y", "p", "window", "bins", "message"),
    [
        ([1.0], [0.5], 0, 10, r"'window' must be >= 1, was 0"),
        ([1.0], [0.5], 1, 0, r"'bins' must be >= 1, was 0"),
        ([1.0, 0.0], [0.5], 1, 10, r"'label_up' and 'p_up' must be 1-D of equal length, got \(2,\) and \(1,\)"),
        ([[1.0]], [[0.5]], 1, 10, r"must be 1-D of equal length"),
        ([1.0, math.nan], [0.5, 0.5], 1, 10, r"must not hold NaN; drop unrealised rows first"),
        ([1.0, 0.0], [0.5, math.nan], 1, 10, r"must not hold NaN"),
        ([1.0, 2.0], [0.5, 0.5], 1, 10, r"'label_up' must hold only 0 and 1"),
        ([1.0, 0.0], [0.5, -0.1], 1, 10, r"'p_up' must lie in \[0, 1\], found -0.1..0.5"),
    ],
)
def test_performance_drift_refuses_bad_input(y, p, window: int, bins: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        performance_drift(y, p, window, bins)


THRESHOLDS = {"psi_threshold": 0.25, "log_loss_threshold": 0.69, "calibration_threshold": 0.05}


def test_verdict_lists_each_breach_with_figure_and_bound_in_a_stable_order() -> None:
    verdict = drift_verdict({"vol_48": 0.4, "ret_1": 0.3, "rsi_14": 0.1}, 0.7, 0.05, **THRESHOLDS)
    assert verdict.triggered
    assert verdict.breaches == ("psi ret_1 0.3 > 0.25", "psi vol_48 0.4 > 0.25", "log_loss 0.7 > 0.69")
    assert verdict.unmeasured == ()
    record = dataclasses.asdict(verdict)
    assert record["triggered"] is True and record["feature_psi"] == {"vol_48": 0.4, "ret_1": 0.3, "rsi_14": 0.1}


def test_verdict_at_the_bounds_does_not_trigger_and_nan_is_recorded_as_unmeasured() -> None:
    verdict = drift_verdict({"a": 0.25, "b": math.nan}, 0.69, math.nan, **THRESHOLDS)
    assert not verdict.triggered and verdict.breaches == ()
    assert verdict.unmeasured == ("psi b", "calibration_error")


def test_verdict_triggered_is_derived_from_its_breaches() -> None:
    verdict = DriftVerdict({}, 0.1, 0.01, 0.25, 0.69, 0.05, ("calibration_error 0.2 > 0.05",), ())
    assert verdict.triggered
    with pytest.raises(TypeError):
        DriftVerdict({}, 0.1, 0.01, 0.25, 0.69, 0.05, (), (), triggered=True)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"), [("psi_threshold", -0.1), ("log_loss_threshold", math.nan), ("calibration_threshold", math.inf)]
)
def test_verdict_refuses_a_bad_threshold_naming_it(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"'{name}' must be a finite number >= 0, was {value}"):
        drift_verdict({}, 0.5, 0.01, **{**THRESHOLDS, name: value})
