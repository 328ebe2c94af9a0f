"""Promotion gates: a candidate replaces the incumbent only when every configured bound holds.

The gates read figures the candidate's record already holds (per-fold out-of-sample metrics, the
strategy result after fees, and its comparison with the incumbent on the rows both predicted out
of sample), so a decision is a pure function of the record, the incumbent and the bounds.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from backend.config.schema import PromotionSpec
from backend.errors import PromotionRefused, RegistryError
from backend.models.registry import ModelRegistry, ModelStatus, StatusTrigger
from backend.config.text import attribution


class Gate(str, enum.Enum):
    """The promotion gates, in the order they are reported."""

    MIN_AUC = "min_auc"
    MAX_CALIBRATION_ERROR = "max_calibration_error"
    MIN_IC = "min_ic"
    MIN_FOLD_AUC = "min_fold_auc"
    MIN_AUC_IMPROVEMENT = "min_auc_improvement"
    MAX_STRATEGY_SHORTFALL = "max_strategy_shortfall_pct"


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: the figure measured, the bound, and whether it held."""

    gate: Gate
    figure: float | None
    bound: float
    passed: bool
    note: str = ""

    def describe(self) -> str:
        """Return ``gate: figure vs bound`` in words."""
        figure = "unavailable" if self.figure is None else f"{self.figure:.6g}"
        text = f"{self.gate.value}: figure {figure}, bound {self.bound:g}"
        return f"{text} ({self.note})" if self.note else text


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return sum(known) / len(known) if known else None


def _at_least(gate: Gate, figure: float | None, bound: float, note: str = "") -> GateResult:
    return GateResult(gate, figure, bound, figure is not None and figure >= bound, note)


def _at_most(gate: Gate, figure: float | None, bound: float) -> GateResult:
    return GateResult(gate, figure, bound, figure is not None and figure <= bound)


def evaluate_gates(record: dict[str, Any], incumbent: dict[str, Any] | None, bounds: PromotionSpec) -> list[GateResult]:
    """Return every gate's result for ``record`` against ``incumbent`` (None: nothing promoted yet)."""
    folds = record["fold_metrics"]
    aucs = [f["auc"] for f in folds]
    results = [
        _at_least(Gate.MIN_AUC, _mean(aucs), bounds.min_auc),
        _at_most(Gate.MAX_CALIBRATION_ERROR, _mean([f["calibration_error"] for f in folds]), bounds.max_calibration_error),
        _at_least(Gate.MIN_IC, _mean([f["ic"] for f in folds]), bounds.min_ic),
        _at_least(Gate.MIN_FOLD_AUC, min((a for a in aucs if a is not None), default=None), bounds.min_fold_auc),
    ]
    if incumbent is None:
        results.append(GateResult(Gate.MIN_AUC_IMPROVEMENT, None, bounds.min_auc_improvement, True, "no incumbent"))
        results.append(GateResult(Gate.MAX_STRATEGY_SHORTFALL, None, bounds.max_strategy_shortfall_pct, True, "no incumbent"))
        return results
    comparison = record.get("comparison")
    if comparison is None or comparison["incumbent"] != incumbent["version"]:
        compared = "nothing" if comparison is None else comparison["incumbent"]
        note = f"compared with {compared}, the incumbent is {incumbent['version']}: retrain to compare"
        results.append(GateResult(Gate.MIN_AUC_IMPROVEMENT, None, bounds.min_auc_improvement, False, note))
        results.append(GateResult(Gate.MAX_STRATEGY_SHORTFALL, None, bounds.max_strategy_shortfall_pct, False, note))
        return results
    candidate_auc, incumbent_auc = comparison["candidate"]["auc"], comparison["incumbent_metrics"]["auc"]
    improvement = None if candidate_auc is None or incumbent_auc is None else candidate_auc - incumbent_auc
    rows = f"on {comparison['rows']} shared out-of-sample rows"
    results.append(_at_least(Gate.MIN_AUC_IMPROVEMENT, improvement, bounds.min_auc_improvement, rows))
    shortfall = comparison["incumbent_return_pct"] - comparison["candidate_return_pct"]
    results.append(
        GateResult(
            Gate.MAX_STRATEGY_SHORTFALL,
            shortfall,
            bounds.max_strategy_shortfall_pct,
            shortfall <= bounds.max_strategy_shortfall_pct,
            "incumbent return after fees minus candidate's, on the shared span",
        )
    )
    return results


def promote(
    registry: ModelRegistry, version: str, bounds: PromotionSpec, now_ms: int, reason: str, *, author: str
) -> list[GateResult]:
    """Promote ``version`` when every gate holds, retiring the incumbent; return the gate results.

    ``author`` and ``reason`` go into both history entries (the promotion and the incumbent's
    retirement): an operator's name, or ``acts`` for the promotions the system makes itself (a
    scheduled retrain, a bundle build), with the reason saying which.

    Raises
    ------
    PromotionRefused
        Listing each failing gate with its figure and bound; nothing changes in the registry.
    RegistryError
        When ``version`` is unknown or not a candidate, or the author or reason is not plain text
        (the shared rule of every attributable action; nothing changes).
    """
    author, reason = attribution(author, reason, RegistryError)
    record = registry.load(version)
    if record["status"] != ModelStatus.CANDIDATE.value:
        raise PromotionRefused(f"model {version} is {record['status']}; only a candidate can be promoted")
    incumbent = registry.promoted()
    results = evaluate_gates(record, incumbent, bounds)
    failing = [r for r in results if not r.passed]
    if failing:
        lines = "\n".join(f"  - {r.describe()}" for r in failing)
        raise PromotionRefused(f"model {version} was not promoted; failing gates:\n{lines}")
    if incumbent is not None:
        registry.transition(incumbent["version"], StatusTrigger.RETIRE, f"replaced by {version}", now_ms, author=author)
    registry.transition(version, StatusTrigger.PROMOTE, reason, now_ms, author=author)
    return results
