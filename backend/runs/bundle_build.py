"""Build a shipped bundle: train and gate a model from a committed config, or export a promoted registry entry.

``build_bundle`` composes the run preset a build config names, trains a candidate in a private
home (so the result depends on the config and the code only), puts it through the promotion gates
and exports it. ``export_bundle`` turns any promoted registry entry into a bundle folder ready to
commit under ``bundles/<name>/<version>/``, with its lineage record under ``registry/bundles/``.
A bundle is written into a staging folder, verified and smoke-checked there, and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import yaml
from pydantic import Field, ValidationError

from backend.bundles.compat import SHIPPED_DIR, Runtime
from backend.bundles.manifest import MANIFEST, MODEL_DIR, SMOKE_SAMPLE, Version, bundle_id, list_files, manifest_text
from backend.bundles.smoke import expected_outputs
from backend.bundles.verify import read_manifest, verify_bundle
from backend.config.canonical import content_hash
from backend.config.compose import CONF_DIR, compose_spec, validate_raw
from backend.config.errors_format import format_validation_error
from backend.config.schema import Name, PromotionSpec, SharedDataSpec, Spec
from backend.engine.pipeline import compile_pipeline
from backend.runs.runner import Progress, load_bars
from backend.errors import BundleError
from backend.features.build import build_features
from backend.home import Home
from backend.models.bundle import save_bundle
from backend.runs.candidate import TrainClock, train_candidate
from backend.models.lineage import code_version
from backend.models.promotion import GateResult, evaluate_gates, promote
from backend.models.registry import ModelRegistry, ModelStatus
from backend.models.train import predict_bundle

BUILD_CONF_DIR = CONF_DIR / "bundles"


class BuildSpec(Spec):
    """A committed bundle build: what to call it and which composition trains it."""

    name: Name
    version: Version
    description: Annotated[str, Field(min_length=1, max_length=500)]
    overrides: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=200)], ...], Field(max_length=100)]
    smoke_rows_per_symbol: Annotated[int, Field(ge=1, le=100)] = 2
    smoke_tolerance: Annotated[float, Field(ge=0.0, le=1e-3)] = 1e-9


@dataclass(frozen=True)
class BuildResult:
    """A bundle folder written (or found identical): where, its id, its size, and the gates it passed."""

    path: Path
    bundle_id: str
    model_version: str
    files: int
    bytes: int
    gates: tuple[GateResult, ...]
    unchanged: bool


def load_build_spec(name_or_path: str, conf_dir: Path = BUILD_CONF_DIR, version: str | None = None) -> BuildSpec:
    """Read a build config by name (``conf/bundles/<name>.yaml``) or path; ``version`` replaces its version.

    Raises
    ------
    BundleError
        When the file is missing or does not validate (the field is named).
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = conf_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        raise BundleError(f"no bundle build config at {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return BuildSpec.model_validate(raw if version is None else {**raw, "version": version})
    except ValidationError as error:
        raise BundleError(f"bundle build config {path} is invalid:\n{format_validation_error(error)}") from error


def gate_results(record: dict[str, Any], bounds: PromotionSpec) -> list[GateResult]:
    """Return the gates of a registered model against the incumbent it was compared with (none: no incumbent)."""
    comparison = record.get("comparison")
    incumbent = {"version": comparison["incumbent"]} if comparison else None
    return evaluate_gates(record, incumbent, bounds)


def _sample(bars: pl.DataFrame, spec_features: Any, clusters: dict[str, str], names: tuple[str, ...], per_symbol: int) -> pl.DataFrame:
    features = build_features(bars, spec_features, clusters)
    return (
        features.select("ts", "symbol", *names)
        .sort(["symbol", "ts"])
        .group_by("symbol", maintain_order=True)
        .tail(per_symbol)
        .sort(["ts", "symbol"])
    )


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def bundle_version_at(now_ms: int) -> str:
    """Return the version a scheduled candidate gets: ``YYYY.MMDD.HHMM`` (UTC) of ``now_ms``."""
    moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return f"{moment.year}.{moment.month * 100 + moment.day}.{moment.hour * 100 + moment.minute}"


def export_bundle(
    home: Home,
    model_version: str,
    build: BuildSpec,
    out_root: Path,
    lineage_root: Path,
    runtime: Runtime,
    clock: TrainClock,
    progress: Progress,
) -> BuildResult:
    """Export the promoted registry entry ``model_version`` of ``home`` as ``out_root/<name>/<version>/``.

    The smoke sample is the last ``smoke_rows_per_symbol`` feature rows of every symbol of the
    model's own data (read from ``home``'s lake), and the expected outputs are the bundle's
    predictions on it. The folder is verified against the running code before it is renamed into place; the
    lineage record (the registry record, the bundle id, the code that built it) goes to
    ``lineage_root/<name>/<version>.json``.

    Raises
    ------
    BundleError
        When the model is not promoted, a gate does not hold, the folder exists with other content,
        or the new bundle does not verify against the running code.
    """
    registry = ModelRegistry.of_home(home)
    record = registry.load(model_version)
    if record["status"] != ModelStatus.PROMOTED.value:
        raise BundleError(f"model {model_version} is {record['status']}; only a promoted model becomes a bundle")
    spec = validate_raw(record["spec"])
    gates = gate_results(record, spec.training.promotion)
    failing = [g.describe() for g in gates if not g.passed]
    if failing:
        raise BundleError(f"model {model_version} fails its promotion gates today: {'; '.join(failing)}")
    model = registry.bundle(model_version)
    clusters = spec.universe.clusters
    bars, _ = load_bars(spec, home, progress)
    sample = _sample(bars, spec.features, clusters, model.feature_names, build.smoke_rows_per_symbol)
    predicted = predict_bundle(model, sample, clusters, spec.training.num_threads, forward=True)
    key = f"{build.name}/{build.version}"
    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".staging-{build.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    save_bundle(model, staging / MODEL_DIR)
    (staging / SMOKE_SAMPLE).parent.mkdir(parents=True)
    sample.write_parquet(staging / SMOKE_SAMPLE, compression="zstd")
    raw = {
        "format": runtime.format,
        "name": build.name,
        "version": build.version,
        "description": build.description,
        "model_version": model.version,
        "compat": {
            "min_app_version": runtime.app_version,
            "min_backend_version": runtime.backend_version,
            "feature_set": {"name": spec.features.name, "hash": content_hash(spec.features)},
            "universe": spec.universe.version,
            "clusters": {s: clusters[s] for s in model.symbols},
        },
        "training": {
            "spec_hash": record["spec_hash"],
            "seed": spec.seed,
            "data": spec.data.model_dump(mode="json"),
            "folds": record["folds"],
            "walk_forward": spec.training.walk_forward.model_dump(mode="json"),
            "label": spec.training.label.model_dump(mode="json"),
        },
        "data_hashes": {"lake_snapshot": record["lake_snapshot"], "inputs_sha256": record["inputs_sha256"]},
        "parameters": record["params"],
        "gates": [
            {"gate": g.gate.value, "figure": g.figure, "bound": g.bound, "passed": g.passed, "note": g.note} for g in gates
        ],
        "smoke": {"sample": SMOKE_SAMPLE, "tolerance": build.smoke_tolerance, "expected": expected_outputs(predicted)},
        "files": {name: entry.model_dump() for name, entry in list_files(staging).items()},
    }
    (staging / MANIFEST).write_text(manifest_text(raw), encoding="utf-8")
    try:
        verified = verify_bundle(staging, runtime)  # the expected outputs are checked at every install (smoke check)
        target = out_root / build.name / build.version
        unchanged = False
        if (target / MANIFEST).is_file():
            _, present = read_manifest(target)
            if present != verified.bundle_id:
                raise BundleError(f"{target} already holds another bundle (id {present}); raise 'version' in the build config")
            unchanged = True
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ident = bundle_id(raw)
    _write_json(
        lineage_root / build.name / f"{build.version}.json",
        {
            "bundle": key,
            "bundle_id": ident,
            "model_version": model.version,
            "built_with": code_version(),
            "built_at_ms": clock.now_ms(),
            "record": record,
        },
    )
    files = raw["files"]
    progress(f"bundle {key} ({ident[:12]}): {len(files)} files, {sum(f['bytes'] for f in files.values())} bytes")
    return BuildResult(
        target, ident, model.version, len(files), sum(f["bytes"] for f in files.values()), tuple(gates), unchanged
    )


def build_bundle(
    build: BuildSpec,
    extra_overrides: list[str],
    work_home: Home,
    out_root: Path,
    lineage_root: Path,
    runtime: Runtime,
    clock: TrainClock,
    progress: Progress,
) -> BuildResult:
    """Train ``build``'s composition in ``work_home``, promote it through the gates, and export it.

    Raises
    ------
    BundleError
        When the run reads ``data.kind=shared`` and the output is the repository's ``bundles/``
        (ADR-041: that data may not be redistributed), or the export fails.
    PromotionRefused
        When a gate does not hold (nothing is written to ``out_root``).
    """
    spec = compose_spec([*build.overrides, *extra_overrides])
    if isinstance(spec.data, SharedDataSpec) and out_root.resolve() == SHIPPED_DIR.resolve():
        raise BundleError(
            "'data.kind' is shared: a bundle trained on ../shared/data may not be committed to bundles/ "
            "(ADR-041, the data's licence); write it elsewhere with --out"
        )
    pipeline = compile_pipeline(spec)
    record = train_candidate(pipeline, work_home, clock, progress, "manual", {"bundle": f"{build.name}/{build.version}"})
    if record["status"] == ModelStatus.CANDIDATE.value:
        promote(ModelRegistry.of_home(work_home), record["version"], spec.training.promotion, clock.now_ms(), f"bundle build {build.name}", author="acts")
    return export_bundle(work_home, record["version"], build, out_root, lineage_root, runtime, clock, progress)
