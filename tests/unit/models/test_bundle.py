"""Tests for backend.models.bundle: manifest and version, lookups, verified save and load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from backend.config.canonical import sha256_hex
from backend.config.schema import LgbmParamsSpec
from backend.errors import ModelError
from backend.models import lgbm
from backend.models.bundle import FoldWindow, ModelBundle, TrainedModel, load_bundle, save_bundle
from backend.models.stacking import Stacker, StackMethod, StackReason

UP = ("p_up.global", "p_up.specialist")
PARAMS = LgbmParamsSpec(num_leaves=4, n_estimators=3, min_data_in_leaf=5)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """A two-fold bundle of real (tiny) boosters: a global model per fold and one BTC specialist."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 2))
    y = (x[:, 0] > 0).astype(float)
    models = []
    for fold in (0, 1):
        for scope in ("global", "BTC") if fold == 0 else ("global",):
            seed = 100 * fold + len(scope)
            text = lgbm.fit(x, y, PARAMS, "binary", seed, 1)
            models.append(TrainedModel(fold, scope, "p_up", seed, 120, text))
    return ModelBundle(
        name="tiny",
        feature_names=("a", "b"),
        symbols=("BTC", "ETH"),
        clusters=("l1",),
        specialist_weight=0.25,
        folds=(FoldWindow(0, 0, 10, 20, 30), FoldWindow(1, 0, 20, 30, 40)),
        models=tuple(models),
        lineage={"spec_hash": "abc", "inputs_sha256": "def"},
        stackers=(
            Stacker(0, "p_up", StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, UP, (0.0, 0.75, 0.25), 0, 10, ()),
            Stacker(1, "p_up", StackMethod.LOGISTIC, StackReason.FITTED, UP, (-0.1234567890123, 0.7, 1 / 3), 10, 20, (0,)),
        ),
    )


@pytest.fixture
def saved(bundle: ModelBundle, tmp_path: Path) -> Path:
    return save_bundle(bundle, tmp_path / "model")


def test_a_trained_models_hash_is_the_sha256_of_its_text() -> None:
    assert TrainedModel(0, "global", "p_up", 1, 10, "tree").sha256 == sha256_hex("tree")


def test_the_manifest_lists_models_by_hash_not_by_text(bundle: ModelBundle) -> None:
    manifest = bundle.manifest()

    assert manifest["models"] == [
        {"fold": m.fold, "scope": m.scope, "target": m.target, "seed": m.seed, "train_rows": 120, "sha256": sha256_hex(m.text)}
        for m in bundle.models
    ]
    assert manifest["folds"][1] == {"index": 1, "train_start_ms": 0, "train_end_ms": 20, "test_start_ms": 30, "test_end_ms": 40}
    assert manifest["lineage"] == {"spec_hash": "abc", "inputs_sha256": "def"}
    assert "tree" not in json.dumps(manifest)


def test_the_version_is_the_name_and_changes_with_any_model(bundle: ModelBundle) -> None:
    other = ModelBundle(**{**bundle.__dict__, "models": bundle.models[:-1]})

    assert bundle.version.startswith("tiny@") and len(bundle.version) == len("tiny@") + 16
    assert other.version != bundle.version


@pytest.mark.parametrize(("fold", "scope", "seed"), [(0, "global", 6), (0, "BTC", 3), (1, "global", 106)])
def test_find_and_model_return_the_booster_for_fold_scope_and_target(bundle: ModelBundle, fold: int, scope: str, seed: int) -> None:
    found = bundle.find(fold, scope, "p_up")

    assert found is not None and (found.fold, found.scope, found.seed) == (fold, scope, seed)
    assert bundle.model(fold, scope, "p_up") is found


@pytest.mark.parametrize(("fold", "scope", "target"), [(1, "BTC", "p_up"), (0, "global", "expected_return"), (2, "global", "p_up")])
def test_find_returns_none_and_model_raises_for_a_missing_booster(bundle: ModelBundle, fold: int, scope: str, target: str) -> None:
    assert bundle.find(fold, scope, target) is None
    with pytest.raises(ModelError) as caught:
        bundle.model(fold, scope, target)

    assert str(caught.value) == f"bundle tiny has no model for fold {fold}, scope {scope!r}, target {target!r}"


