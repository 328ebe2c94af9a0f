"""``acts sweep``: backtest many variants of a run, sharing the bars, the model, the features and the predictions.

Overrides use Hydra's sweep syntax (``risk=aggressive,balanced``, ``seed=range(1,4)``,
``risk.entry_min_p_up=choice(0.55,0.6)``): their cartesian product is the list of variants, in
Hydra's ``-m`` order. ``sweep.<key>=...`` arguments set the sweep itself (conf/sweep.yaml, SweepSpec).

Variants whose bars, features and models are the same (they differ in risk profile, strategy
thresholds or execution settings that do not enter the labels) form one group: the group's bars
are loaded once, its model trained once, its features and predictions built once into a market
matrix that is put once in Ray's object store; each variant's engine loop is a Ray task over it (or
a call in this process with ``sweep.ray.enabled=false``). Each variant's run folder is what
``acts backtest`` with that variant's overrides writes, decision log included; ``comparison.csv``
and ``comparison.parquet`` hold one row per variant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.audit.decisions import decision_log_sha256
from backend.bundles.channel import load_channel
from backend.bundles.compat import SHIPPED_DIR
from backend.bundles.use import installed_source
from backend.clock import WallClock
from backend.config.canonical import canonical_json, sha256_hex
from backend.config.compose import compose_spec
from backend.config.schema import RunSpec, SweepSpec
from backend.engine.core import Engine
from backend.engine.events import MarketMatrix
from backend.engine.economics import EdgeBasis
from backend.engine.loop import run_spine
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ConfigError
from backend.home import Home
from backend.models.bundle import ModelBundle
from backend.models.parallel import ensure_ray, ray_temp_dir
from backend.runs.backtest import prepare_run_dir, write_inputs, write_results
from backend.runs.runner import (
    Outcome, Progress, edge_basis, load_bars, market_matrix, model_training_json, round_trip_cost, train_bundle,
)  # fmt: skip
from backend.runs.variants import (
    Variant,
    comparison_frame,
    comparison_row,
    expand_variants,
    group_variants,
    market_key,
    run_figures,
    split_tokens,
    sweep_settings,
)


@dataclass(frozen=True)
class VariantRun:
    """What a variant's engine loop produced, sent back from its worker (the shared matrix stays behind)."""

    engine: Engine
    equity: np.ndarray
    exposure: np.ndarray
    states: np.ndarray
    decisions: pl.DataFrame
    decision_log_sha256: str
    state_trace_sha256: str
    timings: dict[str, float]


def run_variant(spec: RunSpec, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> VariantRun:
    """Compile ``spec`` and run its engine over the shared ``matrix``: the task a worker runs for one variant."""
    wall = WallClock()
    pipeline = compile_pipeline(spec)
    started = wall.monotonic()
    spine = run_spine(pipeline, matrix, edge, model_version)
    looped = wall.monotonic()
    decisions = spine.engine.log.frame()
    digest = decision_log_sha256(decisions)
    timings = {"event_loop": looped - started, "decision_log": wall.monotonic() - looped}
    return VariantRun(spine.engine, spine.equity, spine.exposure, spine.states, decisions, digest, sha256_hex(spine.states.tobytes()), timings)


def variant_bundle(bundle: ModelBundle, pipeline: Pipeline) -> ModelBundle:
    """Return the group's bundle as this variant's own training would have recorded it.

    The boosters are the group's (the variants share every setting that shapes them); a trained
    bundle's lineage names the spec it was trained for, so each variant gets its own spec hash (and
    thus the bundle version its decisions are stamped with when run alone). A bundle not trained by
    this run (promoted, or the home's installed one with ``model.source=bundle``) is used as it is.
    """
    if pipeline.spec.model.source != "train":
        return bundle
    return replace(bundle, lineage={**bundle.lineage, "spec_hash": pipeline.spec_hash})


@dataclass(frozen=True)
class SweepResult:
    """The sweep's settings, its variants, and the comparison table (also written to ``settings.out``)."""

    settings: SweepSpec
    variants: tuple[Variant, ...]
    table: pl.DataFrame


def _compile_variant(variant: Variant) -> Pipeline:
    try:
        return compile_pipeline(compose_spec(list(variant.overrides)))
    except ConfigError as error:
        raise ConfigError(f"variant {variant.folder} ({variant.label}): {error}") from error


def _refuse_used_folders(out: Path, variants: Sequence[Variant]) -> None:
    if (out / "comparison.csv").exists():
        raise ConfigError(f"sweep folder {out} already holds a sweep; choose another sweep.out")
    for variant in variants:
        prepare_run_dir(out / variant.folder, create=False)


def _write_table(out: Path, table: pl.DataFrame) -> None:
    for name, write in (("comparison.parquet", table.write_parquet), ("comparison.csv", table.write_csv)):
        tmp = out / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, out / name)


