"""Drift monitors: feature drift (population stability) and performance drift (rolling loss, calibration).

Pure functions over arrays and frames; the retraining scheduler (``acts train --schedule``) feeds
them the training-time reference and the recent live or backtest window, and acts on the
:class:`DriftVerdict` they produce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from backend.models.metrics import LOG_LOSS_EPS

PSI_EPS = 1e-6


def _finite(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"'{name}' must be 1-D, has shape {array.shape}")
    array = array[np.isfinite(array)]
    if len(array) == 0:
        raise ValueError(f"'{name}' has no finite values: population stability needs data on both sides")
    return array


def population_stability_index(reference: ArrayLike, current: ArrayLike, bins: int = 10) -> float:
    """Return the population stability index of ``current`` against ``reference``.

    Bin edges are the ``bins``-quantiles of ``reference`` (repeated edges merged, so a reference
    with few distinct values gives fewer bins); the outer bins are open-ended. Shares are floored at
    ``PSI_EPS`` so an empty bin gives a large but finite term. ``PSI = sum (c - r) ln(c / r)``.
    Non-finite values are dropped from both sides. Common reading: < 0.1 stable, 0.1-0.25 moderate
    shift, > 0.25 major shift.

    Raises
    ------
    ValueError
        When ``bins`` < 1, or either side has no finite value.
    """
    if bins < 1:
        raise ValueError(f"'bins' must be >= 1, was {bins}")
    ref = _finite("reference", reference)
    cur = _finite("current", current)
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = len(inner) + 1
    ref_share = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=n_bins) / len(ref)
    cur_share = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=n_bins) / len(cur)
    ref_share = np.maximum(ref_share, PSI_EPS)
    cur_share = np.maximum(cur_share, PSI_EPS)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def feature_drift(
    reference: pl.DataFrame, current: pl.DataFrame, columns: Sequence[str], bins: int = 10
) -> dict[str, float]:
    """Return the population stability index of each of ``columns``, current against reference.

    Nulls and non-finite values are dropped per column. A column with no finite value on either
    side gets NaN (nothing to compare: the verdict reports it as unmeasured, never as stable).

    Raises
    ------
    ValueError
        When a column is missing from either frame.
    """
    for side, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{side} frame has no column(s) {missing}")
    out: dict[str, float] = {}
    for column in columns:
        ref = reference[column].cast(pl.Float64).drop_nulls().to_numpy()
        cur = current[column].cast(pl.Float64).drop_nulls().to_numpy()
        if not np.isfinite(ref).any() or not np.isfinite(cur).any():
            out[column] = math.nan
            continue
        out[column] = population_stability_index(ref, cur, bins)
    return out


def performance_drift(
    label_up: ArrayLike, p_up: ArrayLike, window: int, bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Return the rolling log loss and rolling expected calibration error over realised labels.

    Element ``i`` of each array covers rows ``i - window + 1 .. i``; the first ``window - 1``
    elements are NaN (window not full). Inputs are realised pairs in time order: drop rows whose
    label is not known yet before calling. The calibration error uses ``bins`` equal-width bins,
    like :func:`backend.models.metrics.calibration_error`.

    Raises
    ------
    ValueError
        On unequal lengths, NaN, labels other than 0/1, probabilities outside [0, 1], or a bad
        ``window`` or ``bins``.
    """
    if window < 1:
        raise ValueError(f"'window' must be >= 1, was {window}")
    if bins < 1:
        raise ValueError(f"'bins' must be >= 1, was {bins}")
    y = np.asarray(label_up, dtype=np.float64)
    p = np.asarray(p_up, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"'label_up' and 'p_up' must be 1-D of equal length, got {y.shape} and {p.shape}")
    if np.isnan(y).any() or np.isnan(p).any():
        raise ValueError("'label_up' and 'p_up' must not hold NaN; drop unrealised rows first")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("'label_up' must hold only 0 and 1")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError(f"'p_up' must lie in [0, 1], found {float(p.min())}..{float(p.max())}")
    n = len(y)
    loss_out = np.full(n, np.nan)
    calibration_out = np.full(n, np.nan)
    if n < window:
        return loss_out, calibration_out
    clipped = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    losses = -(y * np.log(clipped) + (1.0 - y) * np.log(1.0 - clipped))
    loss_out[window - 1 :] = _window_sums(losses, window) / window
    # Per bin, the windowed sum of (label - probability); the ECE of a window is the sum of their
    # absolute values over the window length.
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap_sums = np.zeros(n - window + 1)
    for b in range(bins):
        gap_sums += np.abs(_window_sums(np.where(index == b, y - p, 0.0), window))
    calibration_out[window - 1 :] = gap_sums / window
    return loss_out, calibration_out


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    # Sums of every full window; cumulative sums of a difference stay exact enough for monitoring
    # (the bins are reset per window, not accumulated over the whole series).
    total = np.concatenate([[0.0], np.cumsum(values)])
    return total[window:] - total[:-window]


@dataclass(frozen=True)
class DriftVerdict:
    """The outcome of one drift check: the evidence, the thresholds and whether retraining triggers.

    ``breaches`` lists each figure above its threshold as ``"<what> <figure> > <bound>"``;
    ``unmeasured`` lists figures that were NaN (no data), which never trigger but are recorded;
    ``triggered`` is True when there is at least one breach.
    """

    feature_psi: Mapping[str, float]
    log_loss: float
    calibration_error: float
    psi_threshold: float
    log_loss_threshold: float
    calibration_threshold: float
    breaches: tuple[str, ...]
    unmeasured: tuple[str, ...]
    triggered: bool = field(init=False)

    def __post_init__(self) -> None:
        # Derived, never passed: a verdict cannot claim a trigger its breaches do not show.
        object.__setattr__(self, "triggered", bool(self.breaches))


def drift_verdict(
    feature_psi: Mapping[str, float],
    log_loss: float,
    calibration_error: float,
    *,
    psi_threshold: float,
    log_loss_threshold: float,
    calibration_threshold: float,
) -> DriftVerdict:
    """Compare the drift figures with their thresholds and return the verdict.

    A figure triggers when it is strictly greater than its threshold. Features are checked in
    sorted order so the breaches read the same on every run.

    Raises
    ------
    ValueError
        When a threshold is negative or not finite.
    """
    thresholds = {
        "psi_threshold": psi_threshold,
        "log_loss_threshold": log_loss_threshold,
        "calibration_threshold": calibration_threshold,
    }
    for name, value in thresholds.items():
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"'{name}' must be a finite number >= 0, was {value}")
    figures = [(f"psi {name}", feature_psi[name], psi_threshold) for name in sorted(feature_psi)]
    figures += [("log_loss", log_loss, log_loss_threshold), ("calibration_error", calibration_error, calibration_threshold)]
    breaches, unmeasured = [], []
    for what, figure, bound in figures:
        if math.isnan(figure):
            unmeasured.append(what)
        elif figure > bound:
            breaches.append(f"{what} {figure:.6g} > {bound:.6g}")
    return DriftVerdict(
        dict(feature_psi),
        log_loss,
        calibration_error,
        psi_threshold,
        log_loss_threshold,
        calibration_threshold,
        tuple(breaches),
        tuple(unmeasured),
    )
