"""Verify a shipped bundle: every file against its hash, then its compatibility with the running code.

Nothing here writes. A refusal raises :class:`backend.errors.BundleRefused` whose ``reason`` is a
:class:`Refusal` and whose message names the file, both feature set hashes, or the version needed.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from backend.bundles.compat import FORMAT, Runtime, at_least
from backend.bundles.manifest import MANIFEST, MODEL_DIR, BundleManifest, bundle_id, file_sha256
from backend.config.errors_format import format_validation_error
from backend.errors import BundleRefused, ModelError
from backend.models.bundle import ModelBundle, load_bundle


class Refusal(str, enum.Enum):
    """Why a bundle was refused."""

    NOT_A_BUNDLE = "not_a_bundle"
    MALFORMED = "malformed_manifest"
    FORMAT = "unsupported_format"
    UNSAFE_PATH = "unsafe_path"
    MISSING_FILE = "missing_file"
    UNLISTED_FILE = "unlisted_file"
    HASH_MISMATCH = "hash_mismatch"
    NEWER_APP = "newer_app_required"
    NEWER_BACKEND = "newer_backend_required"
    FEATURE_SET = "incompatible_feature_set"
    MODEL = "model_bundle_invalid"


@dataclass(frozen=True)
class Verified:
    """A bundle that passed every check: its folder, manifest, id and loaded model bundle."""

    path: Path
    manifest: BundleManifest
    bundle_id: str
    model: ModelBundle


def _refuse(path: Path, reason: Refusal, detail: str) -> BundleRefused:
    return BundleRefused(f"bundle {path} refused ({reason.value}): {detail}", reason)


def read_manifest(path: Path, supported: int = FORMAT) -> tuple[BundleManifest, str]:
    """Read and validate ``path/bundle.json`` (a format up to ``supported``); return it with the bundle id.

    Raises
    ------
    BundleRefused
        When the manifest is missing, not JSON, of a later format, or does not validate.
    """
    file = path / MANIFEST
    if not file.is_file():
        raise _refuse(path, Refusal.NOT_A_BUNDLE, f"{MANIFEST} is missing")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(path, Refusal.MALFORMED, f"{MANIFEST} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise _refuse(path, Refusal.MALFORMED, f"{MANIFEST} must hold an object, was {type(raw).__name__}")
    return _validate(path, raw, supported), bundle_id(raw)


def _validate(path: Path, raw: dict, supported: int) -> BundleManifest:
    fmt = raw.get("format")
    if isinstance(fmt, int) and fmt > supported:
        raise _refuse(path, Refusal.FORMAT, f"'format' is {fmt}; this acts reads bundle format {supported}: a newer app is required")
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as error:
        raise _refuse(path, Refusal.MALFORMED, f"{MANIFEST} does not validate:\n{format_validation_error(error)}") from error


def check_files(path: Path, manifest: BundleManifest) -> None:
    """Check that the folder holds exactly the listed files, each with its size and SHA-256."""
    for name in manifest.files:
        parts = name.split("/")
        if name.startswith("/") or any(part in ("", ".", "..") for part in parts) or name == MANIFEST:
            raise _refuse(path, Refusal.UNSAFE_PATH, f"listed file {name!r} is not a plain relative path")
    present = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink())
    unlisted = [p for p in present if p != MANIFEST and p not in manifest.files]
    if unlisted:
        raise _refuse(path, Refusal.UNLISTED_FILE, f"{unlisted[0]} is not listed in {MANIFEST}")
    for name, entry in sorted(manifest.files.items()):
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise _refuse(path, Refusal.MISSING_FILE, f"{name} is listed but missing")
        actual = file_sha256(file)
        if actual != entry.sha256:
            raise _refuse(path, Refusal.HASH_MISMATCH, f"{name} has sha256 {actual}, the manifest says {entry.sha256}")


def check_compat(path: Path, manifest: BundleManifest, runtime: Runtime) -> None:
    """Check the manifest's compatibility fields against the running code."""
    compat = manifest.compat
    if not at_least(runtime.app_version, compat.min_app_version):
        raise _refuse(
            path, Refusal.NEWER_APP, f"needs acts {compat.min_app_version} or newer, this is acts {runtime.app_version}"
        )
    if not at_least(runtime.backend_version, compat.min_backend_version):
        raise _refuse(
            path,
            Refusal.NEWER_BACKEND,
            f"needs backend {compat.min_backend_version} or newer, this backend is {runtime.backend_version}",
        )
    wanted = compat.feature_set
    have = runtime.feature_sets.get(wanted.name)
    if have != wanted.hash:
        code = "does not define it" if have is None else f"has {have}"
        raise _refuse(
            path, Refusal.FEATURE_SET, f"trained on feature set {wanted.name} with hash {wanted.hash}; the running code {code}"
        )


def verify_bundle(path: Path, runtime: Runtime) -> Verified:
    """Verify the bundle in ``path`` (hashes, then compatibility, then the model bundle) and return it.

    Raises
    ------
    BundleRefused
        With the reason and the file, hashes or version concerned.
    """
    manifest, ident = read_manifest(path, runtime.format)
    check_files(path, manifest)
    check_compat(path, manifest, runtime)
    try:
        model = load_bundle(path / MODEL_DIR)
    except (ModelError, KeyError, TypeError, ValueError) as error:
        raise _refuse(path, Refusal.MODEL, f"{MODEL_DIR}/ does not load: {error}") from error
    if model.version != manifest.model_version:
        raise _refuse(path, Refusal.MODEL, f"{MODEL_DIR}/ holds {model.version}, the manifest says {manifest.model_version}")
    return Verified(path, manifest, ident, model)
