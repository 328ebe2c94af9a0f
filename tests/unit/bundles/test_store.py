"""Installing into a home: staged, verified, switched with one rename, smoke-checked, rolled back, logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundle_helpers import copy_bundle, edit_manifest, manifest_of, release

from backend.bundles.compat import running
from backend.bundles.store import Action, BundleStore
from backend.errors import BundleError, BundleRefused


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "home" / "bundles")


@pytest.fixture
def releases(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, Path]:
    shipped = tmp_path / "shipped"
    return copy_bundle(tiny_bundle, shipped / "tiny" / "1.0.0"), release(tiny_bundle, shipped, "1.1.0")


def test_an_empty_home_has_nothing_active_or_installed(store: BundleStore) -> None:
    assert store.state().active is None and store.installed() == [] and store.active(running()) is None


def test_install_copies_verifies_activates_smoke_checks_and_logs(store: BundleStore, releases: tuple[Path, Path]) -> None:
    first, _ = releases
    result = store.install(first, "ops", "first install", 1000, running())
    assert (result.bundle, result.previous, result.changed, result.smoke.passed) == ("tiny/1.0.0", None, True, True)
    assert store.installed() == ["tiny/1.0.0"]
    active = store.active(running())
    assert active is not None and active.path == store.folder("tiny/1.0.0") and active.bundle_id == result.bundle_id
    (entry,) = store.state().log
    assert (entry.action, entry.bundle, entry.previous, entry.author, entry.reason, entry.at_ms) == (
        "install", "tiny/1.0.0", None, "ops", "first install", 1000,
    )  # fmt: skip
    assert not list(store.root.glob(".staging-*")) and not list(store.root.glob(".state.json.tmp-*"))


def test_a_second_install_keeps_the_first_for_rollback_and_rollback_returns_to_it(store: BundleStore, releases) -> None:
    first, second = releases
    store.install(first, "ops", "one", 1000, running())
    result = store.install(second, "ops", "two", 2000, running())
    assert (result.bundle, result.previous) == ("tiny/1.1.0", "tiny/1.0.0")
    entry = store.rollback("ops", "two misbehaves", 3000, running())
    assert (entry.action, entry.bundle, entry.previous) == (Action.ROLLBACK.value, "tiny/1.0.0", "tiny/1.1.0")
    state = store.state()
    assert state.active == "tiny/1.0.0" and state.previous == ()
    assert [e.action for e in state.log] == ["install", "install", "rollback"]
    with pytest.raises(BundleError, match="nothing to roll back to: no bundle was active before tiny/1.0.0"):
        store.rollback("ops", "again", 4000, running())


def test_rollback_on_an_empty_home_is_refused(store: BundleStore) -> None:
    with pytest.raises(BundleError, match="nothing to roll back to: no bundle was active before now"):
        store.rollback("ops", "why", 1, running())


def test_installing_the_active_bundle_again_changes_nothing(store: BundleStore, releases) -> None:
    first, second = releases
    store.install(first, "ops", "one", 1000, running())
    store.install(second, "ops", "two", 2000, running())
    before = store.state_path.read_bytes()
    result = store.install(second, "ops", "again", 3000, running())
    assert (result.changed, result.previous, result.smoke.passed) == (False, "tiny/1.0.0", True)
    assert store.state_path.read_bytes() == before


def test_reinstalling_an_installed_version_reuses_its_store_folder(store: BundleStore, releases) -> None:
    first, second = releases
    store.install(first, "ops", "one", 1000, running())
    store.install(second, "ops", "two", 2000, running())
    inode = store.folder("tiny/1.0.0").stat().st_ino
    result = store.install(first, "ops", "back to one", 3000, running())
    assert (result.bundle, result.previous, result.changed) == ("tiny/1.0.0", "tiny/1.1.0", True)
    assert store.folder("tiny/1.0.0").stat().st_ino == inode
    assert [key for key, _ in store.state().previous] == ["tiny/1.0.0", "tiny/1.1.0"]


def test_a_different_bundle_under_an_installed_name_and_version_is_refused(store: BundleStore, releases, tmp_path: Path) -> None:
    first, _ = releases
    store.install(first, "ops", "one", 1000, running())
    other = edit_manifest(copy_bundle(first, tmp_path / "other" / "tiny" / "1.0.0"), description="another build")
    before = store.state_path.read_bytes()
    with pytest.raises(BundleError, match="a different bundle tiny/1.0.0 is installed"):
        store.install(other, "ops", "two", 2000, running())
    assert store.state_path.read_bytes() == before


def test_a_bundle_failing_verification_is_refused_and_nothing_is_written(store: BundleStore, releases) -> None:
    first, _ = releases
    (first / "smoke" / "sample.parquet").write_bytes(b"x")
    with pytest.raises(BundleRefused, match="smoke/sample.parquet has sha256"):
        store.install(first, "ops", "one", 1000, running())
    assert not store.root.exists()


def test_a_bundle_failing_its_smoke_check_rolls_back_to_the_previous_one_automatically(store: BundleStore, releases) -> None:
    first, second = releases
    store.install(first, "ops", "one", 1000, running())
    smoke = manifest_of(second)["smoke"]
    smoke["expected"][0]["expected_return"] = 0.5
    edit_manifest(second, smoke=smoke)
    with pytest.raises(BundleError, match=r"smoke check of tiny/1.1.0 failed: expected_return of .* rolled back to tiny/1.0.0"):
        store.install(second, "ops", "two", 2000, running())
    state = store.state()
    assert state.active == "tiny/1.0.0" and state.previous == ()
    assert [(e.action, e.bundle, e.previous) for e in state.log] == [
        ("install", "tiny/1.0.0", None), ("install", "tiny/1.1.0", "tiny/1.0.0"), ("auto_rollback", "tiny/1.0.0", "tiny/1.1.0"),
    ]  # fmt: skip
    assert state.log[-1].reason.startswith("smoke check of tiny/1.1.0 failed")


def test_a_first_install_failing_its_smoke_check_leaves_no_bundle_active(store: BundleStore, releases) -> None:
    first, _ = releases
    smoke = manifest_of(first)["smoke"]
    smoke["expected"][0]["p_up"] = 2.0
    edit_manifest(first, smoke=smoke)
    with pytest.raises(BundleError, match="rolled back to no bundle"):
        store.install(first, "ops", "one", 1000, running())
    assert store.state().active is None and store.active(running()) is None


@pytest.mark.parametrize(("field", "value"), [("author", "ops\x1b[31m"), ("reason", "line\nbreak"), ("reason", "   "), ("author", "x" * 65)])
def test_author_and_reason_must_be_plain_bounded_text_and_nothing_is_written(store: BundleStore, releases, field: str, value: str) -> None:
    first, _ = releases
    texts = {"author": "ops", "reason": "why", field: value}
    with pytest.raises(BundleError, match=f"'{field}'"):
        store.install(first, texts["author"], texts["reason"], 1000, running())
    with pytest.raises(BundleError, match=f"'{field}'"):
        store.rollback(texts["author"], texts["reason"], 1000, running())
    assert not store.root.exists()


def test_stale_staging_folders_of_killed_installs_are_removed(store: BundleStore, releases) -> None:
    first, _ = releases
    (store.root / ".staging-99999" / "model").mkdir(parents=True)
    store.install(first, "ops", "one", 1000, running())
    assert not list(store.root.glob(".staging-*"))


def test_an_active_bundle_whose_id_differs_from_the_state_is_refused(store: BundleStore, releases) -> None:
    first, _ = releases
    store.install(first, "ops", "one", 1000, running())
    raw = json.loads(store.state_path.read_text())
    store.state_path.write_text(json.dumps({**raw, "active_id": "0" * 64}))
    with pytest.raises(BundleError, match="state.json says 0000"):
        store.active(running())


def test_a_rollback_target_whose_id_differs_from_the_stack_is_refused(store: BundleStore, releases) -> None:
    first, second = releases
    store.install(first, "ops", "one", 1000, running())
    store.install(second, "ops", "two", 2000, running())
    raw = json.loads(store.state_path.read_text())
    raw["previous"][0][1] = "f" * 64
    store.state_path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="the rollback stack says ffff"):
        store.rollback("ops", "back", 3000, running())
    assert store.state().active == "tiny/1.1.0"


def test_installed_lists_only_complete_store_folders(store: BundleStore, releases) -> None:
    first, _ = releases
    store.install(first, "ops", "one", 1000, running())
    (store.root / "store" / "tiny" / "2.0.0").mkdir()
    (store.root / "store" / "loose-file").write_text("x")
    assert store.installed() == ["tiny/1.0.0"]
