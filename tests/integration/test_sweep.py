"""Integration: `acts sweep` backtests variants as Ray tasks over one shared matrix; each equals its own backtest."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import ray
from stubs import LENIENT_PROMOTION, small_overrides

from backend.audit.decisions import read_decisions
from backend.clock import WallClock
from backend.config.compose import compose_spec
from backend.config.schema import RaySpec
from backend.engine.pipeline import compile_pipeline
from backend.errors import ConfigError, DataError
from backend.home import Home
from backend.models.parallel import ensure_ray
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry
from backend.runs.backtest import run_backtest
from backend.runs.candidate import train_candidate
from backend.runs.sweep import SweepResult, run_sweep
from backend.runs.variants import COLUMNS
from scripts.cli import main

BASE = small_overrides("training.num_threads=1")
# Two position sizes x two global-model sizes: four variants in two groups (the model size changes the model).
SWEPT = ["risk.position_size_pct=0.06,0.12", "model.global_model.n_estimators=20,21"]
RUN_FILES = ["campaigns.parquet", "decisions.parquet", "equity.parquet", "fills.parquet", "inputs.json", "inputs.parquet", "model", "report.html", "spec.json", "states.parquet", "summary.json"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray of 2 CPUs under a private temp dir, for this module (an earlier connection is closed first)."""
    ray.shutdown()
    ensure_ray(RaySpec(enabled=True, num_cpus=2), Path(tempfile.mkdtemp(prefix="acts-ray-")))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def home(root: Path) -> Home:
    return Home(root / "home")


@pytest.fixture(scope="module")
def swept(local_ray: None, root: Path, home: Home) -> tuple[SweepResult, list[str]]:
    messages: list[str] = []
    result = run_sweep([*BASE, *SWEPT, f"sweep.out={root / 'ray'}"], home, WallClock(), messages.append)
    return result, messages


@pytest.fixture(scope="module")
def alone(root: Path, home: Home) -> list[dict[str, object]]:
    """Each variant backtested on its own, as `acts backtest` would."""
    from backend.runs.variants import expand_variants

    return [
        run_backtest(compile_pipeline(compose_spec(list(v.overrides))), home, root / "alone" / v.folder, WallClock(), lambda _m: None)
        for v in expand_variants([*BASE, *SWEPT], 16)
    ]


def test_each_variant_decision_log_is_identical_to_running_that_variant_alone(
    swept: tuple[SweepResult, list[str]], alone: list[dict[str, object]], root: Path
) -> None:
    result, _ = swept

    assert [v.label for v in result.variants] == [
        "model.global_model.n_estimators=20 risk.position_size_pct=0.06",  # a key keeps its first place (SMALL sets it)
        "model.global_model.n_estimators=20 risk.position_size_pct=0.12",
        "model.global_model.n_estimators=21 risk.position_size_pct=0.06",
        "model.global_model.n_estimators=21 risk.position_size_pct=0.12",
    ]
    for variant, solo in zip(result.variants, alone, strict=True):
        run_dir = root / "ray" / variant.folder
        assert read_decisions(run_dir / "decisions.parquet").equals(read_decisions(Path(str(solo["run_dir"])) / "decisions.parquet"))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        for key in ("decision_log_sha256", "state_trace_sha256", "model_version", "spec_hash", "return_pct", "fees_paid", "fills"):
            assert summary[key] == solo[key], key
    assert len({s["decision_log_sha256"] for s in alone}) == 4  # the variants really differ


def test_the_comparison_table_has_one_row_per_variant_from_its_run_and_is_written_as_csv_and_parquet(
    swept: tuple[SweepResult, list[str]], alone: list[dict[str, object]], root: Path
) -> None:
    result, _ = swept
    table = result.table

    assert table.columns == list(COLUMNS) and table.height == 4
    assert table["return_pct"].to_list() == [s["return_pct"] for s in alone]
    assert table["max_drawdown_pct"].to_list() == [s["max_drawdown_pct"] for s in alone]
    assert table["fees_paid"].to_list() == [float(str(s["fees_paid"])) for s in alone]
    assert all(t >= 0 for t in table["turnover"].to_list()) and table["turnover"].max() > 0
    assert pl.read_parquet(root / "ray" / "comparison.parquet").equals(table)
    assert pl.read_csv(root / "ray" / "comparison.csv").select("variant", "decision_log_sha256").equals(table.select("variant", "decision_log_sha256"))
    for row in table.iter_rows(named=True):
        assert sorted(p.name for p in Path(row["run_dir"]).iterdir()) == RUN_FILES


