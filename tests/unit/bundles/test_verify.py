"""Verification of a shipped bundle: every hash, the file set, and the compatibility fields against the running code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from bundle_helpers import copy_bundle, edit_manifest, manifest_of

from backend.bundles.compat import running
from backend.bundles.manifest import MANIFEST, file_sha256
from backend.bundles.verify import Refusal, verify_bundle
from backend.errors import BundleRefused


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    return copy_bundle(tiny_bundle, tmp_path / "tiny" / "1.0.0")


def refusal(path: Path, runtime=None) -> BundleRefused:
    with pytest.raises(BundleRefused) as caught:
        verify_bundle(path, runtime or running())
    return caught.value


def test_an_intact_bundle_verifies_with_its_manifest_model_and_id(bundle: Path) -> None:
    verified = verify_bundle(bundle, running())
    manifest = manifest_of(bundle)
    assert verified.manifest.key == "tiny/1.0.0"
    assert verified.model.version == manifest["model_version"]
    assert set(manifest["files"]) == {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {MANIFEST}
    assert "smoke/sample.parquet" in manifest["files"] and "model/manifest.json" in manifest["files"]
    assert len(verified.bundle_id) == 64


def test_a_changed_booster_is_refused_naming_the_file_and_both_hashes(bundle: Path) -> None:
    booster = sorted((bundle / "model").glob("fold*.txt"))[0]
    booster.write_text(booster.read_text() + "\n", encoding="utf-8")
    error = refusal(bundle)
    assert error.reason is Refusal.HASH_MISMATCH
    assert f"model/{booster.name} has sha256" in str(error)
    assert manifest_of(bundle)["files"][f"model/{booster.name}"]["sha256"] in str(error)


def test_a_missing_listed_file_is_refused(bundle: Path) -> None:
    (bundle / "smoke" / "sample.parquet").unlink()
    error = refusal(bundle)
    assert error.reason is Refusal.MISSING_FILE and "smoke/sample.parquet is listed but missing" in str(error)


def test_a_file_the_manifest_does_not_list_is_refused(bundle: Path) -> None:
    (bundle / "model" / "extra.txt").write_text("x", encoding="utf-8")
    error = refusal(bundle)
    assert error.reason is Refusal.UNLISTED_FILE and "model/extra.txt is not listed" in str(error)


@pytest.mark.parametrize("name", ["../outside.txt", "model/./x.txt", "model//x.txt", "bundle.json"])
def test_a_listed_path_that_is_not_plain_and_relative_is_refused(bundle: Path, name: str) -> None:
    files = manifest_of(bundle)["files"]
    files[name] = next(iter(files.values()))
    edit_manifest(bundle, files=files)
    error = refusal(bundle)
    assert error.reason is Refusal.UNSAFE_PATH and repr(name) in str(error)


def test_a_folder_without_a_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    assert refusal(tmp_path).reason is Refusal.NOT_A_BUNDLE


@pytest.mark.parametrize(("text", "expected"), [("{not json", "is not JSON"), ("[1, 2]", "must hold an object, was list")])
def test_a_manifest_that_is_not_a_json_object_is_refused(bundle: Path, text: str, expected: str) -> None:
    (bundle / MANIFEST).write_text(text, encoding="utf-8")
    error = refusal(bundle)
    assert error.reason is Refusal.MALFORMED and expected in str(error)


def test_a_later_bundle_format_needs_a_newer_app(bundle: Path) -> None:
    edit_manifest(bundle, format=2)
    error = refusal(bundle)
    assert error.reason is Refusal.FORMAT and "'format' is 2; this acts reads bundle format 1" in str(error)


def test_a_manifest_field_out_of_its_schema_is_named(bundle: Path) -> None:
    edit_manifest(bundle, version="one")
    error = refusal(bundle)
    assert error.reason is Refusal.MALFORMED and "version" in str(error) and "one" in str(error)


def test_a_bundle_needing_a_newer_app_is_refused_naming_the_version(bundle: Path) -> None:
    runtime = dataclasses.replace(running(), app_version="0.0.9")
    error = refusal(bundle, runtime)
    assert error.reason is Refusal.NEWER_APP
    assert f"needs acts {running().app_version} or newer, this is acts 0.0.9" in str(error)


def test_a_bundle_needing_a_newer_backend_is_refused_naming_the_version(bundle: Path) -> None:
    compat = manifest_of(bundle)["compat"]
    edit_manifest(bundle, compat={**compat, "min_backend_version": "7.1"})
    error = refusal(bundle)
    assert error.reason is Refusal.NEWER_BACKEND and "needs backend 7.1 or newer, this backend is 1.0" in str(error)


def test_an_incompatible_feature_set_is_refused_naming_both_hashes(bundle: Path) -> None:
    wanted = manifest_of(bundle)["compat"]["feature_set"]["hash"]
    runtime = dataclasses.replace(running(), feature_sets={"core_v1": "ab" * 32})
    error = refusal(bundle, runtime)
    assert error.reason is Refusal.FEATURE_SET
    assert wanted in str(error) and "ab" * 32 in str(error)


def test_a_feature_set_the_code_does_not_define_is_refused(bundle: Path) -> None:
    runtime = dataclasses.replace(running(), feature_sets={})
    error = refusal(bundle, runtime)
    assert error.reason is Refusal.FEATURE_SET and "the running code does not define it" in str(error)


def test_a_model_folder_that_does_not_load_is_refused(bundle: Path) -> None:
    inner = bundle / "model" / "manifest.json"
    raw = json.loads(inner.read_text())
    del raw["name"]
    inner.write_text(json.dumps(raw), encoding="utf-8")
    files = manifest_of(bundle)["files"]
    files["model/manifest.json"] = {"sha256": file_sha256(inner), "bytes": inner.stat().st_size}
    edit_manifest(bundle, files=files)
    error = refusal(bundle)
    assert error.reason is Refusal.MODEL and "model/ does not load" in str(error)


def test_a_manifest_naming_another_model_version_is_refused(bundle: Path) -> None:
    edit_manifest(bundle, model_version="lgbm_blend_v1@0123456789abcdef")
    error = refusal(bundle)
    assert error.reason is Refusal.MODEL and "the manifest says lgbm_blend_v1@0123456789abcdef" in str(error)
