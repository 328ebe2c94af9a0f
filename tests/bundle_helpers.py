"""Builders for bundle tests: one small real bundle (trained, gated, exported) shared by the session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stubs import LENIENT_PROMOTION, SMALL

from backend.runs.bundle_build import BuildResult, BuildSpec, build_bundle
from backend.bundles.compat import running
from backend.bundles.manifest import MANIFEST, manifest_text
from backend.home import Home

TINY_OVERRIDES = (*SMALL, *LENIENT_PROMOTION, "training.num_threads=1")


class StepClock:
    """A clock for the record and the log: 1 s per reading from a fixed start."""

    def __init__(self, start_ms: int = 1_780_000_000_000) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        self.ms += 1000
        return self.ms

    def monotonic(self) -> float:
        return self.ms / 1000.0


def tiny_build(version: str = "1.0.0") -> BuildSpec:
    """The build config of the test bundle ``tiny``: four symbols, ten days, small boosters, lenient gates."""
    return BuildSpec(name="tiny", version=version, description="test bundle", overrides=TINY_OVERRIDES)


def build_tiny(root: Path) -> BuildResult:
    """Train and export ``tiny/1.0.0`` under ``root/bundles`` (lineage in ``root/lineage``, training in ``root/work``)."""
    return build_bundle(
        tiny_build(), [], Home(root / "work"), root / "bundles", root / "lineage", running(), StepClock(), lambda _m: None
    )


def copy_bundle(source: Path, target: Path) -> Path:
    """Copy a bundle folder to ``target`` (tests alter copies, never the shared one)."""
    shutil.copytree(source, target)
    return target


def edit_manifest(folder: Path, **changes: object) -> Path:
    """Rewrite ``folder/bundle.json`` with top-level ``changes`` (the files stay as they are)."""
    raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    raw.update(changes)
    (folder / MANIFEST).write_text(manifest_text(raw), encoding="utf-8")
    return folder


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def release(source: Path, shipped: Path, version: str) -> Path:
    """Copy ``source`` into ``shipped/<name>/<version>`` as another release (same models, new version)."""
    name = manifest_of(source)["name"]
    return edit_manifest(copy_bundle(source, shipped / name / version), version=version)


def install_in_child(store_root: str, source: str) -> None:
    """Install ``source`` into the store at ``store_root`` (run in a forked child that a test kills)."""
    from backend.bundles.store import BundleStore

    BundleStore(Path(store_root)).install(Path(source), "trial", "killed install", 2000, running())