def test_variants_that_share_the_model_share_one_training_and_one_market_matrix(swept: tuple[SweepResult, list[str]]) -> None:
    _, messages = swept

    assert messages[0] == "sweep: 4 variant(s) in 2 group(s) sharing bars, model, features and predictions"
    assert sum(m.startswith("sweep: 2 variant(s) over one market matrix") for m in messages) == 2
    assert sum(m.startswith("fold 0: global model on") for m in messages) == 2  # trained once per group


def test_a_sweep_variant_folder_replays_to_the_same_decisions(swept: tuple[SweepResult, list[str]], root: Path) -> None:
    from backend.runs.replay import replay

    report = replay(root / "ray" / swept[0].variants[3].folder)

    assert report.identical


def test_the_sweep_in_this_process_gives_the_same_table_as_on_ray(swept: tuple[SweepResult, list[str]], root: Path, home: Home) -> None:
    serial = run_sweep([*BASE, *SWEPT, "sweep.ray.enabled=false", f"sweep.out={root / 'serial'}"], home, WallClock(), lambda _m: None)

    assert serial.table.drop("run_dir").equals(swept[0].table.drop("run_dir"))


def test_a_used_sweep_folder_is_refused_before_anything_runs(swept: tuple[SweepResult, list[str]], root: Path, home: Home) -> None:
    before = sorted(p.name for p in (root / "ray").iterdir())

    with pytest.raises(ConfigError, match=rf"sweep folder {root / 'ray'} already holds a sweep; choose another sweep.out"):
        run_sweep([*BASE, *SWEPT, f"sweep.out={root / 'ray'}"], home, WallClock(), lambda _m: None)
    (root / "half").mkdir()
    (root / "half" / "001-risk=conservative").mkdir()
    (root / "half" / "001-risk=conservative" / "summary.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run folder .*001-risk=conservative already holds a run"):
        run_sweep([*BASE, "risk=aggressive,conservative", f"sweep.out={root / 'half'}"], home, WallClock(), lambda _m: None)

    assert sorted(p.name for p in (root / "ray").iterdir()) == before
    assert sorted(p.name for p in (root / "half").iterdir()) == ["001-risk=conservative"]