def run_sweep(tokens: Sequence[str], home: Home, wall: WallClock, progress: Progress) -> SweepResult:
    """Expand ``tokens`` into variants, backtest them sharing what they can, write every run folder and the table.

    Every variant is composed and compiled, every folder checked, the cluster reached and every group's
    bars loaded before any folder is written.

    Raises
    ------
    ConfigError
        For bad sweep settings or overrides (naming the variant), too many variants, or a sweep or run folder already used.
    DataError
        When a group's bars cannot be loaded (nothing is written then).
    """
    own, overrides = split_tokens(tokens)
    settings = sweep_settings(own)
    variants = expand_variants(overrides, settings.max_variants)
    pipelines = [_compile_variant(v) for v in variants]
    out = Path(settings.out)
    _refuse_used_folders(out, variants)
    keys = [market_key(p, canonical_json([model_training_json(p.spec), round_trip_cost(p.spec)])) for p in pipelines]
    groups = group_variants(keys)
    progress(f"sweep: {len(variants)} variant(s) in {len(groups)} group(s) sharing bars, model, features and predictions")
    use_ray = settings.ray.enabled
    if use_ray:
        ensure_ray(settings.ray, ray_temp_dir(home.root))
    on_bundle = any(p.spec.model.source == "bundle" for p in pipelines)
    installed = installed_source(home, wall.now_ms, SHIPPED_DIR, load_channel().bundle) if on_bundle else None
    # Every group's bars are loaded before any folder is written, so a group without data refuses the whole
    # sweep and leaves no folder; only the first group's are kept (the others are read again from the lake).
    loaded = [load_bars(pipelines[members[0]].spec, home, progress) for members in groups[:1]]
    for members in groups[1:]:
        load_bars(pipelines[members[0]].spec, home, progress)
    rows: list[dict[str, Any]] = []
    for n, members in enumerate(groups):
        started = wall.monotonic()
        first = pipelines[members[0]]
        bars, snapshot = loaded.pop() if n == 0 else load_bars(first.spec, home, progress)
        bundle = train_bundle(first, bars, snapshot, progress, home, installed=installed)
        trained = wall.monotonic()
        matrix = market_matrix(first, bars, bundle, first.spec.training.num_threads)
        prepared = wall.monotonic()
        bundles = {i: variant_bundle(bundle, pipelines[i]) for i in members}
        progress(f"sweep: {len(members)} variant(s) over one market matrix of {int(matrix.has_bar.sum())} bar events")
        edge = edge_basis(first.spec, bundle)
        runs = _run_group([pipelines[i].spec for i in members], matrix, edge, [bundles[i].version for i in members], settings, use_ray)
        for i, run in zip(members, runs, strict=True):
            variant, pipeline = variants[i], pipelines[i]
            run_dir = prepare_run_dir(out / variant.folder)
            write_inputs(run_dir, pipeline, bars, snapshot)
            timings = {"features_and_predictions": prepared - trained, **run.timings}
            outcome = Outcome(run.engine, matrix, run.equity, run.exposure, run.states, run.decisions, run.decision_log_sha256, run.state_trace_sha256, timings)
            extra = {"train_seconds": round(trained - started, 3), "run_dir": str(run_dir), "sweep": str(out), "variant": variant.label}
            summary = write_results(run_dir, pipeline, bundles[i], outcome, wall.monotonic() - started, extra)
            notional = float(sum(f.qty * f.price for f in run.engine.portfolio.ledger))
            rows.append(comparison_row(variant, summary, run_figures(summary, run.equity, pipeline.spec.data.bar_ms, notional)))
            progress(f"sweep: {variant.folder} done ({summary['return_pct']} % return)")
    table = comparison_frame(rows)
    _write_table(out, table)
    return SweepResult(settings, tuple(variants), table)


def _run_group(
    specs: list[RunSpec], matrix: MarketMatrix, edge: EdgeBasis, versions: list[str], settings: SweepSpec, use_ray: bool
) -> list[VariantRun]:
    """Run every variant of a group over ``matrix``: Ray tasks over one object-store copy, or calls in this process."""
    if not use_ray:
        return [run_variant(spec, matrix, edge, version) for spec, version in zip(specs, versions, strict=True)]
    import ray

    shared = ray.put(matrix)  # once: every task of the group maps the same copy
    remote = ray.remote(run_variant).options(num_cpus=1, max_retries=settings.ray.max_retries)
    return ray.get([remote.remote(spec, shared, edge, version) for spec, version in zip(specs, versions, strict=True)])
