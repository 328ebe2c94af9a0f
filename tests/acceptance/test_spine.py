"""Acceptance: the spine end to end through the real ``acts`` command.

Backtests are deterministic to the byte, a run replays from its folder alone, a changed profile
reports where decisions first diverge, decisions are point-in-time, and refused input writes nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_overrides, small_spec

from backend.audit.decisions import canonical_lines, read_decisions
from backend.clock import WallClock
from backend.config.compose import load_spec_file
from backend.engine.pipeline import compile_pipeline
from backend.models.bundle import load_bundle, save_bundle
from backend.runs.runner import execute, train_bundle
from scripts.cli import main

SUMMARY_KEYS = {
    "spec_hash",
    "profile_version",
    "model_version",
    "events",
    "decisions",
    "orders",
    "fills",
    "final_equity",
    "fees_paid",
    "decision_log_sha256",
    "wall_seconds",
    "events_per_second",
}


def acts(*argv: str) -> tuple[int, str, str]:
    """Run the ``acts`` command in-process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def backtest(run_dir: Path, *extra: str) -> tuple[int, str, str]:
    return acts("backtest", *small_overrides(*extra), f"hydra.run.dir={run_dir}")


def summary_of(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two backtests of the same SMALL spec, into two folders of one ACTS home."""
    root = tmp_path_factory.mktemp("spine")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTS_HOME", str(root / "home"))
        for name in ("a", "b"):
            code, out, err = backtest(root / name)
            assert (code, err.count("acts: error")) == (0, 0), err
            assert f"run folder: {root / name}" in out
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def run_dir(runs: tuple[Path, Path]) -> Path:
    return runs[0]


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the run folder, for tests that damage it."""
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


# ---------------------------------------------------------------- determinism
def test_two_backtests_of_the_same_spec_give_byte_identical_decision_logs(runs: tuple[Path, Path]) -> None:
    a, b = (summary_of(r) for r in runs)

    for key in ("decision_log_sha256", "state_trace_sha256", "model_version", "spec_hash", "profile_version", "final_equity", "fees_paid", "orders", "fills"):
        assert a[key] == b[key], key
    first, second = (read_decisions(r / "decisions.parquet") for r in runs)
    assert first.height > 0 and first.equals(second)
    assert list(canonical_lines(first)) == list(canonical_lines(second))
    assert (runs[0] / "decisions.parquet").read_bytes() == (runs[1] / "decisions.parquet").read_bytes()
    assert (runs[0] / "model" / "manifest.json").read_bytes() == (runs[1] / "model" / "manifest.json").read_bytes()


def test_the_run_folder_holds_spec_decisions_summary_report_inputs_and_model(run_dir: Path) -> None:
    for name in ("spec.json", "decisions.parquet", "summary.json", "report.html", "inputs.parquet", "model/manifest.json"):
        assert (run_dir / name).is_file(), name
    summary = summary_of(run_dir)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["model_version"] == load_bundle(run_dir / "model").version
    assert summary["spec_hash"] == compile_pipeline(load_spec_file(run_dir / "spec.json")).spec_hash
    assert load_spec_file(run_dir / "spec.json") == small_spec()
    assert summary["decisions"] == read_decisions(run_dir / "decisions.parquet").height


# ---------------------------------------------------------------- replay
def test_replay_reproduces_the_decision_log_exactly(run_dir: Path) -> None:
    code, out, err = acts("replay", str(run_dir))

    sha = summary_of(run_dir)["decision_log_sha256"]
    assert (code, err) == (0, "")
    assert f"original decision_log_sha256  {sha}" in out
    assert f"replayed decision_log_sha256  {sha}" in out
    assert "identical" in out


@pytest.fixture(scope="module")
def decisions(run_dir: Path) -> pl.DataFrame:
    return read_decisions(run_dir / "decisions.parquet")


def _line(decisions: pl.DataFrame, seq: int) -> dict[str, object]:
    return json.loads(list(canonical_lines(decisions))[seq])


def test_replay_under_a_raised_entry_threshold_reports_the_first_entry_it_removes_and_exits_0(run_dir: Path, decisions: pl.DataFrame) -> None:
    # Just above the weakest entry's p_up: that entry is the first decision the replay no longer makes.
    weakest = decisions.filter(pl.col("action") == "enter").sort("p_up", "seq").row(0, named=True)
    threshold = weakest["p_up"] + 1e-9

    code, out, _ = acts("replay", str(run_dir), f"risk.entry_min_p_up={threshold!r}")

    assert code == 0
    assert f"    risk.entry_min_p_up: 0.52 -> {threshold!r}\n" in out
    # The raised bar also stops the entry guard firing on weaker, cost-blocked candidates logged as
    # HOLD_EDGE_BELOW_COST (ADR-027), so the log can diverge at such a hold before the removed entry, never after it.
    seq = int(out.split("  first divergence at decision seq ", 1)[1].split(":", 1)[0])
    assert 0 <= seq <= weakest["seq"]
    rows = {line.split(":", 1)[0].strip(): json.loads(line.split(":", 1)[1]) for line in out.splitlines()[-2:]}
    assert rows["original"] == _line(decisions, seq)
    assert rows["original"]["ts"] <= weakest["ts"] and rows["original"]["action"] in ("enter", "hold")
    assert rows["replay"] != rows["original"]


@pytest.fixture(scope="module")
def lowered_exit(decisions: pl.DataFrame) -> tuple[float, dict[str, object]]:
    """An exit threshold that keeps the earlier exits but drops a later one: the first exit above all earlier ones.

    When every exit is below the one before, the threshold drops the first exit itself (mid-log all the same).
    """
    exits = decisions.filter(pl.col("action") == "exit").sort("seq").rows(named=True)
    for i, row in enumerate(exits[1:], start=1):
        earlier = max(e["p_up"] for e in exits[:i])
        if row["p_up"] > earlier:
            return (earlier + row["p_up"]) / 2.0, row
    return exits[0]["p_up"] - 1e-9, exits[0]


def test_replay_json_reports_a_divergence_in_mid_log_where_the_decisions_first_differ(
    run_dir: Path, decisions: pl.DataFrame, lowered_exit: tuple[float, dict[str, object]]
) -> None:
    threshold, dropped = lowered_exit

    code, out, _ = acts("replay", str(run_dir), f"risk.exit_max_p_up={threshold!r}", "--json")

    report = json.loads(out)
    assert code == 0
    assert report["identical"] is False
    assert report["original_sha256"] == summary_of(run_dir)["decision_log_sha256"] != report["replay_sha256"]
    assert report["original_decisions"] == decisions.height
    assert report["changes"] == [{"key": "risk.exit_max_p_up", "old": 0.42, "new": threshold}]
    divergence = report["first_divergence"]
    assert divergence["seq"] == dropped["seq"] > 0
    assert divergence["original"] == _line(decisions, dropped["seq"])
    assert divergence["replay"] is None or divergence["replay"]["order_id"] != dropped["order_id"]


def test_replay_under_a_profile_change_that_alters_no_decision_reports_no_divergence(run_dir: Path) -> None:
    states = pl.read_parquet(run_dir / "states.parquet").drop("ts")
    held = states.select(pl.sum_horizontal(pl.all() != 0)).to_series()
    # At most one position a symbol: a limit of one a symbol (4) never binds, though the run does hold 4 at once.
    assert int(held.max()) == states.width == 4

    code, out, _ = acts("replay", str(run_dir), f"risk.max_concurrent_positions={states.width}", "--json")

    report = json.loads(out)
    assert code == 0
    assert report["identical"] is False  # the stamps (spec hash, profile version) differ
    assert report["first_divergence"] is None
    assert report["replay_decisions"] == report["original_decisions"]


@pytest.mark.parametrize(
    "override",
    ["data.days=11", "model.specialist_weight=0.1", "training.label.horizon_bars=24", "features.name=other", "seed=3", "universe.version=v2"],
)
def test_replay_refuses_overrides_that_would_change_inputs_or_model(run_dir: Path, override: str) -> None:
    code, out, err = acts("replay", str(run_dir), override)

    assert (code, out) == (2, "")
    assert f"override {override.split('=')[0]!r} would change the run's inputs or model" in err


@pytest.mark.parametrize("override", ["risk.entry_min_p_up", "=0.6", "risk.entry_min_p_up:0.6"])
def test_replay_refuses_a_malformed_override(run_dir: Path, override: str) -> None:
    code, _, err = acts("replay", str(run_dir), override)

    assert code == 2
    assert f"override {override!r} must look like key.path=value" in err


def test_replay_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    code, _, err = acts("replay", str(tmp_path))

    assert code == 2
    assert f"{tmp_path} is not a complete run folder (summary.json is missing)" in err


def test_replay_refuses_tampered_inputs(run_copy: Path) -> None:
    inputs = pl.read_parquet(run_copy / "inputs.parquet")
    inputs.with_columns(close=pl.when(pl.int_range(pl.len()) == 5000).then(pl.col("close") * 1.01).otherwise(pl.col("close"))).write_parquet(
        run_copy / "inputs.parquet"
    )

    code, _, err = acts("replay", str(run_copy))

    assert code == 2
    assert f"{run_copy}/inputs.parquet does not match its recorded hash" in err


def test_replay_refuses_a_model_bundle_other_than_the_one_the_run_used(run_copy: Path) -> None:
    original = load_bundle(run_copy / "model")
    other = dataclasses.replace(original, specialist_weight=0.5)
    shutil.rmtree(run_copy / "model")
    save_bundle(other, run_copy / "model")

    code, _, err = acts("replay", str(run_copy))

    assert code == 2
    assert f"{run_copy}/model is {other.version}, the run used {original.version}" in err


def test_replay_refuses_a_tampered_model_file(run_copy: Path) -> None:
    path = run_copy / "model" / "fold001_global_p_up.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")

    code, _, err = acts("replay", str(run_copy))

    assert code == 2
    assert "fold001_global_p_up.txt does not match its manifest hash" in err


