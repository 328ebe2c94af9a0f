"""Every non-Python executable artifact is listed in docs/executable_artifacts.md and checked here."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

from backend.config.compose import CONF_DIR, compose_spec
from backend.engine.pipeline import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "docs" / "executable_artifacts.md"
ARTIFACT_PATTERNS = ("Makefile", ".ci/*", "**/*.sh", "**/*.sql", ".github/workflows/*.yml", "conf/**/*.yaml", "conf/*.yaml")
SKIP_DIRS = {".venv", ".git", "node_modules", "__pycache__"}


def manifest_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("path", "---"):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def artifacts_in_tree() -> list[str]:
    found = set()
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO)
        if path.is_dir() or SKIP_DIRS & set(relative.parts):
            continue
        text = relative.as_posix()
        if any(fnmatch.fnmatch(text, pattern) for pattern in ARTIFACT_PATTERNS):
            found.add(text)
    return sorted(found)


def test_every_artifact_in_the_tree_is_listed_and_every_listed_one_exists() -> None:
    patterns = [row[0] for row in manifest_rows()]
    unlisted = [a for a in artifacts_in_tree() if not any(fnmatch.fnmatch(a, p) for p in patterns)]
    assert unlisted == []
    for pattern in patterns:
        assert list(REPO.glob(pattern)), f"{pattern} is listed but matches no file"


def test_every_listed_check_names_a_test_in_this_module() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    for _path, _kind, validated_by in manifest_rows():
        for name in re.findall(r"`(test_[a-z_]+)`", validated_by):
            assert f"def {name}(" in source


def test_ci_script_is_valid_bash_and_runs_make_test() -> None:
    script = REPO / ".ci" / "run"
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = [line.strip() for line in script.read_text(encoding="utf-8").splitlines()]
    assert "make test" in lines
    assert "set -euo pipefail" in lines


def test_system_packages_script_is_valid_bash_and_idempotent() -> None:
    script = REPO / "scripts" / "sh" / "install_system_packages.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "set -euo pipefail" in script.read_text(encoding="utf-8").splitlines()
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("target", ["install", "run", "test", "bench", "clean", "console", "console-screenshots"])
def test_makefile_targets_parse_in_dry_run(target: str) -> None:
    result = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


NOT_RUN_GROUPS = {"bundles"}


def test_bundle_build_and_channel_configs_validate() -> None:
    from backend.bundles.channel import load_channel
    from backend.runs.bundle_build import load_build_spec

    builds = sorted(p for p in (CONF_DIR / "bundles").glob("*.yaml") if p.stem != "channel")
    assert builds, "conf/bundles holds no build config"
    for path in builds:
        spec = load_build_spec(path.stem)
        assert spec.name == path.stem
        assert compile_pipeline(compose_spec(list(spec.overrides))).spec_hash
    assert load_channel().path == "bundles"


def config_options() -> list[str]:
    options = []
    # conf/bundles holds bundle build and channel settings, not a RunSpec group (checked below).
    for group_dir in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_RUN_GROUPS):
        for option in sorted(group_dir.glob("*.yaml")):
            options.append(f"{group_dir.name}={option.stem}")
    return options


@pytest.mark.parametrize("override", config_options())
def test_every_config_option_composes_and_validates(override: str) -> None:
    pipeline = compile_pipeline(compose_spec([override]))
    group, option = override.split("=")
    assert len(pipeline.spec_hash) == 64
    if group == "risk":
        assert pipeline.spec.risk.name == option
    if group == "run":
        assert pipeline.spec.name == option


def test_the_sweep_config_composes_and_validates() -> None:
    import yaml

    from backend.config.schema import SweepSpec
    from backend.runs.variants import sweep_settings

    settings = sweep_settings([])

    assert isinstance(settings, SweepSpec)
    raw = yaml.safe_load((REPO / "conf" / "sweep.yaml").read_text(encoding="utf-8"))
    assert set(raw) == set(SweepSpec.model_fields)
    assert set(raw["ray"]) <= set(type(settings.ray).model_fields)
