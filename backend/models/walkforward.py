"""Walk-forward folds over the time axis, with a purge gap so no training label sees a test bar."""

from __future__ import annotations

from dataclasses import dataclass

from backend.config.schema import WalkForwardSpec
from backend.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold, as half-open ranges ``[start, end)`` of bar indices."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def make_folds(n_bars: int, spec: WalkForwardSpec) -> list[Fold]:
    """Split ``n_bars`` time steps into walk-forward folds.

    The span after ``min_train_bars`` is cut into ``n_folds`` consecutive test spans. Each fold
    trains only on bars before its test span, ending ``purge_bars + embargo_bars`` bars before it:
    the purge removes training rows whose forward label reaches into the test span, the embargo
    adds a further gap against serial correlation. ``expanding`` trains from the first bar,
    ``rolling`` on the last ``train_bars`` bars.

    Raises
    ------
    ConfigError
        When the data is too short for the requested folds.
    """
    gap = spec.purge_bars + spec.embargo_bars
    test_total = n_bars - spec.min_train_bars
    if test_total < spec.n_folds:
        raise ConfigError(
            f"'training.walk_forward.min_train_bars' ({spec.min_train_bars}) leaves {max(test_total, 0)} bars "
            f"for {spec.n_folds} folds; need at least one bar per fold (data has {n_bars} bars)"
        )
    if spec.min_train_bars - gap < 10:
        raise ConfigError(
            f"'training.walk_forward.min_train_bars' must be >= purge_bars + embargo_bars + 10 "
            f"({gap + 10}), was {spec.min_train_bars}"
        )
    folds = []
    for index in range(spec.n_folds):
        test_start = spec.min_train_bars + (test_total * index) // spec.n_folds
        test_end = spec.min_train_bars + (test_total * (index + 1)) // spec.n_folds
        train_end = test_start - gap
        train_start = 0 if spec.scheme == "expanding" else max(0, train_end - int(spec.train_bars))  # type: ignore[arg-type]
        folds.append(Fold(index, train_start, train_end, test_start, test_end))
    return folds