def test_save_writes_one_text_per_model_and_a_manifest_with_the_version(bundle: ModelBundle, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [
        "fold000_BTC_p_up.txt",
        "fold000_global_p_up.txt",
        "fold001_global_p_up.txt",
        "manifest.json",
    ]
    manifest = json.loads((saved / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == {**bundle.manifest(), "version": bundle.version}
    assert (saved / "fold000_BTC_p_up.txt").read_text(encoding="utf-8") == bundle.model(0, "BTC", "p_up").text


def test_load_returns_an_equal_bundle_that_predicts_the_same(bundle: ModelBundle, saved: Path) -> None:
    loaded = load_bundle(saved)

    assert loaded == bundle
    assert loaded.version == bundle.version
    x = np.random.default_rng(9).standard_normal((50, 2))
    for before, after in zip(bundle.models, loaded.models, strict=True):
        assert lgbm.predict(before.text, x, 1).tobytes() == lgbm.predict(after.text, x, 1).tobytes()


def test_saving_again_over_a_bundle_leaves_no_temporary_files(bundle: ModelBundle, saved: Path) -> None:
    save_bundle(bundle, saved)

    assert not [p.name for p in saved.iterdir() if p.name.startswith(".")]
    assert load_bundle(saved) == bundle


def test_load_refuses_a_model_file_that_differs_from_its_manifest_hash(saved: Path) -> None:
    path = saved / "fold000_global_p_up.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("leaf_value=", "leaf_value=1", 1), encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_bundle(saved)

    assert str(caught.value) == f"model bundle {saved}: fold000_global_p_up.txt does not match its manifest hash"


def test_load_refuses_a_missing_model_file(saved: Path) -> None:
    (saved / "fold001_global_p_up.txt").unlink()

    with pytest.raises(ModelError) as caught:
        load_bundle(saved)

    assert str(caught.value) == f"model bundle {saved}: fold001_global_p_up.txt is missing"


def test_load_refuses_a_folder_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_bundle(tmp_path)

    assert str(caught.value) == f"no model bundle at {tmp_path}: manifest.json is missing"


@pytest.mark.parametrize(
    ("key", "value"),
    [("version", "tiny@0000000000000000"), ("specialist_weight", 0.5), ("lineage", {"spec_hash": "other"})],
)
def test_load_refuses_a_manifest_whose_version_does_not_match_its_content(saved: Path, key: str, value: object) -> None:
    manifest_path = saved / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    recorded = manifest["version"] if key != "version" else value
    manifest[key] = value
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_bundle(saved)

    assert str(caught.value) == f"model bundle {saved}: version {recorded} does not match its content"


def test_the_manifest_records_each_folds_stacker_and_the_version_changes_with_a_coefficient(bundle: ModelBundle) -> None:
    changed = Stacker(1, "p_up", StackMethod.LOGISTIC, StackReason.FITTED, UP, (-0.1234567890123, 0.7, float(np.nextafter(1 / 3, 1.0))), 10, 20, (0,))
    other = dataclasses.replace(bundle, stackers=(bundle.stackers[0], changed))

    assert bundle.manifest()["stackers"] == [s.to_json() for s in bundle.stackers]
    assert other.version != bundle.version


def test_stackers_read_back_bit_for_bit_from_a_saved_bundle(bundle: ModelBundle, saved: Path) -> None:
    loaded = load_bundle(saved)

    assert loaded.stackers == bundle.stackers
    assert loaded.stacker(1, "p_up").coef[2] == 1 / 3


def test_a_missing_stacker_is_an_error_naming_fold_and_target(bundle: ModelBundle) -> None:
    with pytest.raises(ModelError, match=r"bundle tiny has no stacker for fold 1, target 'expected_return'"):
        bundle.stacker(1, "expected_return")


def test_removing_the_stackers_from_a_stacked_manifest_is_refused_as_a_changed_content(saved: Path) -> None:
    manifest_path = saved / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["stackers"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        load_bundle(saved)

    assert str(caught.value) == f"model bundle {saved}: version {manifest['version']} does not match its content"


def test_a_bundle_from_before_stacking_loads_under_its_version_and_uses_its_recorded_fixed_blend(bundle: ModelBundle, tmp_path: Path) -> None:
    legacy = dataclasses.replace(bundle, stackers=())
    saved = save_bundle(legacy, tmp_path / "legacy")
    manifest = json.loads((saved / "manifest.json").read_text(encoding="utf-8"))

    loaded = load_bundle(saved)

    assert "stackers" not in manifest and manifest["version"] == legacy.version != bundle.version
    assert loaded == legacy and loaded.version == manifest["version"]
    assert loaded.stacker(1, "p_up") == Stacker(
        1, "p_up", StackMethod.FIXED_BLEND, StackReason.PREDATES_STACKING, UP, (0.0, 0.75, 0.25), 0, 0, ()
    )