# ---------------------------------------------------------------- point in time
def test_decisions_up_to_t_do_not_change_when_every_bar_after_t_changes(run_dir: Path) -> None:
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    bundle = train_bundle(pipeline, bars, {}, lambda _m: None)
    times = bars["ts"].unique().sort()
    t = int(times[1950])  # inside the first fold's test span, between two of the run's trades
    noise = np.exp(0.02 * np.random.default_rng(5).standard_normal(bars.height))
    after = pl.col("ts") > t
    perturbed = bars.with_columns(
        [pl.when(after).then(pl.col(c) * pl.Series(noise)).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
        + [pl.when(after).then(pl.col("volume") * 3.0).otherwise(pl.col("volume")).alias("volume")]
    )

    base = execute(pipeline, bars, bundle, WallClock())
    moved = execute(pipeline, perturbed, bundle, WallClock())

    upto = pl.col("ts") <= t
    before_t = base.decisions.filter(upto)
    assert before_t.height > 0
    assert moved.decisions.filter(upto).equals(before_t)
    k = int(np.searchsorted(base.matrix.ts_ms, t)) + 1
    assert base.equity[:k].tobytes() == moved.equity[:k].tobytes()
    for name in ("p_up", "expected_return"):
        np.testing.assert_array_equal(moved.matrix.pred[name][:k], base.matrix.pred[name][:k])
        assert not np.array_equal(moved.matrix.pred[name][k:], base.matrix.pred[name][k:])
    for name, values in base.matrix.feat.items():
        np.testing.assert_array_equal(moved.matrix.feat[name][:k], values[:k], err_msg=name)
    # The perturbation is real: decisions after t do change.
    assert moved.decision_log_sha256 != base.decision_log_sha256


def test_a_model_retrained_on_bars_changed_after_t_predicts_every_row_up_to_t_identically(run_dir: Path) -> None:
    # t inside the second fold's test span: its predictions come from its boosters and its stackers, fitted (and
    # checked, ADR-065) on the first fold's out-of-fold rows. Retraining everything on bars rewritten after t must
    # move none of them.
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    bundle = train_bundle(pipeline, bars, {}, lambda _m: None)
    t = int(bars["ts"].unique().sort()[2400])
    assert bundle.folds[1].test_start_ms <= t < bundle.folds[1].test_end_ms
    noise = np.exp(0.02 * np.random.default_rng(5).standard_normal(bars.height))
    after = pl.col("ts") > t
    perturbed = bars.with_columns(
        [pl.when(after).then(pl.col(c) * pl.Series(noise)).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
    ).with_columns(pl.max_horizontal("open", "high", "close").alias("high"), pl.min_horizontal("open", "low", "close").alias("low"))

    retrained = train_bundle(pipeline, perturbed, {}, lambda _m: None)

    # expected_return's fitted stacker also reads the up-probability boosters.
    assert retrained.stacker(1, "expected_return").reason.value == "fitted"
    assert retrained.stackers == bundle.stackers and retrained.models == bundle.models
    base = execute(pipeline, bars, bundle, WallClock())
    moved = execute(pipeline, perturbed, retrained, WallClock())
    k = int(np.searchsorted(base.matrix.ts_ms, t)) + 1
    for name in ("p_up", "expected_return"):
        assert moved.matrix.pred[name][:k].tobytes() == base.matrix.pred[name][:k].tobytes()
        assert not np.array_equal(moved.matrix.pred[name][k:], base.matrix.pred[name][k:])


# ---------------------------------------------------------------- refused input writes nothing
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+risk.max_leverage=2", "'risk.max_leverage' is not a known key (unknown keys are refused), was 2"),
        ("risk.max_leverage=2", "Could not override 'risk.max_leverage'"),
        ("data.days=ten", "'data.days' input should be a valid integer"),
        ("risk.position_size_pct=1.5", "'risk.position_size_pct' must be <= 1.0, was 1.5"),
        ("model.specialist.num_leaves=1", "'model.specialist.num_leaves' must be >= 2, was 1"),
        ("training.walk_forward.purge_bars=10", "'walk_forward.purge_bars' must be >= label.horizon_bars (48), was 10"),
    ],
)
def test_an_invalid_config_exits_2_naming_key_bound_and_value_and_writes_nothing(
    tmp_path: Path, acts_home: Path, override: str, expected: str
) -> None:
    run = tmp_path / "never"

    code, out, err = backtest(run, override)

    assert (code, out) == (2, "")
    assert expected in err
    assert not run.exists()
    assert not acts_home.exists()


def test_a_run_folder_that_already_holds_a_run_is_never_overwritten(run_copy: Path, acts_home: Path) -> None:
    before = {p.relative_to(run_copy): p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}

    code, out, err = backtest(run_copy)

    assert (code, out) == (2, "")
    assert f"run folder {run_copy} already holds a run" in err
    assert {p.relative_to(run_copy): p.read_bytes() for p in run_copy.rglob("*") if p.is_file()} == before
    assert not acts_home.exists()
