"""The shipped bundle's manifest, ``bundle.json``: identity, compatibility, lineage, gates, smoke sample, file hashes.

A shipped bundle is a folder::

    bundle.json                 this manifest (the only file not listed in ``files``)
    model/manifest.json, ...    the model bundle (backend/models/bundle.py), whatever files it holds
    smoke/sample.parquet        feature rows the post-install smoke check predicts again

``files`` lists every other file of the folder with its SHA-256 and size, so the set of files is
data, not code: a model bundle that gains files (a stacker, a calibration) is covered unchanged.
The bundle id is the SHA-256 of the manifest's canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from backend.config.canonical import content_hash
from backend.config.schema import Name, Spec

MANIFEST = "bundle.json"
MODEL_DIR = "model"
SMOKE_SAMPLE = "smoke/sample.parquet"
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[str, Field(pattern=r"^\d{1,6}(\.\d{1,6}){0,3}$")]
RelPath = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.@/-]+$")]


class FileEntry(Spec):
    sha256: Hex64
    bytes: Annotated[int, Field(ge=0)]


class FeatureSetRef(Spec):
    name: Name
    hash: Hex64


class Compat(Spec):
    """What the bundle needs from the code that runs it."""

    min_app_version: Version
    min_backend_version: Version
    feature_set: FeatureSetRef
    universe: Name
    clusters: dict[str, Name]


class SmokeRow(Spec):
    ts: int
    symbol: Name
    p_up: float | None
    expected_return: float | None
    p_recovery: float | None


class Smoke(Spec):
    """The stored sample and the outputs the bundle gave on it when it was built."""

    sample: RelPath
    tolerance: Annotated[float, Field(ge=0.0, le=1e-3)]
    expected: Annotated[tuple[SmokeRow, ...], Field(min_length=1)]


class GateRecord(Spec):
    gate: Name
    figure: float | None
    bound: float
    passed: bool
    note: str


class BundleManifest(Spec):
    """``bundle.json`` of format 1."""

    format: Annotated[int, Field(ge=1)]
    name: Name
    version: Version
    description: Annotated[str, Field(max_length=500)]
    model_version: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+@[0-9a-f]{16}$")]
    compat: Compat
    training: dict[str, Any]
    data_hashes: dict[str, Any]
    parameters: dict[str, Any]
    gates: Annotated[tuple[GateRecord, ...], Field(min_length=1)]
    smoke: Smoke
    files: dict[RelPath, FileEntry]

    @property
    def key(self) -> str:
        """Return ``<name>/<version>``, the bundle's place under ``bundles/``."""
        return f"{self.name}/{self.version}"


def bundle_id(raw: dict[str, Any]) -> str:
    """Return the id of a manifest: the SHA-256 of its canonical JSON."""
    return content_hash(raw)


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_files(folder: Path) -> dict[str, FileEntry]:
    """Return every file under ``folder`` except the manifest, by relative POSIX path, with hash and size."""
    return {
        path.relative_to(folder).as_posix(): FileEntry(sha256=file_sha256(path), bytes=path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    }


def manifest_text(raw: dict[str, Any]) -> str:
    """Return the manifest as written to disk: indented JSON, sorted keys, NaN refused."""
    return json.dumps(raw, indent=1, sort_keys=True, allow_nan=False) + "\n"
