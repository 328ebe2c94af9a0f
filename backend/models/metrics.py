"""Out-of-sample quality metrics in plain numpy: deterministic, no sklearn.

Every function takes 1-D arrays of equal length. ``fold_metrics`` drops rows where any input is
missing (NaN: unrealised labels, rows without a prediction); the single metrics refuse NaN, so a
missing value is never silently counted. Where a metric is undefined for the data (one class for
AUC, a constant series for the rank correlation, no rows at all) it returns NaN, documented per
function, rather than a number that looks like a measurement.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

LOG_LOSS_EPS = 1e-15


def _arrays(**named: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(value, dtype=np.float64) for value in named.values()]
    names = list(named)
    for name, array in zip(names, arrays):
        if array.ndim != 1:
            raise ValueError(f"'{name}' must be 1-D, has shape {array.shape}")
        if np.isnan(array).any():
            raise ValueError(f"'{name}' holds {int(np.isnan(array).sum())} NaN values; drop unrealised rows first")
    lengths = {name: len(array) for name, array in zip(names, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    return arrays


def _binary(name: str, y: np.ndarray) -> None:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"'{name}' must hold only 0 and 1")


def _probabilities(name: str, p: np.ndarray) -> None:
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError(f"'{name}' must lie in [0, 1], found {float(p.min())}..{float(p.max())}")


def average_ranks(x: ArrayLike) -> np.ndarray:
    """Return the 1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    values = np.asarray(x, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc(y: ArrayLike, p: ArrayLike) -> float:
    """Return the area under the ROC curve of scores ``p`` for binary labels ``y``.

    Computed as the Mann-Whitney statistic with tied scores counted one half. NaN when ``y``
    holds only one class (or nothing): ranking needs both.
    """
    labels, scores = _arrays(y=y, p=p)
    _binary("y", labels)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = float(average_ranks(scores)[labels == 1.0].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def log_loss(y: ArrayLike, p: ArrayLike, eps: float = LOG_LOSS_EPS) -> float:
    """Return the mean binary cross-entropy, with ``p`` clipped to ``[eps, 1 - eps]``; NaN when empty."""
    labels, probabilities = _arrays(y=y, p=p)
    _binary("y", labels)
    _probabilities("p", probabilities)
    if len(labels) == 0:
        return math.nan
    clipped = np.clip(probabilities, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(clipped) + (1.0 - labels) * np.log(1.0 - clipped)))


def information_coefficient(y_ret: ArrayLike, pred: ArrayLike) -> float:
    """Return the Spearman rank correlation of predictions and realised returns (ties averaged).

    NaN with fewer than two rows or when either series is constant (its ranks have no spread).
    """
    returns, predictions = _arrays(y_ret=y_ret, pred=pred)
    if len(returns) < 2:
        return math.nan
    a = average_ranks(returns) - (len(returns) + 1) / 2.0
    b = average_ranks(predictions) - (len(returns) + 1) / 2.0
    spread = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if spread == 0.0:
        return math.nan
    return float(np.dot(a, b)) / spread


def hit_rate(y_ret: ArrayLike, pred: ArrayLike) -> float:
    """Return the share of rows where the prediction's sign equals the realised return's sign.

    ``numpy.sign`` is compared, so an exact zero matches only a zero. NaN when empty.
    """
    returns, predictions = _arrays(y_ret=y_ret, pred=pred)
    if len(returns) == 0:
        return math.nan
    return float(np.mean(np.sign(returns) == np.sign(predictions)))


def calibration_error(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """Return the expected calibration error over ``bins`` equal-width probability bins.

    ``sum_b (n_b / n) |mean(y in b) - mean(p in b)|``; bin ``b`` holds ``[b/bins, (b+1)/bins)``,
    the last bin also holds 1.0. NaN when empty.
    """
    if bins < 1:
        raise ValueError(f"'bins' must be >= 1, was {bins}")
    labels, probabilities = _arrays(y=y, p=p)
    _binary("y", labels)
    _probabilities("p", probabilities)
    if len(labels) == 0:
        return math.nan
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    gaps = np.bincount(index, weights=labels - probabilities, minlength=bins)
    return float(np.abs(gaps).sum() / len(labels))


def fold_metrics(
    label_up: ArrayLike, label_return: ArrayLike, p_up: ArrayLike, expected_return: ArrayLike
) -> dict[str, float]:
    """Return the out-of-sample metrics of one fold.

    Keys: ``auc`` and ``log_loss`` and ``calibration_error`` of ``p_up`` against ``label_up``;
    ``ic`` (Spearman) and ``hit_rate`` of ``expected_return`` against ``label_return``; ``n``, the
    rows used: those where all four inputs are present (not NaN).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (label_up, label_return, p_up, expected_return)]
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    keep = ~np.isnan(np.vstack(arrays)).any(axis=0)
    up, ret, p, er = (a[keep] for a in arrays)
    return {
        "auc": auc(up, p),
        "log_loss": log_loss(up, p),
        "ic": information_coefficient(ret, er),
        "hit_rate": hit_rate(ret, er),
        "calibration_error": calibration_error(up, p),
        "n": float(len(up)),
    }
