"""Integration: `acts train --schedule` retrains on cadence and on drift, records why, and goes through the gates."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from stubs import LENIENT_PROMOTION, small_overrides, small_spec

from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.home import Home
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry
from backend.runs.candidate import train_candidate
from backend.runs.schedule import RetrainTrigger, check_drift, run_schedule
from scripts.cli import main

FAST = "training.num_threads=1"
LENIENT = LENIENT_PROMOTION
QUIET_DRIFT = (
    "training.schedule.drift.max_psi=100",
    "training.schedule.drift.max_log_loss_increase=100",
    "training.schedule.drift.max_calibration_error=1.0",
)
HOUR = 3_600_000


class SimClock:
    """A simulated clock; ``sleep`` moves it forward instead of waiting."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(seconds * 1000)


def _quiet(_message: str) -> None:
    return None


def _pipeline(*extra: str) -> Pipeline:
    return compile_pipeline(small_spec(FAST, *LENIENT, *extra))


def _promoted_home(tmp_path: Path, clock: SimClock, pipeline: Pipeline | None = None) -> tuple[Home, dict]:
    home = Home(tmp_path / "home")
    pipeline = pipeline or _pipeline()
    record = train_candidate(pipeline, home, clock, _quiet)
    promote(ModelRegistry.of_home(home), record["version"], pipeline.spec.training.promotion, clock.now_ms(), "first", author="test")
    return home, record


def _log(home: Home) -> list[dict]:
    return [json.loads(line) for line in (home.root / "registry" / "schedule.jsonl").read_text(encoding="utf-8").splitlines()]


def test_an_empty_registry_trains_at_once_and_promotes_through_the_gates(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    clock = SimClock(10 * HOUR)

    ticks = run_schedule(_pipeline(*QUIET_DRIFT), home, clock, clock.sleep, _quiet, 1)

    [tick] = ticks
    record = ModelRegistry.of_home(home).promoted()
    assert tick.trigger is RetrainTrigger.INITIAL and tick.outcome == f"promoted {tick.version}"
    assert record is not None and record["version"] == tick.version and record["trigger"] == "initial"
    assert record["history"][-1] == {"status": "promoted", "at_ms": 10 * HOUR, "author": "acts", "reason": "initial retrain"}
    assert clock.slept == []
    assert _log(home)[0]["trigger"] == "initial"


def test_a_drift_trigger_retrains_records_its_evidence_and_promotes_the_result(tmp_path: Path) -> None:
    clock = SimClock(10 * HOUR)
    home, incumbent = _promoted_home(tmp_path, clock)
    # A changed recipe, so the retrain gives a new model; any shift in any feature counts as drift.
    drifting = _pipeline("training.schedule.drift.max_psi=0", "model.specialist.n_estimators=16")

    [tick] = run_schedule(drifting, home, clock, clock.sleep, _quiet, 1)

    registry = ModelRegistry.of_home(home)
    record = registry.load(tick.version)  # type: ignore[arg-type]
    assert tick.trigger is RetrainTrigger.DRIFT and tick.outcome == f"promoted {tick.version}"
    assert record["trigger"] == "drift" and record["evidence"] == tick.evidence
    assert tick.evidence["promoted"] == incumbent["version"]
    assert tick.evidence["breaches"] and tick.evidence["breaches"][0].startswith("psi ")
    assert set(tick.evidence["feature_psi"]) == set(incumbent["feature_set"]["names"])
    assert record["comparison"]["incumbent"] == incumbent["version"]
    assert registry.load(incumbent["version"])["status"] == "retired"


def test_a_refused_retrain_is_recorded_and_the_incumbent_stays(tmp_path: Path) -> None:
    clock = SimClock(10 * HOUR)
    home, incumbent = _promoted_home(tmp_path, clock)
    strict = _pipeline("training.schedule.drift.max_psi=0", "model.specialist.n_estimators=16", "training.promotion.min_auc_improvement=0.9")

    [tick] = run_schedule(strict, home, clock, clock.sleep, _quiet, 1)

    assert tick.outcome.startswith(f"refused: model {tick.version} was not promoted; failing gates:")
    assert "min_auc_improvement" in tick.outcome
    assert ModelRegistry.of_home(home).promoted()["version"] == incumbent["version"]  # type: ignore[index]
    assert ModelRegistry.of_home(home).load(tick.version)["status"] == "candidate"  # type: ignore[arg-type]


def test_without_drift_nothing_retrains_until_the_cadence_is_due(tmp_path: Path) -> None:
    clock = SimClock(10 * HOUR)
    quiet = _pipeline(*QUIET_DRIFT, "training.schedule.cadence_hours=1", "training.schedule.poll_seconds=1800")
    home, incumbent = _promoted_home(tmp_path, clock, quiet)

    ticks = run_schedule(quiet, home, clock, clock.sleep, _quiet, 3)

    assert [t.trigger for t in ticks] == [None, None, RetrainTrigger.CADENCE]
    assert [t.now_ms for t in ticks] == [10 * HOUR, 10 * HOUR + HOUR // 2, 11 * HOUR]
    assert ticks[0].outcome == "no retrain" and ticks[0].evidence["breaches"] == []
    # Same spec, same data: the cadence retrain reproduces the promoted model exactly.
    assert ticks[2].outcome == f"unchanged: the retrain gave {incumbent['version']}, already promoted"
    assert ticks[2].evidence == {"last_retrain_ms": 10 * HOUR, "cadence_hours": 1.0}
    assert clock.slept == [1800.0, 1800.0]
    assert [row["trigger"] for row in _log(home)] == [None, None, "cadence"]


def test_with_candidates_but_nothing_promoted_the_schedule_waits_for_the_cadence(tmp_path: Path) -> None:
    clock = SimClock(10 * HOUR)
    home = Home(tmp_path / "home")
    train_candidate(_pipeline(), home, clock, _quiet)

    [tick] = run_schedule(_pipeline(*QUIET_DRIFT), home, clock, clock.sleep, _quiet, 1)

    assert tick.trigger is None and tick.evidence == {}


def test_performance_drift_is_unmeasured_while_no_recent_label_is_realised(tmp_path: Path) -> None:
    clock = SimClock(10 * HOUR)
    home, incumbent = _promoted_home(tmp_path, clock)
    short = _pipeline("training.schedule.drift.window_bars=20")
    without_loss = dict(incumbent, fold_metrics=[dict(f, log_loss=None) for f in incumbent["fold_metrics"]])

    verdict = check_drift(short, home, without_loss, _quiet)

    assert set(verdict.unmeasured) >= {"log_loss", "calibration_error"}
    assert verdict.log_loss_threshold == pytest.approx(short.spec.training.schedule.drift.max_log_loss_increase)


def test_the_cli_runs_a_bounded_schedule(acts_home: Path) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(["train", *small_overrides(FAST, *LENIENT, *QUIET_DRIFT), "--schedule", "--max-iterations", "1"], out, err)

    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("iteration 0 at ") and ": trigger initial: promoted " in out.getvalue()
    assert "[acts] retraining: initial" in err.getvalue()
