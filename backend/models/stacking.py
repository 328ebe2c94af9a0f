"""Walk-forward stacking and calibration of the global and specialist outputs (ADR-023, ADR-024).

Each fold's boosters give, per row and target, a global score ``g`` and the row's specialist score
``s`` (``s = g`` where the symbol has no specialist). A fold's stacker turns them into the output the
strategy reads. Its inputs are named ``<target>.global`` and ``<target>.specialist``; a probability
target's scores enter as logits.

- ``p_up`` and ``p_recovery`` (probabilities): ``sigmoid(c0 + c1 logit(g) + c2 logit(s))`` of the
  target's own boosters, a logistic regression. Fitting it is stacking and Platt calibration in one
  step: the weights and the probability scale are both learnt from labels the boosters never saw.
- ``expected_return``: ``c0 + c1 g + c2 s + c3 logit(g_up) + c4 logit(s_up)``, a ridge regression on the
  realised net return (winsorised at its 1st and 99th percentiles for the fit): the return boosters'
  scores and the up-probability boosters' logits, which rank the same net return.

The stacker of fold ``k`` is fitted only on out-of-fold rows: rows of earlier folds' test spans,
scored by those folds' boosters, with a realised label and a time before fold ``k``'s training
cut-off (``train_end_ms``, which already lies purge + embargo bars before fold ``k``'s test span,
and purge >= the label horizon), so every label it reads was known before fold ``k``'s test span
starts. A fold without enough such rows (the first fold always) falls back to the declared fixed
blend ``(1 - w) g + w s`` of the target's own scores; the bundle records which rule each fold uses and why.
A bundle written before stacking records no stackers: every fold uses its fixed blend (:func:`legacy_blend`).

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
from backend.models.metrics import average_ranks

PROBABILITY_TARGETS = ("p_up", "p_recovery")
LOGIT_EPS = 1e-9
NEWTON_STEPS = 100
NEWTON_TOLERANCE = 1e-10  # relative to the coefficients (see fit_logistic)
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
    PREDATES_STACKING = "predates_stacking"
    NO_GAIN = "no_out_of_fold_gain"


@dataclass(frozen=True)
class Stacker:
    """One fold's rule for one target, with the rows it was fitted on.

    ``coef`` is the intercept followed by one weight per name in ``inputs`` (for the fixed blend
    ``(0, 1 - w, w)`` on the target's global and specialist scores). ``label_cutoff_ms`` bounds the
    rows the fit could read (``ts`` below it); ``source_folds`` are the folds those rows came from.
    ``check`` is the out-of-fold check that chose between the fitted rule and the fixed blend
    (:func:`fit_stacker`): the fitted rule's score and the fixed blend's on the later half of the
    rows, log loss for a probability (lower is better) and rank correlation (IC) for
    ``expected_return`` (higher is better); empty when no fit was tried.
    """

    fold: int
    target: str
    method: StackMethod
    reason: StackReason
    inputs: tuple[str, ...]
    coef: tuple[float, ...]
    rows: int
    label_cutoff_ms: int
    source_folds: tuple[int, ...]
    check: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the stacker as JSON-ready data (floats are written in full, so they read back exactly)."""
        return {
            "fold": self.fold,
            "target": self.target,
            "method": self.method.value,
            "reason": self.reason.value,
            "inputs": list(self.inputs),
            "coef": list(self.coef),
            "rows": self.rows,
            "label_cutoff_ms": self.label_cutoff_ms,
            "source_folds": list(self.source_folds),
            "check": list(self.check),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Stacker:
        """Read a stacker written by :meth:`to_json`."""
        return cls(
            fold=int(row["fold"]),
            target=str(row["target"]),
            method=StackMethod(row["method"]),
            reason=StackReason(row["reason"]),
            inputs=tuple(str(name) for name in row["inputs"]),
            coef=tuple(float(c) for c in row["coef"]),
            rows=int(row["rows"]),
            label_cutoff_ms=int(row["label_cutoff_ms"]),
            source_folds=tuple(int(f) for f in row["source_folds"]),
            check=tuple(float(c) for c in row["check"]),
        )


def legacy_blend(fold: int, target: str, weight: float) -> Stacker:
    """Return the fixed blend with weight ``weight`` of a bundle that predates stacking (ADR-065).

    Such a bundle's manifest records no stackers, only ``specialist_weight``; this rule predicts
    exactly what it always predicted. It read no rows, so its cut-off is 0 and it has no source folds.
    """
    own = (f"{target}.global", f"{target}.specialist")
    return Stacker(fold, target, StackMethod.FIXED_BLEND, StackReason.PREDATES_STACKING, own, (0.0, 1.0 - weight, weight), 0, 0, ())


def logit(p: np.ndarray) -> np.ndarray:
    """Return ``log(p / (1 - p))`` with ``p`` clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]``."""
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def stack_inputs(target: str) -> tuple[str, ...]:
    """The named inputs of a target's fitted stacker (see the module docstring)."""
    own = (f"{target}.global", f"{target}.specialist")
    return own + ("p_up.global", "p_up.specialist") if target == "expected_return" else own


def _column(name: str, scores: dict[str, np.ndarray]) -> np.ndarray:
    """The values of input ``name``: the booster scores, as logits for a probability target."""
    values = scores[name]
    return logit(values) if name.split(".")[0] in PROBABILITY_TARGETS else values


def scores_of(raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Name a fold's raw ``target -> (global, specialist, own)`` scores as stacker inputs."""
    out = {}
    for target, (general, specialist, _own) in raw.items():
        out[f"{target}.global"] = general
        out[f"{target}.specialist"] = specialist
    return out


def apply_stacker(stacker: Stacker, raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Return the fold's output for ``stacker.target`` from the fold's raw ``target -> (global, specialist, own)``.

    ``own`` marks the rows whose symbol has a specialist; elsewhere the specialist score equals the
    global one. The fixed blend leaves those rows at the global score exactly, like the compiled blend does.

    Raises
    ------
    ModelError
        When an input the stacker reads has no scores in ``raw``.
    """
    general, specialist, own = raw[stacker.target]
    if stacker.method is StackMethod.FIXED_BLEND:
        _, c1, c2 = stacker.coef
        out = general.copy()
        out[own] = c1 * general[own] + c2 * specialist[own]
        return out
    scores = scores_of(raw)
    missing = [name for name in stacker.inputs if name not in scores]
    if missing:
        raise ModelError(f"stacker of fold {stacker.fold} for {stacker.target} reads {missing}, which the fold has no boosters for")
    z = np.full(len(general), stacker.coef[0])
    for weight, name in zip(stacker.coef[1:], stacker.inputs):
        z = z + weight * _column(name, scores)
    return _sigmoid(z) if stacker.method is StackMethod.LOGISTIC else z


def _normal_equations(columns: list[np.ndarray], w: np.ndarray, r: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X'WX + L, X'r)`` for ``X = [1, columns...]`` with explicit pairwise sums (no BLAS).

    The penalty ``l2`` applies to every weight but the intercept.
    """
    design = [np.ones_like(w), *columns]
    k = len(design)
    hessian = np.empty((k, k))
    gradient = np.empty(k)
    for i in range(k):
        gradient[i] = float(np.sum(design[i] * r))
        for j in range(i, k):
            hessian[i, j] = hessian[j, i] = float(np.sum(w * design[i] * design[j]))
    hessian[np.arange(1, k), np.arange(1, k)] += l2
    return hessian, gradient


def fit_logistic(columns: list[np.ndarray], y: np.ndarray, l2: float) -> tuple[float, ...]:
    """Fit ``P(y = 1) = sigmoid(c0 + sum c_i x_i)`` by Newton's method with an L2 penalty on the weights.

    Raises
    ------
    ModelError
        When Newton's method does not converge in ``NEWTON_STEPS`` steps.
    """
    coef = np.zeros(len(columns) + 1)
    rate = float(np.mean(y))
    coef[0] = np.log(rate / (1.0 - rate))
    for _ in range(NEWTON_STEPS):
        z = np.full(len(y), coef[0])
        for weight, column in zip(coef[1:], columns):
            z = z + weight * column
        p = _sigmoid(z)
        hessian, gradient = _normal_equations(columns, p * (1.0 - p), y - p, l2)
        gradient[1:] -= l2 * coef[1:]
        step = np.linalg.solve(hessian, gradient)
        coef = coef + step
        # Relative to the coefficients' size: near the optimum a step is rounding noise of |coef| x 1e-16 or so,
        # which an absolute bound on large coefficients (strong separation) would never see.
        if float(np.max(np.abs(step))) < NEWTON_TOLERANCE * (1.0 + float(np.max(np.abs(coef)))):
            return tuple(float(c) for c in coef)
    raise ModelError(f"logistic stacker did not converge in {NEWTON_STEPS} Newton steps on {len(y)} rows")


def fit_linear(columns: list[np.ndarray], y: np.ndarray, l2: float) -> tuple[float, ...]:
    """Fit ``y = c0 + sum c_i x_i`` by ridge regression (L2 penalty on the weights)."""
    hessian, gradient = _normal_equations(columns, np.ones_like(y), y, l2)
    return tuple(float(c) for c in np.linalg.solve(hessian, gradient))


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold rows: each row's time and fold, its boosters' scores by input name, its labels by target (NaN: unknown)."""

    ts: np.ndarray
    fold: np.ndarray
    scores: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def _fit(target: str, columns: list[np.ndarray], y: np.ndarray, l2: float) -> tuple[float, ...]:
    if target in PROBABILITY_TARGETS:
        return fit_logistic(columns, y, l2)
    # Net returns are heavy-tailed: the fit reads them winsorised at their 1st and 99th percentiles, so a
    # handful of crashes cannot set the weights (the output stays a return: the scale is kept).
    low, high = np.quantile(y, [WINSOR_QUANTILE, 1.0 - WINSOR_QUANTILE])
    return fit_linear(columns, np.clip(y, low, high), l2)


def _output(target: str, coef: tuple[float, ...], columns: list[np.ndarray]) -> np.ndarray:
    z = np.full(len(columns[0]), coef[0])
    for weight, column in zip(coef[1:], columns):
        z = z + weight * column
    return _sigmoid(z) if target in PROBABILITY_TARGETS else z


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return float(-np.sum(y * np.log(q) + (1.0 - y) * np.log1p(-q)) / len(y))


def _rank_correlation(y: np.ndarray, pred: np.ndarray) -> float:
    """Spearman's rank correlation with pairwise sums (NaN when a side is constant)."""
    a = average_ranks(y) - (len(y) + 1) / 2.0
    b = average_ranks(pred) - (len(y) + 1) / 2.0
    spread = float(np.sum(a * a)) * float(np.sum(b * b))
    return float(np.sum(a * b)) / math.sqrt(spread) if spread > 0.0 else math.nan


def check_fit(target: str, columns: list[np.ndarray], y: np.ndarray, blend: np.ndarray, l2: float) -> tuple[float, float]:
    """Fit on the earlier half of the rows (in time order) and score the later half: ``(fitted, fixed blend)``.

    The score is the log loss for a probability target and the rank correlation with the label for
    ``expected_return``: the figures the stacker exists to improve (calibration, and the ranking the
    promotion gate's IC and the strategy read). NaN where undefined (a constant side).
    """
    half = len(y) // 2
    early = [c[:half] for c in columns]
    coef = _fit(target, early, y[:half], l2)
    fitted = _output(target, coef, [c[half:] for c in columns])
    if target in PROBABILITY_TARGETS:
        return _log_loss(y[half:], fitted), _log_loss(y[half:], blend[half:])
    return _rank_correlation(y[half:], fitted), _rank_correlation(y[half:], blend[half:])


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

    A row counts when its label and every input (:func:`stack_inputs`) are known. Falls back to the
    fixed blend with weight ``weight`` when no earlier fold scored the target, fewer than ``min_rows``
    rows count, (for a probability) a single class is among the earlier half of them, or the fitted rule
    does not beat the fixed blend out of sample on those rows (ADR-065): fitted on their earlier half in
    time, it must score strictly better than the fixed blend on their later half (:func:`check_fit`).
    Only then is it refitted on all of them. Every row read lies before ``cutoff_ms``.
    """
    fixed = (0.0, 1.0 - weight, weight)
    inputs = stack_inputs(target)
    label = rows.labels[target]
    known = ~np.isnan(label)
    for name in inputs:
        known &= ~np.isnan(rows.scores[name])
    keep = (rows.fold < fold) & (rows.ts < cutoff_ms) & known
    count = int(keep.sum())
    sources = tuple(int(f) for f in np.unique(rows.fold[keep]))

    def rule(method: StackMethod, reason: StackReason, names: tuple[str, ...], coef: tuple[float, ...], check: tuple[float, ...] = ()) -> Stacker:
        return Stacker(fold, target, method, reason, names, coef, count, int(cutoff_ms), sources, check)

    own = (f"{target}.global", f"{target}.specialist")
    if not np.any((rows.fold < fold) & ~np.isnan(rows.scores[own[0]])):
        return rule(StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, own, fixed)
    if count < min_rows:
        return rule(StackMethod.FIXED_BLEND, StackReason.TOO_FEW_ROWS, own, fixed)
    order = np.argsort(rows.ts[keep], kind="stable")  # time order; ties keep the rows' order
    selected = {name: values[keep][order] for name, values in rows.scores.items() if name in inputs}
    columns = [_column(name, selected) for name in inputs]
    y = label[keep][order]
    probability = target in PROBABILITY_TARGETS
    if probability and float(y[: count // 2].min()) == float(y[: count // 2].max()):
        return rule(StackMethod.FIXED_BLEND, StackReason.ONE_CLASS, own, fixed)
    blend = fixed[1] * selected[own[0]] + fixed[2] * selected[own[1]]
    fitted_score, blend_score = check_fit(target, columns, y, blend, l2)
    better = fitted_score < blend_score if probability else fitted_score > blend_score
    check = (fitted_score, blend_score)
    if not better:
        return rule(StackMethod.FIXED_BLEND, StackReason.NO_GAIN, own, fixed, check)
    method = StackMethod.LOGISTIC if probability else StackMethod.LINEAR
    return rule(method, StackReason.FITTED, inputs, _fit(target, columns, y, l2), check)


def _check_text(stacker: Stacker) -> str:
    metric = "log loss" if stacker.target in PROBABILITY_TARGETS else "IC"
    fitted, blend = stacker.check
    return f"; later-half {metric} {fitted:.4g} fitted vs {blend:.4g} fixed blend"


def describe(stacker: Stacker) -> str:
    """Return one line saying which rule a fold uses for a target, and why (with the out-of-fold check, if run)."""
    check = _check_text(stacker) if stacker.check else ""
    if stacker.reason is StackReason.FITTED:
        coef = ", ".join(f"{c:.4g}" for c in stacker.coef)
        return (
            f"fold {stacker.fold}: {stacker.target} {stacker.method.value} stacker ({coef}) fitted on "
            f"{stacker.rows} out-of-fold rows of folds {list(stacker.source_folds)}{check}"
        )
    return f"fold {stacker.fold}: {stacker.target} uses the fixed blend ({stacker.reason.value}, {stacker.rows} usable rows{check})"
