"""Tests for backend.models.parallel: serial retries, Ray's init arguments and temp dir."""

from __future__ import annotations

import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightgbm.basic import LightGBMError

from backend.config.schema import RaySpec
from backend.errors import ClusterError, ModelError, TrainingTaskError
from backend.models import parallel
from backend.models.parallel import (
    TaskFailed,
    code_runtime_env,
    compare_versions,
    in_flight,
    library_versions,
    node_versions,
    probe_address,
    ray_init_arguments,
    ray_temp_dir,
    run_batch,
    run_serial,
    run_tasks,
    stage_code,
)


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
    assert ray_init_arguments(RaySpec(enabled=True, address="head:6379"), tmp_path) == {
        "address": "head:6379",
        "log_to_driver": False,
        "runtime_env": {"working_dir": str(tmp_path)},
    }


def test_the_code_staged_for_a_cluster_is_this_process_own_packages_without_bytecode(tmp_path: Path) -> None:
    root = Path(parallel.__file__).parents[2]

    staged = stage_code(tmp_path / "code")

    assert sorted(p.name for p in staged.iterdir()) == ["backend", "execution"]
    for package in ("backend", "execution"):
        expected = sorted(str(f.relative_to(root / package)) for f in (root / package).rglob("*.py"))
        assert sorted(str(f.relative_to(staged / package)) for f in (staged / package).rglob("*.py")) == expected
    assert (staged / "backend/models/parallel.py").read_bytes() == Path(parallel.__file__).read_bytes()
    assert not list(staged.rglob("__pycache__")) and not list(staged.rglob("*.pyc"))
    assert code_runtime_env(staged) == {"working_dir": str(staged)}


def test_an_address_nothing_listens_at_is_refused_quickly_naming_the_setting_and_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: a connection is refused

        with pytest.raises(ClusterError, match=rf"training.ray.address: no Ray cluster answers at '127.0.0.1:{port}' \(.+\); start one"):
            probe_address(f"127.0.0.1:{port}", timeout_s=2.0)


def test_an_address_something_listens_at_passes_the_probe() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        probe_address(f"127.0.0.1:{sock.getsockname()[1]}", timeout_s=2.0)


def test_library_versions_name_what_decides_model_bytes() -> None:
    import lightgbm
    import numpy
    import polars

    versions = library_versions()
    assert node_versions() == versions

    assert versions == {"python": "3.11." + versions["python"].split(".")[2], "lightgbm": lightgbm.__version__, "numpy": numpy.__version__, "polars": polars.__version__}


def test_a_node_with_other_library_versions_is_refused_naming_node_library_and_both_versions() -> None:
    here = {"lightgbm": "4.7.0", "numpy": "2.4.6"}
    compare_versions("h:1", here, {"aaaaaaaaaaaaaaaaaaaa": dict(here), "bbbbbbbbbbbbbbbb": {"lightgbm": "4.7.0", "numpy": "2.4.6"}})

    with pytest.raises(ClusterError, match=r"node bbbbbbbbbbbb of the cluster at 'h:1' runs lightgbm 4.6.0, this process 4.7.0: models would not"):
        compare_versions("h:1", here, {"aaaaaaaaaaaaaaaaaaaa": dict(here), "bbbbbbbbbbbbbbbb": {"lightgbm": "4.6.0", "numpy": "2.4.6"}})
    with pytest.raises(ClusterError, match=r"runs numpy None, this process 2.4.6"):
        compare_versions("h:1", here, {"cccc": {"lightgbm": "4.7.0"}})


def test_a_local_ray_keeps_two_calls_in_flight_per_configured_cpu() -> None:
    assert in_flight(RaySpec(enabled=True, num_cpus=3)) == 6


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
