"""Tests for backend.models.parallel: serial retries, Ray's init arguments and temp dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from lightgbm.basic import LightGBMError

from backend.config.schema import RaySpec
from backend.errors import ModelError, TrainingTaskError
import pickle

from backend.models.parallel import TaskFailed, ray_init_arguments, ray_temp_dir, run_batch, run_serial, run_tasks


@dataclass(frozen=True)
class Job:
    fold: int
    scope: str


class Flaky:
    """Fails each job's first ``failures`` attempts with ``error``, then returns the job's identity."""

    def __init__(self, failures: int, error: type[Exception]) -> None:
        self.failures = failures
        self.error = error
        self.attempts: dict[Job, int] = {}

    def __call__(self, job: Job) -> tuple[int, str]:
        self.attempts[job] = self.attempts.get(job, 0) + 1
        if self.attempts[job] <= self.failures:
            raise self.error(f"attempt {self.attempts[job]} of {job.scope}")
        return (job.fold, job.scope)


JOBS = [Job(0, "global"), Job(0, "BTC"), Job(1, "global")]


@pytest.mark.parametrize("error", [ModelError, LightGBMError])
def test_a_retryable_failure_is_retried_and_results_keep_task_order(error: type[Exception]) -> None:
    work = Flaky(failures=2, error=error)
    progress: list[str] = []

    results = run_serial(JOBS, work, max_retries=2, progress=progress.append)

    assert results == [(0, "global"), (0, "BTC"), (1, "global")]
    assert all(n == 3 for n in work.attempts.values())
    assert progress[:3] == ["retrying global in fold 0 (attempt 2)", "retrying global in fold 0 (attempt 3)", "trained global in fold 0 (1 tasks done)"]


def test_a_task_failing_beyond_its_retries_fails_the_job_naming_scope_fold_and_cause() -> None:
    work = Flaky(failures=5, error=ModelError)

    with pytest.raises(TrainingTaskError, match=r"training global in fold 0 failed after 3 attempt\(s\): attempt 3 of global"):
        run_serial(JOBS, work, max_retries=2, progress=lambda _m: None)

    assert work.attempts == {Job(0, "global"): 3}


def test_a_programming_error_is_never_retried() -> None:
    work = Flaky(failures=1, error=TypeError)

    with pytest.raises(TypeError):
        run_tasks(JOBS, work, RaySpec(enabled=False, max_retries=3), Path("unused"), lambda _m: None)

    assert work.attempts == {Job(0, "global"): 1}


def test_ray_runs_locally_without_dashboard_in_the_given_temp_dir_unless_an_address_is_set(tmp_path: Path) -> None:
    assert ray_init_arguments(RaySpec(num_cpus=3), tmp_path) == {
        "num_cpus": 3,
        "include_dashboard": False,
        "_temp_dir": str(tmp_path),
        "log_to_driver": False,
    }
    assert ray_init_arguments(RaySpec(address="ray://head:10001"), tmp_path) == {"address": "ray://head:10001", "log_to_driver": False}


def test_ray_temp_dir_is_inside_the_home_when_short_enough_for_ray_sockets(tmp_path: Path) -> None:
    assert ray_temp_dir(Path("/h")) == Path("/h/tmp/ray")
    long_home = Path("/" + "x" * 80)

    fallback = ray_temp_dir(long_home)

    assert not str(fallback).startswith(str(long_home))
    assert fallback.name.startswith("acts-ray-")


def test_a_batch_retries_each_task_in_place_and_returns_results_in_order() -> None:
    work = Flaky(failures=2, error=LightGBMError)
    batch = [Job(0, "global"), Job(0, "BTC")]

    assert run_batch(work, batch, max_retries=2) == [(0, "global"), (0, "BTC")]
    assert work.attempts == {Job(0, "global"): 3, Job(0, "BTC"): 3}


def test_a_batch_names_the_place_of_the_task_that_still_fails() -> None:
    work = Flaky(failures=5, error=ModelError)

    with pytest.raises(TaskFailed) as error:
        run_batch(work, [Job(1, "ETH")], max_retries=1)

    assert error.value.index == 0
    assert work.attempts == {Job(1, "ETH"): 2}
    copy = pickle.loads(pickle.dumps(error.value))  # as Ray ships it back to the driver
    assert (type(copy), copy.index, str(copy)) == (TaskFailed, 0, str(error.value))


def test_a_batch_does_not_retry_an_error_that_is_not_retryable() -> None:
    work = Flaky(failures=1, error=TypeError)

    with pytest.raises(TypeError):
        run_batch(work, [Job(0, "global")], max_retries=3)

    assert work.attempts == {Job(0, "global"): 1}
