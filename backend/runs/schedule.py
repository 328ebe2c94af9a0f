"""Continuous retraining: retrain on a cadence and when drift fires, then put the result through the gates.

``run_schedule`` is a bounded loop over an injected clock and sleep, so tests drive it with a
simulated clock and a fixed number of iterations; ``acts train --schedule`` passes the wall clock.
Every iteration appends one line to ``<registry>/../schedule.jsonl``: the time, the trigger and
its evidence, and what became of the retrained model. With ``training.schedule.window=trailing``
each iteration moves the data window to end on the clock's current day, so retrains see the bars a
backfill or ingest appended to the lake since the last iteration.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import PromotionRefused
from backend.home import Home
from backend.models.drift import DriftVerdict, drift_verdict, feature_drift, performance_drift
from backend.models.lineage import clean
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry, ModelStatus
from backend.models.train import predict_bundle
from backend.runs.candidate import TrainClock, train_candidate
from backend.runs.runner import Progress, load_bars, training_dataset


class RetrainTrigger(str, enum.Enum):
    """Why a retrain ran."""

    INITIAL = "initial"
    CADENCE = "cadence"
    DRIFT = "drift"


@dataclass(frozen=True)
class ScheduleTick:
    """One iteration of the schedule: when, what triggered (if anything), and the outcome."""

    iteration: int
    now_ms: int
    trigger: RetrainTrigger | None
    evidence: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    outcome: str = "no retrain"


def check_drift(pipeline: Pipeline, home: Home, promoted: dict[str, Any], progress: Progress) -> DriftVerdict:
    """Compare the recent window with the promoted model's reference window.

    The reference is the promoted model's last training window; the recent window is the last
    ``training.schedule.drift.window_bars`` timestamps of the lake. Feature drift is the population
    stability of each feature; performance drift is the log loss and calibration error of the
    promoted model's predictions on the recent rows whose labels are realised, against the
    model's out-of-sample log loss plus the allowed increase.
    """
    spec = pipeline.spec
    drift = spec.training.schedule.drift
    registry = ModelRegistry.of_home(home)
    bundle = registry.bundle(promoted["version"])
    bars, _ = load_bars(spec, home, progress)
    dataset = training_dataset(spec, bars)
    times = dataset["ts"].unique().sort().to_numpy()
    recent_start = int(times[max(0, len(times) - drift.window_bars)])
    reference_window = bundle.folds[-1]
    reference = dataset.filter(pl.col("ts").is_between(reference_window.train_start_ms, reference_window.train_end_ms, closed="left"))
    current = dataset.filter(pl.col("ts") >= recent_start)
    psi = feature_drift(reference, current, list(bundle.feature_names))
    predicted = predict_bundle(bundle, current, spec.universe.clusters, spec.training.num_threads, forward=True)
    realised = predicted.join(current.select("ts", "symbol", "label_up"), on=["ts", "symbol"]).filter(
        pl.col("label_up").is_not_null() & pl.col("p_up").is_not_nan()
    )
    log_loss, calibration = math.nan, math.nan
    if realised.height:
        losses, calibrations = performance_drift(realised["label_up"].to_numpy(), realised["p_up"].to_numpy(), realised.height)
        log_loss, calibration = float(losses[-1]), float(calibrations[-1])
    known = [f["log_loss"] for f in promoted["fold_metrics"] if f["log_loss"] is not None]
    baseline = float(np.mean(known)) if known else 0.0
    return drift_verdict(
        psi,
        log_loss,
        calibration,
        psi_threshold=drift.max_psi,
        log_loss_threshold=baseline + drift.max_log_loss_increase,
        calibration_threshold=drift.max_calibration_error,
    )


def verdict_evidence(verdict: DriftVerdict) -> dict[str, Any]:
    """Return a drift verdict as JSON-ready evidence."""
    return clean(
        {
            "breaches": list(verdict.breaches),
            "unmeasured": list(verdict.unmeasured),
            "feature_psi": dict(verdict.feature_psi),
            "log_loss": verdict.log_loss,
            "calibration_error": verdict.calibration_error,
            "psi_threshold": verdict.psi_threshold,
            "log_loss_threshold": verdict.log_loss_threshold,
            "calibration_threshold": verdict.calibration_threshold,
        }
    )


def utc_date(now_ms: int) -> date:
    """Return the UTC calendar day of ``now_ms`` (milliseconds since the epoch)."""
    return date(1970, 1, 1) + timedelta(days=now_ms // 86_400_000)


def window_pipeline(pipeline: Pipeline, now_ms: int) -> tuple[Pipeline, dict[str, Any]]:
    """Return the pipeline one schedule iteration uses at ``now_ms``, and the window as evidence.

    With ``training.schedule.window=fixed`` that is ``pipeline`` itself and no evidence. With
    ``trailing`` the data window of ``data.days`` days is moved to end on the current UTC day:
    ``start = utc_date(now_ms) - (days - 1)`` days, so ``[start, start + days)`` contains today.
    The moved spec has its own spec hash, which the retrained model's lineage records.

    Raises
    ------
    ConfigError
        When the moved spec does not compile (see :func:`compile_pipeline`).
    """
    spec = pipeline.spec
    if spec.training.schedule.window == "fixed":
        return pipeline, {}
    days = spec.data.days
    start = utc_date(now_ms) - timedelta(days=days - 1)
    moved = spec.model_copy(update={"data": spec.data.model_copy(update={"start": start})})
    return compile_pipeline(moved), {"window_start": start.isoformat(), "window_days": days}


def _append(path: Path, tick: ScheduleTick) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    row = dict(asdict(tick), trigger=tick.trigger.value if tick.trigger else None)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")


def run_schedule(
    pipeline: Pipeline,
    home: Home,
    clock: TrainClock,
    sleep: Callable[[float], None],
    progress: Progress,
    max_iterations: int | None,
    on_promoted: Callable[[ScheduleTick], None] | None = None,
) -> list[ScheduleTick]:
    """Run the retraining loop ``max_iterations`` times (None: forever); return the ticks.

    Each iteration retrains when no model is registered yet (``initial``), when
    ``training.schedule.cadence_hours`` have passed since the last retrain (``cadence``), or when
    the drift check against the promoted model fires (``drift``). A retrained model is registered
    with its trigger and evidence and then put through the promotion gates; a refusal is
    recorded, not raised; ``on_promoted`` is called with each tick that promoted a model (for
    example to export it as a candidate bundle). With a trailing window (:func:`window_pipeline`) the drift check and the
    retrain read the window ending today, and the tick's evidence records its start and length.
    """
    schedule = pipeline.spec.training.schedule
    registry = ModelRegistry.of_home(home)
    log = registry.root.parent / "schedule.jsonl"
    records = registry.records()
    last_retrain = records[-1]["created_ms"] if records else None
    ticks: list[ScheduleTick] = []
    iteration = 0
    while max_iterations is None or iteration < max_iterations:
        if iteration:
            sleep(schedule.poll_seconds)
        now = clock.now_ms()
        current, window = window_pipeline(pipeline, now)
        promoted = registry.promoted()
        trigger: RetrainTrigger | None = None
        evidence: dict[str, Any] = {}
        if last_retrain is None:
            trigger = RetrainTrigger.INITIAL
        elif now - last_retrain >= schedule.cadence_hours * 3_600_000:
            trigger = RetrainTrigger.CADENCE
            evidence = {"last_retrain_ms": last_retrain, "cadence_hours": schedule.cadence_hours}
        elif promoted is not None:
            verdict = check_drift(current, home, promoted, progress)
            evidence = {"promoted": promoted["version"], **verdict_evidence(verdict)}
            trigger = RetrainTrigger.DRIFT if verdict.triggered else None
        tick = ScheduleTick(iteration, now, trigger, {**evidence, **window})
        if trigger is not None:
            progress(f"retraining: {trigger.value}")
            record = train_candidate(current, home, clock, progress, trigger.value, tick.evidence)
            last_retrain = now
            tick = _settle(registry, current, record, tick, now)
            if on_promoted is not None and tick.outcome.startswith("promoted "):
                on_promoted(tick)
        progress(f"schedule iteration {iteration}: {tick.outcome}")
        _append(log, tick)
        ticks.append(tick)
        iteration += 1
    return ticks


def _settle(registry: ModelRegistry, pipeline: Pipeline, record: dict[str, Any], tick: ScheduleTick, now: int) -> ScheduleTick:
    version = record["version"]
    if record["status"] != ModelStatus.CANDIDATE.value:
        return ScheduleTick(tick.iteration, now, tick.trigger, tick.evidence, version, f"unchanged: the retrain gave {version}, already {record['status']}")
    try:
        promote(registry, version, pipeline.spec.training.promotion, now, f"{tick.trigger.value} retrain", author="acts")  # type: ignore[union-attr]
    except PromotionRefused as refusal:
        return ScheduleTick(tick.iteration, now, tick.trigger, tick.evidence, version, f"refused: {refusal}")
    return ScheduleTick(tick.iteration, now, tick.trigger, tick.evidence, version, f"promoted {version}")
