"""Train a candidate model, evaluate it out of sample, compare it with the incumbent, register it.

This is the shell behind ``acts train``: it reads the lake, trains (serially or through Ray),
runs the spine's backtest on the out-of-sample span for the strategy figure after fees, and
writes one registry record. Nothing reaches the registry unless every step succeeded.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from backend.config.canonical import canonical_json, content_hash
from backend.config.schema import FeatureSetSpec, RunSpec
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ModelError
from backend.home import Home
from backend.models.bundle import ModelBundle
from backend.models.lineage import (
    code_version,
    evaluate_folds,
    labelled_predictions,
    metrics_of,
    span_return_pct,
    strategy_figures,
)
from backend.models.parallel import ray_temp_dir
from backend.models.registry import ModelRegistry
from backend.models.train import predict_bundle, train_walk_forward
from backend.runs.runner import Outcome, Progress, execute, load_bars, model_training_json, train_bundle, training_dataset


class TrainClock(Protocol):
    """What training asks of time: a timestamp for the record, a monotonic reading for timings."""

    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...


def _seeds(bundle: ModelBundle, base: int) -> dict[str, Any]:
    return {"spec_seed": base, "models": {f"{m.fold}/{m.scope}/{m.target}": m.seed for m in bundle.models}}


def incumbent_recipe(spec: RunSpec, incumbent: dict[str, Any], bundle: ModelBundle) -> RunSpec:
    """Return the candidate's spec with the incumbent's recipe: its feature set, model parameters and seed.

    Data, universe, labels, costs and walk-forward settings stay the candidate's: the incumbent is
    retrained on the very bars, labels and fold windows the candidate was trained and scored on.
    """
    features = FeatureSetSpec.model_validate_json(str(bundle.lineage["features"]))
    recorded = RunSpec.model_validate(incumbent["spec"])
    model = recorded.model.model_copy(update={"source": "train"})
    return spec.model_copy(update={"features": features, "model": model, "seed": recorded.seed})


def compare_with_incumbent(
    pipeline: Pipeline,
    bars: pl.DataFrame,
    dataset: pl.DataFrame,
    bundle: ModelBundle,
    labelled: pl.DataFrame,
    outcome: Outcome,
    incumbent: dict[str, Any],
    incumbent_bundle: ModelBundle,
    clock: TrainClock,
    progress: Progress,
    temp_dir: Path,
) -> dict[str, Any]:
    """Retrain the incumbent's recipe on the candidate's windows, then compare the two on the same rows and span.

    The incumbent's feature set, model parameters and seed (:func:`incumbent_recipe`) are trained
    walk-forward on the candidate's bars with the candidate's fold windows, so both models have seen
    exactly the same history when each fold is scored; both are scored against the candidate's labels
    on the rows both predicted, and both strategy results after fees come from the same spine over the
    same bars (ADR-025).
    """
    spec = pipeline.spec
    recipe = incumbent_recipe(spec, incumbent, incumbent_bundle)
    own = pipeline if recipe == spec else compile_pipeline(recipe)
    own_dataset = dataset if own is pipeline else training_dataset(own.spec, bars)
    progress(f"retraining the incumbent {incumbent_bundle.version} on the candidate's {len(bundle.folds)} fold windows")
    lineage = {"retrained_incumbent": incumbent_bundle.version, "features": canonical_json(recipe.features), "windows_of": "candidate"}
    retrained = train_walk_forward(
        own_dataset, own.feature_names, spec.universe.clusters, recipe.model, spec.training, recipe.seed, lineage, progress, temp_dir, bundle.folds
    )
    theirs = labelled_predictions(predict_bundle(retrained, own_dataset, spec.universe.clusters, spec.training.num_threads), dataset)
    keys = labelled.select("ts", "symbol").join(theirs.select("ts", "symbol"), on=["ts", "symbol"], how="inner")
    shared_candidate = labelled.join(keys, on=["ts", "symbol"], how="semi")
    shared_incumbent = theirs.join(keys, on=["ts", "symbol"], how="semi")
    incumbent_outcome = execute(own, bars, retrained, clock)  # type: ignore[arg-type]
    start, end = bundle.folds[0].test_start_ms, bundle.folds[-1].test_end_ms
    ts = outcome.matrix.ts_ms
    return {
        "incumbent": incumbent_bundle.version,
        "incumbent_retrained": retrained.version,
        "method": "incumbent retrained on the candidate's fold windows",
        "rows": keys.height,
        "span_start_ms": start,
        "span_end_ms": end,
        "candidate": metrics_of(shared_candidate),
        "incumbent_metrics": metrics_of(shared_incumbent),
        "candidate_return_pct": span_return_pct(ts, outcome.equity, start, end),
        "incumbent_return_pct": span_return_pct(incumbent_outcome.matrix.ts_ms, incumbent_outcome.equity, start, end),
    }


def train_candidate(
    pipeline: Pipeline,
    home: Home,
    clock: TrainClock,
    progress: Progress,
    trigger: str = "manual",
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``pipeline``'s model, evaluate it, and register it as a candidate; return its record.

    Raises
    ------
    ModelError
        When the spec asks for the promoted model instead of training, or a training task fails
        after its retries (then nothing is registered).
    """
    spec = pipeline.spec
    if spec.model.source != "train":
        raise ModelError(f"'model.source' must be 'train' to train a model, was {spec.model.source!r}")
    bars, snapshot = load_bars(spec, home, progress)
    progress(f"building features and labels for {bars.height} bars")
    dataset = training_dataset(spec, bars)
    progress(f"training {spec.training.walk_forward.n_folds} folds ({'Ray' if spec.training.ray.enabled else 'serial'})")
    bundle = train_bundle(pipeline, bars, snapshot, progress, home, dataset)
    progress("evaluating out of sample")
    labelled = labelled_predictions(predict_bundle(bundle, dataset, spec.universe.clusters, spec.training.num_threads), dataset)
    folds = evaluate_folds(bundle, labelled)
    outcome = execute(pipeline, bars, bundle, clock)  # type: ignore[arg-type]
    registry = ModelRegistry.of_home(home)
    incumbent = registry.promoted()
    comparison = None
    if incumbent is not None:
        progress(f"comparing with the incumbent {incumbent['version']}")
        comparison = compare_with_incumbent(
            pipeline,
            bars,
            dataset,
            bundle,
            labelled,
            outcome,
            incumbent,
            registry.bundle(incumbent["version"]),
            clock,
            progress,
            ray_temp_dir(home.root),
        )
    record = {
        "name": bundle.name,
        "spec_hash": pipeline.spec_hash,
        "spec": spec.model_dump(mode="json"),
        "folds": [asdict(w) for w in bundle.folds],
        "params": {
            "specialist": spec.model.specialist.model_dump(mode="json"),
            "global_model": spec.model.global_model.model_dump(mode="json"),
            "specialist_weight": spec.model.specialist_weight,
            "stacking": spec.model.stacking.model_dump(mode="json"),
            "training": model_training_json(spec),
        },
        "seeds": _seeds(bundle, spec.seed),
        "feature_set": {"name": spec.features.name, "names": list(bundle.feature_names), "hash": content_hash(spec.features)},
        "lake_snapshot": snapshot,
        "inputs_sha256": bundle.lineage["inputs_sha256"],
        "code_version": code_version(),
        "fold_metrics": folds,
        "strategy": strategy_figures(bundle.folds, outcome.matrix.ts_ms, outcome.equity, str(outcome.engine.portfolio.fees_paid)),
        "comparison": comparison,
        "trigger": trigger,
        "evidence": evidence,
        "stackers": [s.to_json() for s in bundle.stackers],
        "models": len(bundle.models),
        "recovery_models": int(np.sum([m.target == "p_recovery" for m in bundle.models])),
        "lineage_sha256": content_hash(bundle.lineage),
    }
    stored = registry.register(bundle, record, clock.now_ms(), f"trained ({trigger})")
    progress(f"registered candidate {stored['version']}")
    return stored
