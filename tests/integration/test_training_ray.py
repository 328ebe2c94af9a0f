"""Integration: Ray-parallel training gives byte-identical models and predictions, and fails clearly."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import ray
from stubs import small_spec

from backend.config.schema import RaySpec
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ModelError, TrainingTaskError
from backend.home import Home
from backend.models.bundle import ModelBundle
from backend.models.parallel import ensure_ray, run_ray
from backend.models.registry import ModelRegistry
from backend.models.train import predict_bundle
from backend.runs.candidate import train_candidate
from backend.runs.runner import load_bars, model_training_json, train_bundle, training_dataset

FAST = "training.num_threads=1"


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Path]:
    """One local Ray for the session: 2 CPUs, no dashboard, temp dir in the system temp folder."""
    temp = Path(tempfile.mkdtemp(prefix="acts-ray-"))
    monkey = pytest.MonkeyPatch()
    monkey.setenv("RAY_AUTH_MODE", "disabled")
    ensure_ray(RaySpec(enabled=True, num_cpus=2), temp)
    yield temp
    ray.shutdown()
    monkey.undo()


def _quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("ray_home"))


@pytest.fixture(scope="module")
def serial(home: Home) -> tuple[Pipeline, ModelBundle, pl.DataFrame]:
    pipeline = compile_pipeline(small_spec(FAST))
    bars, snapshot = load_bars(pipeline.spec, home, _quiet)
    return pipeline, train_bundle(pipeline, bars, snapshot, _quiet, home), bars


def test_ray_and_serial_training_give_byte_identical_models_and_predictions(local_ray: Path, home: Home, serial: tuple[Pipeline, ModelBundle, pl.DataFrame]) -> None:
    pipeline, expected, bars = serial
    parallel = compile_pipeline(small_spec(FAST, "training.ray.enabled=true"))
    progress: list[str] = []

    got = train_bundle(parallel, bars, {}, progress.append, home)

    assert [(m.fold, m.scope, m.target, m.seed, m.train_rows) for m in got.models] == [(m.fold, m.scope, m.target, m.seed, m.train_rows) for m in expected.models]
    assert [m.text for m in got.models] == [m.text for m in expected.models]
    dataset = training_dataset(pipeline.spec, bars)
    clusters = pipeline.spec.universe.clusters
    assert predict_bundle(got, dataset, clusters, 1).equals(predict_bundle(expected, dataset, clusters, 1))
    assert sum(message.startswith("trained ") for message in progress) == len({(m.fold, m.scope) for m in expected.models})


def test_a_ray_task_failing_beyond_its_retries_fails_the_job_naming_symbol_and_fold_and_registers_nothing(local_ray: Path, tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    pipeline = compile_pipeline(small_spec(FAST, "training.ray.enabled=true", "training.ray.max_retries=1", "training.inject_failure={scope: SOL, fold: 0}"))

    with pytest.raises(TrainingTaskError, match=r"training SOL in fold 0 failed after 2 attempt\(s\): injected failure") as caught:
        train_candidate(pipeline, home, _Clock(), _quiet)

    assert (caught.value.scope, caught.value.fold) == ("SOL", 0)
    assert ModelRegistry.of_home(home).records() == []


class _Clock:
    def now_ms(self) -> int:
        return 1

    def monotonic(self) -> float:
        return 0.0


def test_ray_retries_a_flaky_task_and_returns_results_in_task_order(local_ray: Path, tmp_path: Path) -> None:
    # Defined here, not at module level, so Ray ships them by value (workers cannot import test modules).
    @dataclass(frozen=True)
    class Task:
        fold: int
        scope: str
        folder: str

    def flaky(task: Task) -> str:
        marker = Path(task.folder) / f"{task.fold}-{task.scope}"
        if not marker.exists():
            marker.write_text("tried", encoding="utf-8")
            raise ModelError("flaky worker")
        return f"{task.scope}@{task.fold}"

    tasks = [Task(fold, scope, str(tmp_path)) for fold in range(3) for scope in ("global", "BTC")]

    results = run_ray(tasks, flaky, RaySpec(enabled=True, num_cpus=1, max_retries=1), local_ray, _quiet)

    assert results == [f"{scope}@{fold}" for fold in range(3) for scope in ("global", "BTC")]


def test_when_a_ray_task_fails_the_tasks_still_in_flight_are_cancelled(local_ray: Path) -> None:
    @dataclass(frozen=True)
    class Task:
        fold: int
        scope: str

    def work(task: Task) -> str:
        if task.scope == "bad":
            raise ModelError("always fails")
        time.sleep(5)
        return task.scope

    started = time.perf_counter()
    with pytest.raises(TrainingTaskError, match=r"training bad in fold 0 failed after 1 attempt\(s\): always fails"):
        run_ray(
            [Task(0, "bad"), Task(0, "slow"), Task(1, "never")],
            work,
            RaySpec(enabled=True, num_cpus=1, max_retries=0, tasks_per_call=1),
            local_ray,
            _quiet,
        )

    assert time.perf_counter() - started < 5  # the slow task was cancelled, not awaited


def test_a_task_failing_inside_a_batch_is_named_after_its_retries(local_ray: Path, tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Task:
        fold: int
        scope: str
        folder: str

    def work(task: Task) -> str:
        tries = Path(task.folder) / f"{task.fold}-{task.scope}"
        tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
        if task.scope == "SOL":
            raise ModelError("degenerate slice")
        return task.scope

    tasks = [Task(2, scope, str(tmp_path)) for scope in ("global", "BTC", "SOL", "ETH")]

    with pytest.raises(TrainingTaskError, match=r"training SOL in fold 2 failed after 3 attempt\(s\): degenerate slice") as error:
        run_ray(tasks, work, RaySpec(enabled=True, num_cpus=1, max_retries=2, tasks_per_call=4), local_ray, _quiet)

    assert (error.value.scope, error.value.fold) == ("SOL", 2)
    assert (tmp_path / "2-SOL").read_text() == "xxx"  # retried in the worker, twice
    assert (tmp_path / "2-BTC").read_text() == "x"  # the tasks before it ran once
    assert not (tmp_path / "2-ETH").exists()  # and the batch stopped there


def test_a_non_retryable_error_in_a_batch_is_raised_as_it_is(local_ray: Path) -> None:
    @dataclass(frozen=True)
    class Task:
        fold: int
        scope: str

    def work(task: Task) -> str:
        raise TypeError(f"bug in {task.scope}")

    with pytest.raises(Exception, match="bug in global") as error:
        run_ray([Task(0, "global")], work, RaySpec(enabled=True, num_cpus=1, max_retries=2), local_ray, _quiet)

    assert not isinstance(error.value, TrainingTaskError)


def test_model_training_lineage_leaves_out_settings_that_do_not_shape_models() -> None:
    plain, other = small_spec(FAST), small_spec(FAST, "training.ray.enabled=true", "training.promotion.min_auc=0.6", "training.schedule.cadence_hours=2")

    assert model_training_json(plain) == model_training_json(other)
    assert "ray" not in json.loads(model_training_json(plain))
