"""Model bundles: the trained boosters of a walk-forward run, their lineage, and verified storage."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from backend.config.canonical import canonical_json, sha256_hex
from backend.errors import ModelError
from backend.models.stacking import Stacker, legacy_blend

TARGETS = ("p_up", "expected_return", "p_recovery")


@dataclass(frozen=True)
class FoldWindow:
    """A fold's training and test windows in UTC milliseconds, half-open."""

    index: int
    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int


@dataclass(frozen=True)
class TrainedModel:
    """One booster: which fold, which scope (``global`` or a symbol), which target."""

    fold: int
    scope: str
    target: str
    seed: int
    train_rows: int
    text: str

    @property
    def sha256(self) -> str:
        return sha256_hex(self.text)


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to predict a walk-forward run again, and to say where it came from."""

    name: str
    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    clusters: tuple[str, ...]
    specialist_weight: float
    folds: tuple[FoldWindow, ...]
    models: tuple[TrainedModel, ...]
    lineage: dict[str, object]
    stackers: tuple[Stacker, ...] = ()

    def manifest(self) -> dict[str, object]:
        """Return the bundle's manifest: all but the model texts, which appear by hash."""
        return {
            "name": self.name,
            "feature_names": list(self.feature_names),
            "symbols": list(self.symbols),
            "clusters": list(self.clusters),
            "specialist_weight": self.specialist_weight,
            "folds": [asdict(f) for f in self.folds],
            "models": [
                {"fold": m.fold, "scope": m.scope, "target": m.target, "seed": m.seed, "train_rows": m.train_rows, "sha256": m.sha256}
                for m in self.models
            ],
            "lineage": self.lineage,
            # A bundle without stackers (one that predates them) keeps the manifest, and so the version, it was written with.
            **({"stackers": [s.to_json() for s in self.stackers]} if self.stackers else {}),
        }

    @cached_property
    def version(self) -> str:
        """Return the content id of the bundle: the name and a hash of its manifest.

        Computed once per bundle (hashing every booster's text took 13 ms, and prediction asks for it
        on every live bar); the bundle is frozen, and ``dataclasses.replace`` makes a new one.
        """
        return f"{self.name}@{sha256_hex(canonical_json(self.manifest()))[:16]}"

    @cached_property
    def _index(self) -> dict[tuple[int, str, str], TrainedModel]:
        return {(m.fold, m.scope, m.target): m for m in self.models}

    def find(self, fold: int, scope: str, target: str) -> TrainedModel | None:
        """Return the booster for ``(fold, scope, target)``, or None when the bundle has none."""
        return self._index.get((fold, scope, target))

    def stacker(self, fold: int, target: str) -> Stacker:
        """Return fold ``fold``'s stacker for ``target``, or raise ModelError.

        A bundle without stackers predates them (ADR-065): every fold uses the fixed blend of the
        ``specialist_weight`` its manifest records, exactly as such a bundle always predicted.
        """
        if not self.stackers:
            return legacy_blend(fold, target, self.specialist_weight)
        for stacker in self.stackers:
            if (stacker.fold, stacker.target) == (fold, target):
                return stacker
        raise ModelError(f"bundle {self.name} has no stacker for fold {fold}, target {target!r}")

    def model(self, fold: int, scope: str, target: str) -> TrainedModel:
        """Return the booster for ``(fold, scope, target)``, or raise ModelError."""
        found = self.find(fold, scope, target)
        if found is None:
            raise ModelError(f"bundle {self.name} has no model for fold {fold}, scope {scope!r}, target {target!r}")
        return found


def _model_file(model: TrainedModel) -> str:
    return f"fold{model.fold:03d}_{model.scope}_{model.target}.txt"


def save_bundle(bundle: ModelBundle, directory: Path) -> Path:
    """Write the bundle to ``directory`` (model texts, then the manifest last, each atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    for model in bundle.models:
        _atomic_write(directory / _model_file(model), model.text)
    manifest = dict(bundle.manifest(), version=bundle.version)
    _atomic_write(directory / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return directory


def load_bundle(directory: Path) -> ModelBundle:
    """Read a bundle and verify every model text against the hash in its manifest.

    Raises
    ------
    ModelError
        When the manifest is missing or a model file is missing or differs from its hash.
    """
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise ModelError(f"no model bundle at {directory}: manifest.json is missing")
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
        return _bundle_of(directory, manifest)
    except (ValueError, KeyError, TypeError) as error:  # bad JSON or UTF-8, a missing key, a wrong type
        what = f"lacks {error}" if isinstance(error, KeyError) else f"is not a valid manifest: {error}"
        raise ModelError(f"model bundle {manifest_path} {what}") from error


def _bundle_of(directory: Path, manifest: dict) -> ModelBundle:
    models = []
    for row in manifest["models"]:
        model = TrainedModel(row["fold"], row["scope"], row["target"], row["seed"], row["train_rows"], "")
        path = directory / _model_file(model)
        if not path.is_file():
            raise ModelError(f"model bundle {directory}: {path.name} is missing")
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if sha256_hex(text) != row["sha256"] or text.encode("utf-8") != raw:
            raise ModelError(f"model bundle {directory}: {path.name} does not match its manifest hash")
        models.append(TrainedModel(model.fold, model.scope, model.target, model.seed, model.train_rows, text))
    bundle = ModelBundle(
        name=manifest["name"],
        feature_names=tuple(manifest["feature_names"]),
        symbols=tuple(manifest["symbols"]),
        clusters=tuple(manifest["clusters"]),
        specialist_weight=manifest["specialist_weight"],
        folds=tuple(FoldWindow(**f) for f in manifest["folds"]),
        models=tuple(models),
        lineage=manifest["lineage"],
        # A manifest without stackers predates them (ADR-065): every fold uses its recorded fixed blend.
        stackers=tuple(Stacker.from_json(row) for row in manifest["stackers"]) if "stackers" in manifest else (),
    )
    if bundle.version != manifest["version"]:
        raise ModelError(f"model bundle {directory}: version {manifest['version']} does not match its content")
    return bundle


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
