"""Walk-forward stacking and calibration of the global and specialist outputs (ADR-023, ADR-024).

Each fold's boosters give, per row, a global score ``g`` and the row's specialist score ``s`` (``s = g``
where the symbol has no specialist). A fold's stacker turns the two into the output the strategy reads:

- ``p_up`` and ``p_recovery`` (probabilities): ``sigmoid(c0 + c1 logit(g) + c2 logit(s))``, a logistic
  regression on the boosters' logits. Fitting it is stacking and Platt calibration in one step: the
  weights and the probability scale are both learnt from labels the boosters never saw.
- ``expected_return``: ``c0 + c1 g + c2 s``, a ridge regression on the realised net return
  (winsorised at its 1st and 99th percentiles for the fit).

The stacker of fold ``k`` is fitted only on out-of-fold rows: rows of earlier folds' test spans,
scored by those folds' boosters, with a realised label and a time before fold ``k``'s training
cut-off (``train_end_ms``, which already lies purge + embargo bars before fold ``k``'s test span,
and purge >= the label horizon), so every label it reads was known before fold ``k``'s test span
starts. A fold without enough such rows (the first fold always) falls back to the declared fixed
blend ``(1 - w) g + w s``; the bundle records which rule each fold uses and why.

Fitting is plain numpy with explicit pairwise sums (no BLAS reductions) and a fixed Newton schedule,
so the same rows give the same coefficients; applying a stacker is elementwise arithmetic on the
stored coefficients, so a replay reproduces every prediction byte for byte.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import ModelError

PROBABILITY_TARGETS = ("p_up", "p_recovery")
LOGIT_EPS = 1e-9
NEWTON_STEPS = 100
NEWTON_TOLERANCE = 1e-12
WINSOR_QUANTILE = 0.01


class StackMethod(str, enum.Enum):
    """How a fold combines its global and specialist scores."""

    LOGISTIC = "logistic"
    LINEAR = "linear"
    FIXED_BLEND = "fixed_blend"


class StackReason(str, enum.Enum):
    """Why a fold uses its method: fitted out of fold, or the fallback and its cause."""

    FITTED = "fitted"
    NO_EARLIER_FOLD = "no_earlier_fold"
    TOO_FEW_ROWS = "too_few_rows"
    ONE_CLASS = "one_class"


@dataclass(frozen=True)
class Stacker:
    """One fold's rule for one target, with the rows it was fitted on.

    ``coef`` is ``(c0, c1, c2)``: intercept, global weight, specialist weight (for the fixed blend
    ``(0, 1 - w, w)``). ``label_cutoff_ms`` bounds the rows the fit could read (``ts`` below it);
    ``source_folds`` are the folds those rows came from.
    """

    fold: int
    target: str
    method: StackMethod
    reason: StackReason
    coef: tuple[float, float, float]
    rows: int
    label_cutoff_ms: int
    source_folds: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the stacker as JSON-ready data (floats are written in full, so they read back exactly)."""
        return {
            "fold": self.fold,
            "target": self.target,
            "method": self.method.value,
            "reason": self.reason.value,
            "coef": list(self.coef),
            "rows": self.rows,
            "label_cutoff_ms": self.label_cutoff_ms,
            "source_folds": list(self.source_folds),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Stacker:
        """Read a stacker written by :meth:`to_json`."""
        c0, c1, c2 = (float(c) for c in row["coef"])
        return cls(
            fold=int(row["fold"]),
            target=str(row["target"]),
            method=StackMethod(row["method"]),
            reason=StackReason(row["reason"]),
            coef=(c0, c1, c2),
            rows=int(row["rows"]),
            label_cutoff_ms=int(row["label_cutoff_ms"]),
            source_folds=tuple(int(f) for f in row["source_folds"]),
        )


def logit(p: np.ndarray) -> np.ndarray:
    """Return ``log(p / (1 - p))`` with ``p`` clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]``."""
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _inputs(target: str, general: np.ndarray, specialist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if target in PROBABILITY_TARGETS:
        return logit(general), logit(specialist)
    return general, specialist


def apply_stacker(stacker: Stacker, general: np.ndarray, specialist: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Return the fold's output for rows with global scores ``general`` and specialist scores ``specialist``.

    ``own`` marks the rows whose symbol has a specialist; elsewhere ``specialist`` must equal ``general``.
    The fixed blend leaves those rows at ``general`` exactly, like the compiled blend does.
    """
    c0, c1, c2 = stacker.coef
    if stacker.method is StackMethod.FIXED_BLEND:
        out = general.copy()
        out[own] = c1 * general[own] + c2 * specialist[own]
        return out
    x1, x2 = _inputs(stacker.target, general, specialist)
    z = c0 + c1 * x1 + c2 * x2
    return _sigmoid(z) if stacker.method is StackMethod.LOGISTIC else z


def _normal_equations(x1: np.ndarray, x2: np.ndarray, w: np.ndarray, r: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X'WX + L, X'r)`` for ``X = [1, x1, x2]`` with explicit pairwise sums (no BLAS)."""
    columns = (np.ones_like(x1), x1, x2)
    hessian = np.empty((3, 3))
    gradient = np.empty(3)
    for i in range(3):
        gradient[i] = float(np.sum(columns[i] * r))
        for j in range(i, 3):
            hessian[i, j] = hessian[j, i] = float(np.sum(w * columns[i] * columns[j]))
    hessian[1, 1] += l2
    hessian[2, 2] += l2
    return hessian, gradient


def fit_logistic(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, float, float]:
    """Fit ``P(y = 1) = sigmoid(c0 + c1 x1 + c2 x2)`` by Newton's method with an L2 penalty on ``c1, c2``.

    Raises
    ------
    ModelError
        When Newton's method does not converge in ``NEWTON_STEPS`` steps.
    """
    coef = np.zeros(3)
    rate = float(np.mean(y))
    coef[0] = math.log(rate / (1.0 - rate))
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(coef[0] + coef[1] * x1 + coef[2] * x2)
        hessian, gradient = _normal_equations(x1, x2, p * (1.0 - p), y - p, l2)
        gradient[1:] -= l2 * coef[1:]
        step = np.linalg.solve(hessian, gradient)
        coef = coef + step
        if float(np.max(np.abs(step))) < NEWTON_TOLERANCE:
            return float(coef[0]), float(coef[1]), float(coef[2])
    raise ModelError(f"logistic stacker did not converge in {NEWTON_STEPS} Newton steps on {len(y)} rows")


def fit_linear(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, float, float]:
    """Fit ``y = c0 + c1 x1 + c2 x2`` by ridge regression (L2 penalty on ``c1, c2``)."""
    hessian, gradient = _normal_equations(x1, x2, np.ones_like(x1), y, l2)
    c0, c1, c2 = (float(c) for c in np.linalg.solve(hessian, gradient))
    return c0, c1, c2


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold rows of one target: each row's time, fold, boosters' scores and realised label (NaN: unknown)."""

    ts: np.ndarray
    fold: np.ndarray
    general: np.ndarray
    specialist: np.ndarray
    label: np.ndarray


def fit_stacker(
    fold: int,
    target: str,
    cutoff_ms: int,
    rows: OutOfFold,
    min_rows: int,
    l2: float,
    weight: float,
) -> Stacker:
    """Fit fold ``fold``'s stacker for ``target`` on the rows of ``rows`` before ``cutoff_ms`` from earlier folds.

    Falls back to the fixed blend with weight ``weight`` when there is no earlier fold, fewer than
    ``min_rows`` usable rows, or (for a probability) a single class among them.
    """
    fixed = (0.0, 1.0 - weight, weight)
    keep = (rows.fold < fold) & (rows.ts < cutoff_ms) & ~np.isnan(rows.label) & ~np.isnan(rows.general)
    count = int(keep.sum())
    sources = tuple(int(f) for f in np.unique(rows.fold[keep]))

    def rule(method: StackMethod, reason: StackReason, coef: tuple[float, float, float]) -> Stacker:
        return Stacker(fold, target, method, reason, coef, count, int(cutoff_ms), sources)

    if not np.any(rows.fold < fold):
        return rule(StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, fixed)
    if count < min_rows:
        return rule(StackMethod.FIXED_BLEND, StackReason.TOO_FEW_ROWS, fixed)
    x1, x2 = _inputs(target, rows.general[keep], rows.specialist[keep])
    y = rows.label[keep]
    if target in PROBABILITY_TARGETS:
        if float(y.min()) == float(y.max()):
            return rule(StackMethod.FIXED_BLEND, StackReason.ONE_CLASS, fixed)
        return rule(StackMethod.LOGISTIC, StackReason.FITTED, fit_logistic(x1, x2, y, l2))
    # Net returns are heavy-tailed: the fit reads them winsorised at their 1st and 99th percentiles, so a
    # handful of crashes cannot set the weights (the output stays a return: the scale is kept).
    low, high = np.quantile(y, [WINSOR_QUANTILE, 1.0 - WINSOR_QUANTILE])
    return rule(StackMethod.LINEAR, StackReason.FITTED, fit_linear(x1, x2, np.clip(y, low, high), l2))


def describe(stacker: Stacker) -> str:
    """Return one line saying which rule a fold uses for a target, and why."""
    if stacker.reason is StackReason.FITTED:
        coef = ", ".join(f"{c:.4g}" for c in stacker.coef)
        return (
            f"fold {stacker.fold}: {stacker.target} {stacker.method.value} stacker ({coef}) fitted on "
            f"{stacker.rows} out-of-fold rows of folds {list(stacker.source_folds)}"
        )
    return f"fold {stacker.fold}: {stacker.target} uses the fixed blend ({stacker.reason.value}, {stacker.rows} usable rows)"

