"""Integration: `acts train` records a candidate with its lineage; gates, promotion and the promoted model in backtests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest
from stubs import small_overrides, small_spec

from backend.clock import WallClock
from backend.config.canonical import content_hash
from backend.config.schema import FeatureSetSpec, Mode
from backend.data import lake
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ModelError, TrainingTaskError
from backend.home import Home
from backend.models.lineage import code_version
from backend.models.metrics import fold_metrics
from backend.models.promotion import promote
from backend.models.registry import ModelRegistry
from backend.models.train import predict_bundle
from backend.runs.candidate import train_candidate
from backend.runs.replay import replay
from backend.runs.runner import execute, load_bars, simulated_source, train_bundle, training_dataset
from scripts.cli import main

FAST = "training.num_threads=1"
LENIENT = ("training.promotion.max_calibration_error=1.0", "training.promotion.min_auc=0.0", "training.promotion.min_fold_auc=0.0", "training.promotion.min_ic=-1.0")


class FixedClock:
    """A clock for records: fixed time, real monotonic readings for timings."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return 0.0


def _quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("registry_home"))


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return compile_pipeline(small_spec(FAST, *LENIENT))


@pytest.fixture(scope="module")
def record(pipeline: Pipeline, home: Home) -> dict:
    return train_candidate(pipeline, home, FixedClock(1_000), _quiet)


def test_a_trained_candidate_records_windows_params_seeds_features_snapshot_and_code(pipeline: Pipeline, home: Home, record: dict) -> None:
    registry = ModelRegistry.of_home(home)
    bundle = registry.bundle(record["version"])
    spec = pipeline.spec
    files = lake.lake_files(home.lake, simulated_source(spec), "5m", spec.symbols, spec.data.start_ms, spec.data.end_ms)

    assert record["status"] == "candidate" and record["trigger"] == "manual" and record["evidence"] is None
    assert record["history"] == [{"status": "candidate", "at_ms": 1_000, "reason": "trained (manual)"}]
    assert record["folds"] == [
        {"index": w.index, "train_start_ms": w.train_start_ms, "train_end_ms": w.train_end_ms, "test_start_ms": w.test_start_ms, "test_end_ms": w.test_end_ms}
        for w in bundle.folds
    ]
    assert record["params"]["specialist"] == spec.model.specialist.model_dump(mode="json")
    assert record["params"]["global_model"] == spec.model.global_model.model_dump(mode="json")
    assert record["seeds"]["spec_seed"] == spec.seed
    assert record["seeds"]["models"] == {f"{m.fold}/{m.scope}/{m.target}": m.seed for m in bundle.models}
    assert record["feature_set"] == {"name": spec.features.name, "names": list(pipeline.feature_names), "hash": content_hash(spec.features)}
    assert record["lake_snapshot"] == lake.snapshot(files, home.lake) and len(record["lake_snapshot"]) == len(files) > 0
    assert record["code_version"] == code_version()
    assert record["spec_hash"] == pipeline.spec_hash
    assert record["models"] == len(bundle.models) and record["recovery_models"] >= 1
    assert (registry.path(record["version"]) / "bundle" / "manifest.json").is_file()


def test_fold_metrics_are_measured_on_each_fold_out_of_sample_span(pipeline: Pipeline, home: Home, record: dict) -> None:
    bundle = ModelRegistry.of_home(home).bundle(record["version"])
    bars, _ = load_bars(pipeline.spec, home, _quiet)
    dataset = training_dataset(pipeline.spec, bars)
    predicted = predict_bundle(bundle, dataset, pipeline.spec.universe.clusters, 1).join(dataset.select("ts", "symbol", "label_up", "label_return"), on=["ts", "symbol"])

    for window, metrics in zip(bundle.folds, record["fold_metrics"], strict=True):
        rows = predicted.filter((pl.col("fold") == window.index) & pl.col("label_return").is_not_null())
        expected = fold_metrics(rows["label_up"], rows["label_return"], rows["p_up"], rows["expected_return"])
        assert metrics == {"fold": window.index, **{k: pytest.approx(v) for k, v in expected.items()}}
        assert rows["ts"].min() >= window.test_start_ms and rows["ts"].max() < window.test_end_ms


