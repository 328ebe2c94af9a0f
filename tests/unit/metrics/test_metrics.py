"""Out-of-sample metrics against values computed by hand, and their behaviour on degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.models.metrics import (
    auc,
    average_ranks,
    calibration_error,
    fold_metrics,
    hit_rate,
    information_coefficient,
    log_loss,
)


def test_average_ranks_are_one_based_and_share_the_mean_rank_on_ties() -> None:
    assert average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks([]).tolist() == []


def test_auc_counts_the_share_of_positive_negative_pairs_ranked_correctly() -> None:
    # Pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, 0.1) ok, (0.8, 0.4) ok -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auc([0, 1], [0.2, 0.9]) == 1.0
    assert auc([0, 1], [0.9, 0.2]) == 0.0


def test_auc_counts_tied_scores_as_half() -> None:
    # Every pair tied: 0.5. One pair tied of two: (1 + 0.5) / 2.
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auc([0, 0, 1], [0.3, 0.6, 0.6]) == 0.75


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_is_nan_with_only_one_class(labels: list[int]) -> None:
    assert math.isnan(auc(labels, [0.5] * len(labels)))


def test_log_loss_is_the_mean_cross_entropy_and_clips_certain_mistakes() -> None:
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(expected, rel=1e-12)
    # A confident mistake costs -ln(eps), not infinity.
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15), rel=1e-9)
    assert log_loss([0], [1.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-9)
    assert math.isnan(log_loss([], []))


def test_information_coefficient_is_spearman_with_averaged_ties() -> None:
    assert information_coefficient([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert information_coefficient([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # Ranks y: 1, 2, 3, 4; pred: 1.5, 1.5, 4, 3. Centred: (-1.5, -.5, .5, 1.5) and (-1, -1, 1.5, .5).
    # dot = 1.5 + .5 + .75 + .75 = 3.5; norms sqrt(5) and sqrt(4.5).
    assert information_coefficient([0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 5.0, 2.0]) == pytest.approx(3.5 / math.sqrt(5 * 4.5), rel=1e-12)


@pytest.mark.parametrize(("y", "pred"), [([1.0], [2.0]), ([], []), ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]), ([0.0, 0.0], [1.0, 2.0])])
def test_information_coefficient_is_nan_when_a_side_has_no_spread(y: list[float], pred: list[float]) -> None:
    assert math.isnan(information_coefficient(y, pred))


def test_hit_rate_is_the_share_of_matching_signs_and_a_zero_matches_only_a_zero() -> None:
    assert hit_rate([0.1, -0.2, 0.3, -0.4], [0.5, -0.1, -0.2, 0.3]) == 0.5
    assert hit_rate([0.0, 0.0, 0.1], [0.0, 0.1, 0.1]) == pytest.approx(2 / 3)
    assert math.isnan(hit_rate([], []))


def test_calibration_error_weights_each_bins_gap_by_its_share_of_rows() -> None:
    # Bins of 0.1: 0.95 -> bin 9 (gap 1 - .95 = .05), 0.05 -> bin 0 (gap -.05), 0.5 -> bin 5 (gap .5).
    assert calibration_error([1, 0, 1], [0.95, 0.05, 0.5]) == pytest.approx((0.05 + 0.05 + 0.5) / 3, rel=1e-12)
    # Inside one bin, errors of opposite sign cancel: that is what calibration measures.
    # With two bins 0.52 (label 1) and 0.48 (label 0) fall apart: gaps .48 and -.48, no cancelling.
    assert calibration_error([1, 0], [0.52, 0.48], bins=2) == pytest.approx(0.48, rel=1e-12)
    assert calibration_error([1, 0], [0.6, 0.4], bins=1) == pytest.approx(0.0, abs=1e-15)
    # p = 1.0 falls in the last bin.
    assert calibration_error([1], [1.0]) == 0.0
    assert math.isnan(calibration_error([], []))


def test_a_perfectly_calibrated_forecast_has_near_zero_calibration_error() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(float)
    assert calibration_error(y, p) < 0.005


def test_fold_metrics_drops_rows_with_any_missing_value_and_reports_all_keys() -> None:
    nan = math.nan
    out = fold_metrics(
        [1, 0, nan, 1, 0], [0.02, -0.01, 0.5, 0.03, nan], [0.7, 0.2, 0.5, 0.6, 0.4], [0.01, -0.02, 0.2, 0.02, 0.0]
    )
    assert out == {
        "auc": 1.0,
        "log_loss": pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.6)) / 3, rel=1e-12),
        "ic": pytest.approx(1.0),
        "hit_rate": 1.0,
        "calibration_error": pytest.approx((0.3 + 0.2 + 0.4) / 3, rel=1e-12),
        "n": 3.0,
    }


def test_fold_metrics_of_an_empty_or_one_class_fold_are_nan_where_undefined() -> None:
    empty = fold_metrics([], [], [], [])
    assert empty["n"] == 0.0
    assert all(math.isnan(v) for k, v in empty.items() if k != "n")
    one_class = fold_metrics([1, 1], [0.1, 0.2], [0.6, 0.7], [0.1, 0.3])
    assert math.isnan(one_class["auc"]) and one_class["hit_rate"] == 1.0 and one_class["n"] == 2.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auc([0, 1], [0.5]), r"inputs must have equal lengths, got \{'y': 2, 'p': 1\}"),
        (lambda: auc([[0, 1]], [[0.5, 0.5]]), r"'y' must be 1-D, has shape \(1, 2\)"),
        (lambda: auc([0, 2], [0.5, 0.5]), r"'y' must hold only 0 and 1"),
        (lambda: log_loss([0, 1], [0.5, math.nan]), r"'p' holds 1 NaN values; drop unrealised rows first"),
        (lambda: log_loss([0, 1], [0.5, 1.2]), r"'p' must lie in \[0, 1\], found 0.5..1.2"),
        (lambda: calibration_error([0], [0.5], bins=0), r"'bins' must be >= 1, was 0"),
        (lambda: fold_metrics([1], [0.1, 0.2], [0.5], [0.1]), r"inputs must have equal lengths, got \[1, 2, 1, 1\]"),
    ],
)
def test_bad_inputs_are_refused_naming_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_metrics_are_deterministic_on_large_inputs() -> None:
    rng = np.random.default_rng(5)
    y_ret = rng.normal(size=50_000)
    pred = y_ret + rng.normal(scale=3.0, size=50_000)
    up = (y_ret > 0).astype(float)
    p = 1 / (1 + np.exp(-pred))
    first = fold_metrics(up, y_ret, p, pred)
    assert first == fold_metrics(up, y_ret, p, pred)
    assert 0.6 < first["auc"] < 0.7 and 0.25 < first["ic"] < 0.35
