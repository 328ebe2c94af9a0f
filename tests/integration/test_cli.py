"""Integration tests for scripts.cli: the ``acts`` command in-process, and its installed entry point."""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from stubs import small_overrides, small_spec

from backend.audit.decisions import write_decisions
from backend.clock import WallClock
from backend.config.compose import compose_spec, validate_raw
from backend.config.diff import diff_configs
from backend.data import shared_loader
from backend.engine.pipeline import compile_pipeline
from backend.models.bundle import load_bundle
from backend.runs import runner
from scripts.cli import SUMMARY_KEYS, main, run

ACTS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "acts"
FAST = "training.num_threads=1"


def acts(*argv: str) -> tuple[int, str, str]:
    """Run the ``acts`` command in-process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _valid_line(spec_overrides: list[str]) -> str:
    pipeline = compile_pipeline(compose_spec(spec_overrides))
    return f"valid: spec_hash={pipeline.spec_hash} profile_version={pipeline.profile_version}\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SMALL backtest through ``acts backtest``."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTS_HOME", str(root / "home"))
        code, _, err = acts("backtest", *small_overrides(FAST), f"hydra.run.dir={root / 'run'}")
    assert code == 0, err
    return root / "run"


# ---------------------------------------------------------------- config show / validate
def test_config_show_prints_the_validated_spec_as_yaml_and_its_hash() -> None:
    code, out, err = acts("config", "show", "risk=aggressive", "seed=3")

    assert (code, err) == (0, "")
    body, valid = out.rsplit("valid: ", 1)
    assert yaml.safe_load(body) == compose_spec(["risk=aggressive", "seed=3"]).model_dump(mode="json")
    assert "valid: " + valid == _valid_line(["risk=aggressive", "seed=3"])


def test_config_validate_prints_only_the_hash_line() -> None:
    code, out, _ = acts("config", "validate", "risk=conservative")

    assert code == 0
    assert out == _valid_line(["risk=conservative"])


def test_config_validate_of_a_runs_spec_file_gives_the_runs_spec_hash(run_dir: Path) -> None:
    code, out, _ = acts("config", "validate", "--file", str(run_dir / "spec.json"))

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert code == 0
    assert out == f"valid: spec_hash={summary['spec_hash']} profile_version={summary['profile_version']}\n"


def test_config_show_of_a_yaml_spec_file_shows_that_spec(tmp_path: Path) -> None:
    spec = small_spec()
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")

    code, out, _ = acts("config", "show", "--file", str(path))

    assert code == 0
    assert yaml.safe_load(out.rsplit("valid: ", 1)[0]) == spec.model_dump(mode="json")
    assert out.endswith(_valid_line(small_overrides()))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["config", "validate", "risk.position_size_pct=2"], "'risk.position_size_pct' must be <= 1.0, was 2"),
        (["config", "show", "risk=reckless"], "cannot compose config"),
        (["config", "validate", "--file", "/nonexistent/spec.json"], "cannot read spec file /nonexistent/spec.json"),
        (["config", "diff", "default", "data.days=1"], "'data.days' must be >= 2, was 1"),
    ],
)
def test_config_errors_exit_2_with_the_reason_on_stderr(argv: list[str], expected: str) -> None:
    code, out, err = acts(*argv)

    assert (code, out) == (2, "")
    assert err.startswith("acts: error: ") and expected in err


# ---------------------------------------------------------------- config diff
def test_config_diff_between_override_sets_lists_each_changed_key() -> None:
    code, out, _ = acts("config", "diff", "default", "risk=aggressive")

    assert code == 0
    lines = out.splitlines()
    assert 'risk.name: "balanced" -> "aggressive"' in lines
    assert "risk.entry_min_p_up: 0.55 -> 0.52" in lines
    assert len(lines) == len(diff_configs(compose_spec().model_dump(mode="json"), compose_spec(["risk=aggressive"]).model_dump(mode="json")))
    assert all(line.startswith("risk.") for line in lines)


def test_config_diff_json_gives_key_old_and_new_for_comma_separated_overrides() -> None:
    code, out, _ = acts("config", "diff", "", "seed=9,data.days=20", "--json")

    assert code == 0
    assert json.loads(out) == [{"key": "data.days", "old": 60, "new": 20}, {"key": "seed", "old": 7, "new": 9}]


def test_config_diff_between_two_spec_files(run_dir: Path, tmp_path: Path) -> None:
    other = small_spec(FAST, "seed=11").model_dump(mode="json")
    path = tmp_path / "other.yml"
    path.write_text(yaml.safe_dump(other), encoding="utf-8")

    text = acts("config", "diff", str(run_dir / "spec.json"), str(path))
    as_json = acts("config", "diff", str(run_dir / "spec.json"), str(path), "--json")

    assert text == (0, "seed: 7 -> 11\n", "")
    assert json.loads(as_json[1]) == [{"key": "seed", "old": 7, "new": 11}]


def test_config_diff_of_a_file_with_itself_has_no_differences(run_dir: Path) -> None:
    assert acts("config", "diff", str(run_dir / "spec.json"), str(run_dir / "spec.json")) == (0, "no differences\n", "")


# ---------------------------------------------------------------- backtest
def test_backtest_prints_the_summary_keys_and_where_the_run_is(run_dir: Path, tmp_path: Path) -> None:
    code, out, err = acts("backtest", *small_overrides(FAST), f"hydra.run.dir={tmp_path / 'again'}")

    summary = json.loads((tmp_path / "again" / "summary.json").read_text(encoding="utf-8"))
    assert code == 0
    assert out.splitlines()[0] == "backtest default finished"
    for key in SUMMARY_KEYS:
        assert f"  {key}" in out
    assert f"decision_log_sha256  {summary['decision_log_sha256']}" in out
    assert out.endswith(f"run folder: {tmp_path / 'again'}\nreport: {tmp_path / 'again' / 'report.html'}\n")
    assert all(line.startswith("[acts] ") for line in err.splitlines())


def test_backtest_runs_default_to_the_acts_home_runs_folder(acts_home: Path) -> None:
    code, out, _ = acts("backtest", *small_overrides(FAST, "model.global_model.n_estimators=2", "model.specialist.n_estimators=2"))

    assert code == 0
    runs = list((acts_home / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file()
    assert f"run folder: {runs[0]}\n" in out


@pytest.mark.parametrize("where", ["missing folder", "no shared folder next to the repo"])
def test_a_shared_data_run_without_the_recorded_data_exits_2(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if where == "missing folder":
        monkeypatch.setenv("ACTS_SHARED_DATA", str(tmp_path / "absent"))
        expected = "no bars for symbol 'BTC' (source 'binance', timeframe '1h')"
    else:
        monkeypatch.delenv("ACTS_SHARED_DATA", raising=False)
        # The real lookup, for a checkout that has no ../shared/data beside it.
        monkeypatch.setattr(runner, "default_shared_dir", functools.partial(shared_loader.default_shared_dir, tmp_path / "repo"))
        expected = "data.kind=shared needs the recorded data folder ../shared/data (or set ACTS_SHARED_DATA)"

    code, out, err = acts("backtest", "run=real", "data.days=3", "data.symbols=[BTC,ETH]", f"hydra.run.dir={tmp_path / 'run'}")

    assert (code, out) == (2, "")
    assert f"acts: error: {expected}" in err
    assert not (tmp_path / "run" / "summary.json").exists()


# ---------------------------------------------------------------- replay
def test_replay_text_of_an_unchanged_run_confirms_every_decision(run_dir: Path) -> None:
    code, out, err = acts("replay", str(run_dir))

    sha = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["decision_log_sha256"]
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"replay of {run_dir}"
    assert f"  original decision_log_sha256  {sha}\n  replayed decision_log_sha256  {sha}\n" in out
    assert "config changes" not in out
    assert out.endswith("  identical: the replay reproduces every decision\n")


def test_replay_text_under_a_rename_lists_the_change_and_finds_the_same_decisions(run_dir: Path) -> None:
    code, out, _ = acts("replay", str(run_dir), "name=renamed")

    assert code == 0
    assert '  config changes:\n    name: "default" -> "renamed"\n' in out
    assert out.endswith("  same decisions: only the stamps (spec hash, profile version, order ids) differ\n")


def test_replay_json_of_an_unchanged_run(run_dir: Path) -> None:
    code, out, _ = acts("replay", str(run_dir), "--json")

    report = json.loads(out)
    assert code == 0
    assert report["identical"] is True and report["changes"] == [] and report["first_divergence"] is None


def test_a_run_the_code_no_longer_reproduces_fails_its_replay_with_exit_1(run_dir: Path, tmp_path: Path) -> None:
    # A consistent run folder whose recorded decisions came from other behaviour (as after a code change).
    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    spec = json.loads((copy / "spec.json").read_text(encoding="utf-8"))
    spec["risk"]["entry_min_p_up"] = 0.6
    other = runner.execute(compile_pipeline(validate_raw(spec)), pl.read_parquet(copy / "inputs.parquet"), load_bundle(copy / "model"), WallClock())
    write_decisions(other.decisions, copy / "decisions.parquet")
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    runner.write_json(copy / "summary.json", {**summary, "decision_log_sha256": other.decision_log_sha256, "decisions": other.decisions.height})

    code, out, _ = acts("replay", str(copy))

    assert code == 1
    assert "first divergence at decision seq " in out
    assert "identical" not in out


# ---------------------------------------------------------------- demo and the installed command
def test_demo_backtests_and_replays_identically(tmp_path: Path) -> None:
    code, out, err = acts("demo", *small_overrides(FAST), f"hydra.run.dir={tmp_path / 'demo'}")

    assert code == 0
    assert out.startswith("ACTS demo: backtest default on 4 symbols, offline\n")
    assert "  replay_identical  True\n" in out
    assert (tmp_path / "demo" / "summary.json").is_file()
    assert "[acts] replaying the run from its recorded inputs" in err.splitlines()


def test_the_installed_acts_command_validates_the_default_config(tmp_path: Path) -> None:
    done = subprocess.run([str(ACTS), "config", "validate"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout == _valid_line([])


def test_the_console_entry_point_exits_with_mains_code_and_writes_to_the_current_streams(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["acts", "config", "validate", "risk=aggressive"])

    with pytest.raises(SystemExit) as exited:
        run()

    assert exited.value.code == 0
    assert capsys.readouterr().out == _valid_line(["risk=aggressive"])


def test_the_console_entry_point_exits_2_with_the_error_on_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["acts", "replay", "/nonexistent/run"])

    with pytest.raises(SystemExit) as exited:
        run()

    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert (captured.out, captured.err) == ("", "acts: error: /nonexistent/run is not a complete run folder (summary.json is missing)\n")
