"""Tests for backend.models.registry: the status table, atomic registration, records and history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.errors import ModelError, RegistryError
from backend.home import Home
from backend.models.bundle import FoldWindow, ModelBundle, TrainedModel
from backend.models.registry import TRANSITIONS, ModelRegistry, ModelStatus, StatusTrigger, next_status


def tiny_bundle(name: str = "m", marker: str = "a") -> ModelBundle:
    model = TrainedModel(0, "global", "p_up", 1, 10, f"tree {marker}")
    return ModelBundle(name, ("f",), ("BTC",), ("c",), 0.4, (FoldWindow(0, 0, 10, 20, 30),), (model,), {"marker": marker})


@pytest.mark.parametrize(("status", "trigger"), list(TRANSITIONS))
def test_every_allowed_transition_leads_where_the_table_says(status: ModelStatus, trigger: StatusTrigger) -> None:
    assert next_status(status, trigger) is TRANSITIONS[(status, trigger)]


@pytest.mark.parametrize(
    ("status", "trigger"),
    [(s, t) for s in ModelStatus for t in StatusTrigger if (s, t) not in TRANSITIONS],
)
def test_every_other_transition_is_refused(status: ModelStatus, trigger: StatusTrigger) -> None:
    with pytest.raises(RegistryError, match=f"a {status.value} model cannot be {trigger.value}d"):
        next_status(status, trigger)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry.of_home(Home(tmp_path))


def test_the_home_registry_lives_under_registry_models(tmp_path: Path, registry: ModelRegistry) -> None:
    assert registry.root == tmp_path / "registry" / "models"
    assert registry.records() == []
    assert registry.promoted() is None


def test_registering_writes_the_bundle_and_a_candidate_record_with_its_history(registry: ModelRegistry) -> None:
    bundle = tiny_bundle()

    stored = registry.register(bundle, {"trigger": "manual"}, 1000, "trained (manual)")

    assert stored == registry.load(bundle.version)
    assert stored["status"] == "candidate" and stored["version"] == bundle.version and stored["created_ms"] == 1000
    assert stored["history"] == [{"status": "candidate", "at_ms": 1000, "reason": "trained (manual)"}]
    assert registry.bundle(bundle.version) == bundle
    assert sorted(p.name for p in registry.root.iterdir()) == [bundle.version]


def test_registering_the_same_version_again_changes_nothing(registry: ModelRegistry) -> None:
    bundle = tiny_bundle()
    first = registry.register(bundle, {"trigger": "manual"}, 1000, "first")

    again = registry.register(bundle, {"trigger": "cadence"}, 2000, "second")

    assert again == first
    assert len(registry.records()) == 1


def test_records_are_oldest_first_and_skip_unfinished_staging_folders(registry: ModelRegistry) -> None:
    late, early = tiny_bundle(marker="late"), tiny_bundle(marker="early")
    registry.register(late, {}, 2000, "r")
    registry.register(early, {}, 1000, "r")
    (registry.root / f".staging-{late.version}-1").mkdir()
    (registry.root / "stray").mkdir()

    assert [r["version"] for r in registry.records()] == [early.version, late.version]


def test_a_transition_updates_status_and_appends_to_the_history(registry: ModelRegistry) -> None:
    bundle = tiny_bundle()
    registry.register(bundle, {}, 1000, "trained")

    promoted = registry.transition(bundle.version, StatusTrigger.PROMOTE, "gates passed", 2000, author="ops")

    assert promoted["status"] == "promoted"
    assert promoted["history"][-1] == {"status": "promoted", "at_ms": 2000, "author": "ops", "reason": "gates passed"}
    assert registry.promoted() == promoted
    assert registry.promoted_bundle() == bundle
    on_disk = json.loads((registry.path(bundle.version) / "record.json").read_text(encoding="utf-8"))
    assert on_disk == promoted


def test_a_refused_transition_writes_nothing(registry: ModelRegistry) -> None:
    bundle = tiny_bundle()
    registry.register(bundle, {}, 1000, "trained")
    registry.transition(bundle.version, StatusTrigger.RETIRE, "superseded", 2000, author="ops")
    before = registry.load(bundle.version)

    with pytest.raises(RegistryError, match="a retired model cannot be promoted"):
        registry.transition(bundle.version, StatusTrigger.PROMOTE, "again", 3000, author="ops")

    assert registry.load(bundle.version) == before


@pytest.mark.parametrize("version", ["../etc", "m@123", "m@0123456789abcdeg", "a/b@0123456789abcdef", ""])
def test_a_name_that_is_not_a_model_version_is_refused(registry: ModelRegistry, version: str) -> None:
    with pytest.raises(RegistryError, match=r"'model' must look like <name>@<16 hex digits>"):
        registry.path(version)


def test_an_unknown_version_is_refused_by_name(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match=r"model m@0123456789abcdef is not in the registry"):
        registry.bundle("m@0123456789abcdef")
    assert not registry.has("m@0123456789abcdef")


def test_without_a_promoted_model_there_is_no_promoted_bundle(registry: ModelRegistry) -> None:
    registry.register(tiny_bundle(), {}, 1000, "trained")

    with pytest.raises(ModelError, match="no promoted model in .*acts models promote MODEL"):
        registry.promoted_bundle()
