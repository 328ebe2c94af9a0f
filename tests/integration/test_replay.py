"""Integration tests for backend.runs.replay: overrides, divergence search, verified run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from stubs import small_spec

from backend.audit.decisions import read_decisions
from backend.clock import WallClock
from backend.config.diff import ConfigChange
from backend.engine.pipeline import compile_pipeline
from backend.errors import ConfigError, ReplayError
from backend.home import Home
from backend.runs.backtest import run_backtest
from backend.runs.replay import REPLAYABLE_GROUPS, apply_overrides, first_divergence, replay

RAW = {"name": "r", "risk": {"entry_min_p_up": 0.55, "max_total_exposure": {"mode": "pct_of_pv", "value": 0.8}}, "data": {"days": 3}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay")
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    run_backtest(pipeline, Home(root / "home"), root / "run", WallClock(), lambda _m: None)
    return root / "run"


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


# ---------------------------------------------------------------- apply_overrides
def test_overrides_set_nested_keys_with_yaml_values_on_a_copy() -> None:
    changed = apply_overrides(RAW, ["risk.entry_min_p_up=0.6", "risk.max_total_exposure.mode=absolute", "name=again", "risk.new_key=[1, 2]"])

    assert changed == {
        "name": "again",
        "risk": {"entry_min_p_up": 0.6, "max_total_exposure": {"mode": "absolute", "value": 0.8}, "new_key": [1, 2]},
        "data": {"days": 3},
    }
    assert RAW["risk"]["entry_min_p_up"] == 0.55 and RAW["name"] == "r"


def test_no_overrides_give_an_equal_copy() -> None:
    changed = apply_overrides(RAW, [])

    assert changed == RAW and changed is not RAW


def test_only_the_groups_that_cannot_change_inputs_or_model_are_replayable() -> None:
    assert REPLAYABLE_GROUPS == ("risk", "strategy", "execution", "name", "mode")


@pytest.mark.parametrize(("override", "part"), [("risk.entry_min_p_up.low=1", "entry_min_p_up"), ("execution.broker.kind=x", "broker")])
def test_an_override_below_a_plain_value_is_refused(override: str, part: str) -> None:
    with pytest.raises(ReplayError) as caught:
        apply_overrides({"risk": {"entry_min_p_up": 0.5}, "execution": {}}, [override])

    assert str(caught.value) == f"override {override.split('=')[0]!r}: {part!r} is not a config section"


# ---------------------------------------------------------------- first_divergence
@pytest.fixture(scope="module")
def log(run_dir: Path) -> pl.DataFrame:
    return read_decisions(run_dir / "decisions.parquet")


def test_equal_logs_have_no_divergence(log: pl.DataFrame) -> None:
    assert first_divergence(log, log.clone()) is None


def test_the_first_differing_row_is_reported_with_both_versions(log: pl.DataFrame) -> None:
    changed = log.with_columns(qty=pl.when(pl.col("seq") >= 3).then(pl.col("qty") + 1.0).otherwise(pl.col("qty")))

    divergence = first_divergence(log, changed)

    assert divergence is not None and divergence["seq"] == 3
    assert divergence["original"]["qty"] + 1.0 == divergence["replay"]["qty"]
    assert divergence["original"]["order_id"] == log.row(3, named=True)["order_id"]


def test_rows_that_differ_only_in_their_stamps_are_not_a_divergence(log: pl.DataFrame) -> None:
    restamped = log.with_columns(
        spec_hash=pl.lit("other"), profile_version=pl.lit("p@1"), order_id=pl.col("order_id") + "x", gates=pl.lit("[]"), inputs=pl.lit("{}")
    )

    assert first_divergence(log, restamped) is None


def test_a_divergence_is_reported_with_whole_rows_stamps_included(log: pl.DataFrame) -> None:
    changed = log.with_columns(spec_hash=pl.lit("other"), admitted=pl.when(pl.col("seq") == 1).then(~pl.col("admitted")).otherwise(pl.col("admitted")))

    divergence = first_divergence(log, changed)

    assert divergence is not None and divergence["seq"] == 1
    assert divergence["original"]["spec_hash"] == log["spec_hash"][1] and divergence["replay"]["spec_hash"] == "other"
    assert divergence["original"]["admitted"] != divergence["replay"]["admitted"]


def test_a_shorter_replay_diverges_where_it_ends(log: pl.DataFrame) -> None:
    divergence = first_divergence(log, log.head(4))

    assert divergence == {"seq": 4, "original": divergence["original"], "replay": None}
    assert divergence["original"]["seq"] == 4


def test_a_longer_replay_diverges_at_its_first_extra_row(log: pl.DataFrame) -> None:
    divergence = first_divergence(log.head(2), log)

    assert divergence is not None and divergence["seq"] == 2
    assert divergence["original"] is None and divergence["replay"]["seq"] == 2


# ---------------------------------------------------------------- replay
def test_replay_of_an_unchanged_run_is_identical(run_dir: Path, log: pl.DataFrame) -> None:
    report = replay(run_dir, wall=WallClock())

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert report.identical
    assert report.as_dict() == {
        "run_dir": str(run_dir),
        "identical": True,
        "original_sha256": summary["decision_log_sha256"],
        "replay_sha256": summary["decision_log_sha256"],
        "original_decisions": log.height,
        "replay_decisions": log.height,
        "changes": [],
        "first_divergence": None,
    }


def test_replay_lists_the_config_changes_it_ran_under(run_dir: Path) -> None:
    report = replay(run_dir, ["name=renamed", "execution.slippage.half_spread_bps=0"])

    assert report.changes == (
        ConfigChange("execution.slippage.half_spread_bps", 5.0, 0),
        ConfigChange("name", "default", "renamed"),
    )
    assert not report.identical
    # A cheaper spread makes every priced decision cheaper (ADR-027): the log diverges at the first priced row,
    # the same decision with a lower recorded cost.
    original = read_decisions(run_dir / "decisions.parquet").sort("seq")
    first_priced = original.filter(pl.col("cost").is_not_null()).row(0, named=True)
    div = report.first_divergence
    assert div is not None and div["seq"] == first_priced["seq"]
    assert div["original"]["cost"] == pytest.approx(first_priced["cost"])
    assert div["replay"]["cost"] < div["original"]["cost"] and div["replay"]["symbol"] == first_priced["symbol"]


def test_an_override_outside_the_schema_bounds_is_a_config_error(run_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        replay(run_dir, ["risk.entry_min_p_up=1.5"])

    assert "'risk.entry_min_p_up' must be <= 1.0, was 1.5" in str(caught.value)


def test_replay_refuses_a_spec_that_differs_from_the_one_the_run_hashed(run_copy: Path) -> None:
    spec = json.loads((run_copy / "spec.json").read_text(encoding="utf-8"))
    spec["risk"]["entry_min_p_up"] = 0.6
    (run_copy / "spec.json").write_text(json.dumps(spec), encoding="utf-8")

    with pytest.raises(ReplayError) as caught:
        replay(run_copy)

    assert str(caught.value) == f"{run_copy}/spec.json does not match the run's spec_hash; the spec was altered"


@pytest.mark.parametrize("damage", ["decisions", "summary"])
def test_replay_refuses_a_decision_log_that_differs_from_the_recorded_hash(run_copy: Path, damage: str) -> None:
    if damage == "decisions":
        log = read_decisions(run_copy / "decisions.parquet")
        log.with_columns(admitted=~pl.col("admitted")).write_parquet(run_copy / "decisions.parquet")
    else:
        summary = json.loads((run_copy / "summary.json").read_text(encoding="utf-8"))
        (run_copy / "summary.json").write_text(json.dumps({**summary, "decision_log_sha256": "0" * 64}), encoding="utf-8")

    with pytest.raises(ReplayError) as caught:
        replay(run_copy)

    assert str(caught.value) == f"{run_copy}/decisions.parquet does not match the run's decision_log_sha256; the log was altered"