def test_the_strategy_figure_is_the_spine_backtest_after_fees_on_the_out_of_sample_span(pipeline: Pipeline, home: Home, record: dict) -> None:
    bundle = ModelRegistry.of_home(home).bundle(record["version"])
    bars, _ = load_bars(pipeline.spec, home, _quiet)
    outcome = execute(pipeline, bars, bundle, WallClock())

    strategy = record["strategy"]
    assert strategy["oos_start_ms"] == bundle.folds[0].test_start_ms
    assert strategy["return_pct"] == pytest.approx(100.0 * (outcome.equity[-1] / float(outcome.engine.portfolio.initial_cash) - 1.0))
    assert strategy["fees_paid"] == str(outcome.engine.portfolio.fees_paid)
    assert len(strategy["per_fold_return_pct"]) == len(bundle.folds)


def test_training_the_same_spec_again_gives_the_same_version_and_one_record(pipeline: Pipeline, home: Home, record: dict) -> None:
    again = train_candidate(pipeline, home, FixedClock(5_000), _quiet)

    assert again == record
    assert [r["version"] for r in ModelRegistry.of_home(home).records()] == [record["version"]]


def test_a_failing_training_task_reaches_no_registry(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    pipeline = compile_pipeline(small_spec(FAST, "training.inject_failure={scope: DOGE, fold: 1}", "training.ray.max_retries=0"))

    with pytest.raises(TrainingTaskError, match=r"training DOGE in fold 1 failed after 1 attempt\(s\)"):
        train_candidate(pipeline, home, FixedClock(1), _quiet)

    assert ModelRegistry.of_home(home).records() == []
    assert not (home.root / "registry" / "models").exists()


def test_training_refuses_a_spec_that_asks_for_the_promoted_model(home: Home) -> None:
    with pytest.raises(ModelError, match="'model.source' must be 'train' to train a model, was 'promoted'"):
        train_candidate(compile_pipeline(small_spec(FAST, "model.source=promoted")), home, FixedClock(1), _quiet)


@pytest.mark.parametrize("mode", [Mode.PAPER, Mode.SHADOW, Mode.LIVE])
def test_market_facing_modes_run_only_on_a_promoted_model(mode: Mode, home: Home) -> None:
    spec = small_spec(FAST).model_copy(update={"mode": mode})

    with pytest.raises(ModelError, match=f"mode {mode.value} runs only on a promoted model: set model.source=promoted"):
        train_bundle(compile_pipeline(spec), pl.DataFrame(), {}, _quiet, home)


def test_asking_for_the_promoted_model_when_none_is_promoted_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no promoted model"):
        train_bundle(compile_pipeline(small_spec(FAST, "model.source=promoted")), pl.DataFrame(), {}, _quiet, Home(tmp_path))


def test_a_promoted_model_needing_features_the_run_lacks_is_refused(pipeline: Pipeline, tmp_path: Path, record: dict, home: Home) -> None:
    own = Home(tmp_path)
    registry = ModelRegistry.of_home(own)
    bundle = ModelRegistry.of_home(home).bundle(record["version"])
    registry.register(bundle, dict(record), 1, "copied")
    promote(registry, bundle.version, pipeline.spec.training.promotion, 2, "test", author="test")
    fewer = FeatureSetSpec(name="few", features=pipeline.spec.features.features[:3])
    narrow = compile_pipeline(small_spec(FAST, "model.source=promoted").model_copy(update={"features": fewer}))

    with pytest.raises(ModelError, match=r"needs features this run does not compute: \['btc_ret_12'"):
        train_bundle(narrow, pl.DataFrame(), {}, _quiet, own)


def test_a_candidate_with_another_feature_set_is_compared_with_the_incumbent_on_shared_rows(pipeline: Pipeline, tmp_path: Path) -> None:
    home = Home(tmp_path)
    incumbent = train_candidate(pipeline, home, FixedClock(1), _quiet)
    promote(ModelRegistry.of_home(home), incumbent["version"], pipeline.spec.training.promotion, 2, "first", author="test")
    fewer = FeatureSetSpec(name="few", features=pipeline.spec.features.features[:4])
    narrow = compile_pipeline(pipeline.spec.model_copy(update={"features": fewer}))

    challenger = train_candidate(narrow, home, FixedClock(3), _quiet)

    comparison = challenger["comparison"]
    assert comparison["incumbent"] == incumbent["version"]
    assert comparison["rows"] == sum(f["n"] for f in challenger["fold_metrics"]) == sum(f["n"] for f in incumbent["fold_metrics"])
    assert set(comparison["incumbent_metrics"]) == set(comparison["candidate"]) == {"auc", "log_loss", "ic", "hit_rate", "calibration_error", "n"}
    assert comparison["candidate"] != comparison["incumbent_metrics"]
    assert comparison["incumbent_return_pct"] == pytest.approx(incumbent["strategy"]["return_pct"])
    assert comparison["candidate_return_pct"] == pytest.approx(challenger["strategy"]["return_pct"])


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def registry_status(home: Path, version: str) -> str:
    return ModelRegistry.of_home(Home(home)).load(version)["status"]


def test_the_cli_trains_refuses_promotes_and_backtests_on_the_promoted_model(
    acts_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = small_overrides(FAST)

    code, out, err = _run(["train", *base])
    assert code == 0, err
    version = out.split()[1]
    assert out.startswith(f"candidate {version} (candidate)\n") and "  fold 1: auc " in out
    assert "[acts] trained global in fold 0" in err and f"[acts] registered candidate {version}" in err

    with pytest.raises(SystemExit) as stopped:  # argparse's refusal: no login-name default
        _run(["models", "promote", version, *LENIENT])
    assert stopped.value.code == 2 and "the following arguments are required: --author" in capsys.readouterr().err
    code, out, err = _run(["models", "promote", version, *LENIENT, "--author", "dana\x1b[2J"])
    assert code == 2 and "'author' must not contain" in err and registry_status(acts_home, version) == "candidate"

    code, out, err = _run(["models", "promote", version, "training.promotion.min_auc=0.99", "--author", "dana"])
    assert code == 2 and out == ""
    assert f"model {version} was not promoted; failing gates:\n  - min_auc: figure " in err and ", bound 0.99" in err

    code, out, _ = _run(["models", "promote", version, *LENIENT, "--reason", "first model", "--author", "dana"])
    assert code == 0 and out.startswith(f"promoted {version}\n") and "  passed min_auc: figure " in out

    code, out, _ = _run(["models", "list"])
    assert code == 0 and out.startswith(f"{version}  promoted   trigger manual  mean_auc ")
    code, out, _ = _run(["models", "show", version])
    assert {k: json.loads(out)["history"][-1][k] for k in ("author", "reason")} == {"author": "dana", "reason": "first model"}

    code, out, err = _run(["backtest", *base, "model.source=promoted"])
    assert code == 0, err
    assert f"model_version        {version}" in out and f"using promoted model {version}" in err
    run_dir = Path(out.split("run folder: ")[1].splitlines()[0])
    assert replay(run_dir).identical

    code, out, err = _run(["train", *base, "seed=9"])
    challenger = out.split()[1]
    code, out, err = _run(["models", "promote", challenger, *LENIENT, "training.promotion.min_auc_improvement=0.5", "--author", "dana"])
    assert code == 2 and "  - min_auc_improvement: figure " in err and "bound 0.5 (on " in err


def test_the_cli_lists_an_empty_registry(acts_home: Path) -> None:
    code, out, _ = _run(["models", "list"])

    assert code == 0 and out == f"no models in {acts_home / 'registry' / 'models'}\n"


def test_a_backtest_on_the_promoted_model_without_one_fails_before_writing_a_run(acts_home: Path) -> None:
    code, _, err = _run(["backtest", *small_overrides(FAST), "model.source=promoted", f"hydra.run.dir={acts_home}/runs/x"])

    assert code == 2 and "no promoted model" in err
