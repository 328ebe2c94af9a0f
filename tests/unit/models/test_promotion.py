"""Tests for backend.models.promotion: each gate, refusals naming figure and bound, retiring the incumbent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.config.schema import PromotionSpec
from backend.errors import PromotionRefused, RegistryError
from backend.home import Home
from backend.models.bundle import FoldWindow, ModelBundle, TrainedModel
from backend.models.promotion import Gate, GateResult, evaluate_gates, promote
from backend.models.registry import ModelRegistry, StatusTrigger

BOUNDS = PromotionSpec(min_auc=0.55, max_calibration_error=0.05, min_ic=0.01, min_fold_auc=0.52, min_auc_improvement=0.01, max_strategy_shortfall_pct=0.5)


def fold(auc: float | None, calibration: float = 0.02, ic: float = 0.05) -> dict[str, Any]:
    return {"auc": auc, "calibration_error": calibration, "ic": ic, "log_loss": 0.6, "hit_rate": 0.5, "n": 100.0}


def record(folds: list[dict[str, Any]], comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"fold_metrics": folds, "comparison": comparison}


def comparison(incumbent: str, candidate_auc: float | None, incumbent_auc: float, candidate_return: float, incumbent_return: float) -> dict[str, Any]:
    return {
        "incumbent": incumbent,
        "rows": 500,
        "candidate": {"auc": candidate_auc},
        "incumbent_metrics": {"auc": incumbent_auc},
        "candidate_return_pct": candidate_return,
        "incumbent_return_pct": incumbent_return,
    }


def by_gate(results: list[GateResult]) -> dict[Gate, GateResult]:
    return {r.gate: r for r in results}


def test_a_good_first_model_passes_every_gate_without_an_incumbent() -> None:
    results = evaluate_gates(record([fold(0.6), fold(0.58)]), None, BOUNDS)

    assert [r.gate for r in results] == list(Gate)
    assert all(r.passed for r in results)
    assert by_gate(results)[Gate.MIN_AUC].figure == pytest.approx(0.59)
    assert by_gate(results)[Gate.MIN_AUC_IMPROVEMENT].describe() == "min_auc_improvement: figure unavailable, bound 0.01 (no incumbent)"


@pytest.mark.parametrize(
    ("folds", "failing"),
    [
        ([fold(0.53), fold(0.56)], {Gate.MIN_AUC}),
        ([fold(0.6, calibration=0.2), fold(0.6)], {Gate.MAX_CALIBRATION_ERROR}),
        ([fold(0.6, ic=-0.1), fold(0.6)], {Gate.MIN_IC}),
        ([fold(0.51), fold(0.7)], {Gate.MIN_FOLD_AUC}),
        ([fold(None), fold(None)], {Gate.MIN_AUC, Gate.MIN_FOLD_AUC}),
    ],
)
def test_each_quality_gate_fails_on_its_own_figure(folds: list[dict[str, Any]], failing: set[Gate]) -> None:
    results = evaluate_gates(record(folds), None, BOUNDS)

    assert {r.gate for r in results if not r.passed} == failing


def test_against_an_incumbent_the_candidate_must_improve_auc_and_not_trail_its_strategy_result() -> None:
    incumbent = {"version": "m@1111111111111111"}
    better = record([fold(0.6)], comparison("m@1111111111111111", 0.60, 0.58, 1.0, 1.2))
    worse = record([fold(0.6)], comparison("m@1111111111111111", 0.585, 0.58, 0.0, 1.0))

    assert all(r.passed for r in evaluate_gates(better, incumbent, BOUNDS))
    failing = by_gate([r for r in evaluate_gates(worse, incumbent, BOUNDS) if not r.passed])
    assert set(failing) == {Gate.MIN_AUC_IMPROVEMENT, Gate.MAX_STRATEGY_SHORTFALL}
    assert failing[Gate.MIN_AUC_IMPROVEMENT].figure == pytest.approx(0.005)
    assert failing[Gate.MAX_STRATEGY_SHORTFALL].figure == pytest.approx(1.0)
    assert "on 500 shared out-of-sample rows" in failing[Gate.MIN_AUC_IMPROVEMENT].describe()


def test_an_unmeasurable_improvement_fails_its_gate() -> None:
    incumbent = {"version": "m@1111111111111111"}

    results = by_gate(evaluate_gates(record([fold(0.6)], comparison("m@1111111111111111", None, 0.58, 1.0, 1.0)), incumbent, BOUNDS))

    assert not results[Gate.MIN_AUC_IMPROVEMENT].passed and results[Gate.MIN_AUC_IMPROVEMENT].figure is None


@pytest.mark.parametrize(("compared", "text"), [(None, "compared with nothing"), ("m@2222222222222222", "compared with m@2222222222222222")])
def test_a_comparison_with_another_model_than_the_incumbent_fails_both_comparative_gates(compared: str | None, text: str) -> None:
    incumbent = {"version": "m@1111111111111111"}
    stale = record([fold(0.6)], None if compared is None else comparison(compared, 0.7, 0.5, 2.0, 1.0))

    failing = [r for r in evaluate_gates(stale, incumbent, BOUNDS) if not r.passed]

    assert [r.gate for r in failing] == [Gate.MIN_AUC_IMPROVEMENT, Gate.MAX_STRATEGY_SHORTFALL]
    assert all(text in r.describe() and "the incumbent is m@1111111111111111: retrain to compare" in r.describe() for r in failing)


def _bundle(marker: str) -> ModelBundle:
    return ModelBundle("m", ("f",), ("BTC",), ("c",), 0.4, (FoldWindow(0, 0, 10, 20, 30),), (TrainedModel(0, "global", "p_up", 1, 10, marker),), {})


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry.of_home(Home(tmp_path))


def test_promotion_retires_the_incumbent_and_records_both_changes(registry: ModelRegistry) -> None:
    old, new = _bundle("old"), _bundle("new")
    registry.register(old, record([fold(0.6)]), 1000, "trained")
    promote(registry, old.version, BOUNDS, 1500, "first", author="ops")
    registry.register(new, record([fold(0.62)], comparison(old.version, 0.62, 0.6, 1.0, 1.0)), 2000, "trained")

    results = promote(registry, new.version, BOUNDS, 3000, "operator", author="ops")

    assert all(r.passed for r in results)
    assert registry.promoted()["version"] == new.version  # type: ignore[index]
    assert registry.load(old.version)["history"][-1] == {"status": "retired", "at_ms": 3000, "author": "ops", "reason": f"replaced by {new.version}"}
    assert registry.load(new.version)["history"][-1] == {"status": "promoted", "at_ms": 3000, "author": "ops", "reason": "operator"}


def test_a_refusal_lists_each_failing_gate_and_changes_nothing(registry: ModelRegistry) -> None:
    bad = _bundle("bad")
    registry.register(bad, record([fold(0.5, calibration=0.3)]), 1000, "trained")
    before = registry.load(bad.version)

    with pytest.raises(PromotionRefused) as refused:
        promote(registry, bad.version, BOUNDS, 2000, "operator", author="ops")

    message = str(refused.value)
    assert f"model {bad.version} was not promoted; failing gates:" in message
    assert "  - min_auc: figure 0.5, bound 0.55" in message
    assert "  - max_calibration_error: figure 0.3, bound 0.05" in message
    assert "  - min_fold_auc: figure 0.5, bound 0.52" in message
    assert "min_ic" not in message
    assert registry.load(bad.version) == before


def test_only_a_candidate_can_be_promoted(registry: ModelRegistry) -> None:
    bundle = _bundle("x")
    registry.register(bundle, record([fold(0.6)]), 1000, "trained")
    registry.transition(bundle.version, StatusTrigger.RETIRE, "withdrawn", 1500, author="ops")

    with pytest.raises(PromotionRefused, match="is retired; only a candidate can be promoted"):
        promote(registry, bundle.version, BOUNDS, 2000, "operator", author="ops")
    with pytest.raises(RegistryError):
        promote(registry, "m@0000000000000000", BOUNDS, 2000, "operator", author="ops")


@pytest.mark.parametrize(
    ("author", "reason", "message"),
    [
        ("", "operator", "'author' must"),
        ("ops\nforged", "operator", "'author' must not contain"),
        ("ops", "line\x1b[2J", "'reason' must not contain"),
        ("ops", "", "'reason' must"),
    ],
)
def test_a_promotion_needs_a_plain_author_and_reason_and_refusing_writes_nothing(
    registry: ModelRegistry, author: str, reason: str, message: str
) -> None:
    bundle = _bundle("x")
    registry.register(bundle, record([fold(0.6)]), 1000, "trained")
    before = registry.load(bundle.version)

    with pytest.raises(RegistryError, match=message):
        promote(registry, bundle.version, BOUNDS, 2000, reason, author=author)

    assert registry.load(bundle.version) == before