def test_acts_sweep_prints_the_comparison_and_refuses_bad_input_naming_it(local_ray: None, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(["sweep", *BASE, "risk=aggressive,balanced", f"sweep.out={tmp_path / 's'}"], out, err)

    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sweep of 2 variant(s) finished"
    assert lines[1].split() == ["variant", "return_pct", "max_drawdown_pct", "sharpe", "fees_paid", "turnover", "orders", "label"]
    assert [line.split()[0] for line in lines[2:4]] == ["000-risk=aggressive", "001-risk=balanced"]
    assert lines[4] == f"comparison: {tmp_path / 's'}/comparison.csv (and .parquet); run folders: {tmp_path / 's'}/<variant>"
    assert "[acts] sweep: 2 variant(s) in 1 group(s)" in err.getvalue()

    refused = io.StringIO()
    assert main(["sweep", *BASE, "seed=range(0,5)", "sweep.max_variants=4", f"sweep.out={tmp_path / 't'}"], io.StringIO(), refused) == 2
    assert "'sweep.max_variants' must be >= the number of variants; the overrides expand to 5, the bound is 4" in refused.getvalue()
    assert not (tmp_path / "t").exists()


def test_a_variant_with_a_bad_value_is_refused_naming_the_variant_the_field_and_the_bound(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(["sweep", *BASE, "risk.entry_min_p_up=0.5,7", "sweep.ray.enabled=false", f"sweep.out={tmp_path / 's'}"], out, err)

    assert (code, out.getvalue()) == (2, "")
    assert "variant 001-risk.entry_min_p_up=7 (risk.entry_min_p_up=7): invalid config:\n'risk.entry_min_p_up' must be <= 1.0, was 7" in err.getvalue()
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("swept", "said"), [
    ("risk.entry_min_p_up=0.5,nan", "'risk.entry_min_p_up' must be a finite number, was nan"),
    ("sweep.max_variants=inf", "'sweep.max_variants' must be a finite number, was inf"),
    ("sweep.ray.address=10.0.0.5:70000", "'sweep.ray.address': port must be >= 1 and <= 65535, was 70000"),
])  # fmt: skip
def test_non_finite_or_out_of_bound_sweep_input_exits_2_naming_it_and_writes_nothing(acts_home: Path, swept: str, said: str) -> None:
    err = io.StringIO()

    code = main(["sweep", *BASE, swept, "risk=aggressive,balanced"], io.StringIO(), err)

    assert code == 2
    assert said in err.getvalue()
    assert not acts_home.exists()


def test_a_group_without_data_refuses_the_whole_sweep_before_any_folder_is_written(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")

    with pytest.raises(DataError, match=r"no bars for symbol 'BTC' \(source 'binance', timeframe '1h'\)"):
        run_sweep(["data=simulated,lake", *BASE, "sweep.ray.enabled=false", f"sweep.out={tmp_path / 's'}"], home, WallClock(), lambda _m: None)

    assert not (tmp_path / "s").exists()


def test_a_sweep_on_the_promoted_model_uses_it_as_it_is_like_each_backtest_does(acts_home: Path, tmp_path: Path) -> None:
    home = Home(acts_home)
    pipeline = compile_pipeline(compose_spec([*BASE, *LENIENT_PROMOTION]))
    record = train_candidate(pipeline, home, _Clock(), lambda _m: None)
    promote(ModelRegistry.of_home(home), record["version"], pipeline.spec.training.promotion, 2, "for the sweep")
    overrides = [*BASE, "model.source=promoted", "risk.position_size_pct=0.06,0.12"]

    result = run_sweep([*overrides, "sweep.ray.enabled=false", f"sweep.out={tmp_path / 's'}"], home, WallClock(), lambda _m: None)

    for variant in result.variants:
        solo = run_backtest(compile_pipeline(compose_spec(list(variant.overrides))), home, tmp_path / "alone" / variant.folder, WallClock(), lambda _m: None)
        row = result.table.filter(pl.col("variant") == variant.folder).row(0, named=True)
        assert row["decision_log_sha256"] == solo["decision_log_sha256"]
        assert solo["model_version"] == record["version"]
        assert read_decisions(Path(row["run_dir"]) / "decisions.parquet").equals(read_decisions(tmp_path / "alone" / variant.folder / "decisions.parquet"))


class _Clock:
    def now_ms(self) -> int:
        return 1

    def monotonic(self) -> float:
        return 0.0


def test_a_sweep_on_the_installed_bundle_trains_nothing_and_each_variant_equals_its_backtest(acts_home: Path, tmp_path: Path) -> None:
    home = Home(acts_home)
    overrides = ["data.days=20", "data.symbols=[BTC,ETH,SOL,DOGE]", "training.num_threads=1", "model.source=bundle", "risk=aggressive"]
    messages: list[str] = []

    result = run_sweep([*overrides, "risk.position_size_pct=0.06,0.12", "sweep.ray.enabled=false", f"sweep.out={tmp_path / 's'}"], home, WallClock(), messages.append)

    assert any(m.startswith("using the installed bundle sim_v1/1.0.0") for m in messages)
    assert not any(m.startswith("fold 0:") for m in messages)  # nothing trained
    for variant in result.variants:
        solo = run_backtest(compile_pipeline(compose_spec(list(variant.overrides))), home, tmp_path / "alone" / variant.folder, WallClock(), lambda _m: None)
        row = result.table.filter(pl.col("variant") == variant.folder).row(0, named=True)
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text(encoding="utf-8"))
        assert (row["decision_log_sha256"], summary["model_version"]) == (solo["decision_log_sha256"], solo["model_version"])
    assert len(set(result.table["decision_log_sha256"].to_list())) == 2

