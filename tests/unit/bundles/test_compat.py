"""The running code's compatibility facts: versions, the bundle format, feature set hashes."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from backend.bundles.compat import BACKEND_VERSION, FORMAT, at_least, feature_set_hashes, parse_version, running
from backend.config.canonical import content_hash
from backend.config.compose import compose_spec
from backend.errors import BundleError


@pytest.mark.parametrize(("text", "parts"), [("1", (1,)), ("0.1.0", (0, 1, 0)), ("2026.1206.2330", (2026, 1206, 2330))])
def test_a_dotted_version_parses_into_integers(text: str, parts: tuple[int, ...]) -> None:
    assert parse_version("version", text) == parts


@pytest.mark.parametrize("text", ["", "1.x", "1.2.3.4.5", "v1", 1])
def test_a_malformed_version_is_refused_naming_the_field_and_value(text: object) -> None:
    with pytest.raises(BundleError, match=r"'min_app_version' must be 1 to 4 dot-separated integers"):
        parse_version("min_app_version", text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("have", "need", "ok"), [("0.1.0", "0.1", True), ("0.1", "0.1.1", False), ("1.0", "0.9.9", True), ("0.9", "1", False)]
)
def test_at_least_compares_versions_with_missing_parts_as_zero(have: str, need: str, ok: bool) -> None:
    assert at_least(have, need) is ok


def test_the_running_facts_are_the_installed_package_the_backend_version_and_every_feature_set() -> None:
    runtime = running()
    assert (runtime.app_version, runtime.backend_version, runtime.format) == (metadata.version("acts"), BACKEND_VERSION, FORMAT)
    for name in ("core_v1", "full_v1"):
        assert runtime.feature_sets[name] == content_hash(compose_spec([f"features={name}"]).features)


def test_a_feature_set_file_that_does_not_validate_is_named(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "broken.yaml").write_text("name: broken\nfeatures: []\n", encoding="utf-8")
    with pytest.raises(BundleError, match=r"feature set .*broken.yaml does not validate"):
        feature_set_hashes(tmp_path)
