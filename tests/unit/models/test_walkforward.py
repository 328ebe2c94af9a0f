"""Tests for backend.models.walkforward: fold layout, the purge gap, window schemes, refusals."""

from __future__ import annotations

import pytest

from backend.config.schema import WalkForwardSpec
from backend.errors import ConfigError
from backend.models.walkforward import Fold, make_folds


def _spec(**changes: object) -> WalkForwardSpec:
    values: dict[str, object] = {
        "scheme": "expanding",
        "n_folds": 3,
        "min_train_bars": 100,
        "train_bars": None,
        "purge_bars": 12,
        "embargo_bars": 3,
    }
    values.update(changes)
    return WalkForwardSpec.model_validate(values)


@pytest.mark.parametrize(("n_bars", "n_folds"), [(400, 3), (101, 1), (103, 3), (1000, 7), (250, 4)])
def test_test_spans_cover_the_bars_after_min_train_exactly_once_in_order(n_bars: int, n_folds: int) -> None:
    folds = make_folds(n_bars, _spec(n_folds=n_folds))

    covered = [bar for fold in folds for bar in range(fold.test_start, fold.test_end)]
    assert covered == list(range(100, n_bars))
    assert [fold.index for fold in folds] == list(range(n_folds))
    assert all(fold.test_end > fold.test_start for fold in folds)


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
@pytest.mark.parametrize(("purge", "embargo"), [(12, 3), (0, 0), (40, 10)])
def test_training_ends_purge_plus_embargo_bars_before_the_test_span(scheme: str, purge: int, embargo: int) -> None:
    folds = make_folds(500, _spec(scheme=scheme, train_bars=30, purge_bars=purge, embargo_bars=embargo))

    for fold in folds:
        assert fold.train_end + purge + embargo == fold.test_start
        # The last training row's forward label (horizon <= purge) ends before the first test bar.
        assert (fold.train_end - 1) + purge < fold.test_start


def test_expanding_folds_all_train_from_the_first_bar() -> None:
    folds = make_folds(400, _spec())

    assert folds == [
        Fold(0, 0, 85, 100, 200),
        Fold(1, 0, 185, 200, 300),
        Fold(2, 0, 285, 300, 400),
    ]


def test_rolling_folds_train_on_the_last_train_bars_bars() -> None:
    folds = make_folds(400, _spec(scheme="rolling", train_bars=50))

    assert [(f.train_start, f.train_end) for f in folds] == [(35, 85), (135, 185), (235, 285)]


def test_a_rolling_window_longer_than_the_history_starts_at_the_first_bar() -> None:
    folds = make_folds(400, _spec(scheme="rolling", train_bars=150))

    assert [(f.train_start, f.train_end) for f in folds] == [(0, 85), (35, 185), (135, 285)]


@pytest.mark.parametrize(("n_bars", "left"), [(102, 2), (100, 0), (40, 0)])
def test_data_too_short_for_the_folds_is_refused_naming_the_counts(n_bars: int, left: int) -> None:
    with pytest.raises(ConfigError) as caught:
        make_folds(n_bars, _spec())

    message = str(caught.value)
    assert "'training.walk_forward.min_train_bars' (100)" in message
    assert f"leaves {left} bars for 3 folds" in message
    assert f"data has {n_bars} bars" in message


def test_min_train_bars_that_leave_fewer_than_ten_training_bars_after_the_gap_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        make_folds(400, _spec(min_train_bars=24, purge_bars=12, embargo_bars=3))

    assert "must be >= purge_bars + embargo_bars + 10 (25), was 24" in str(caught.value)


def test_min_train_bars_of_exactly_gap_plus_ten_are_accepted() -> None:
    folds = make_folds(400, _spec(min_train_bars=25, purge_bars=12, embargo_bars=3))

    assert folds[0] == Fold(0, 0, 10, 25, 150)
