"""Run training tasks serially or as Ray tasks, with retries, in a deterministic result order.

The same task function runs in both paths with the same inputs, so a Ray run produces the same
model texts as a serial run. Results are returned in task order, whatever order they finish in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from lightgbm.basic import LightGBMError

from backend.config.schema import RaySpec
from backend.errors import ModelError, TrainingTaskError

# Errors a retry may cure (a flaky worker, LightGBM refusing a degenerate slice). Never TypeError and the like.
RETRYABLE = (ModelError, LightGBMError)
# Unix sockets under Ray's temp dir must fit in 107 bytes; longer homes fall back to the system temp dir.
_MAX_TEMP_DIR = 60


class Task(Protocol):
    """A unit of training work: knows its fold and scope, for progress and error messages."""

    fold: int
    scope: str


Progress = Callable[[str], None]


def ray_temp_dir(home_root: Path) -> Path:
    """Return Ray's temp dir: inside the ACTS home when the path is short enough for Ray's sockets."""
    inside = home_root / "tmp" / "ray"
    if len(str(inside)) <= _MAX_TEMP_DIR:
        return inside
    return Path(tempfile.gettempdir()) / f"acts-ray-{os.getuid()}"


def ray_init_arguments(spec: RaySpec, temp_dir: Path) -> dict[str, Any]:
    """Return ``ray.init`` arguments: a cluster at ``spec.address``, or a local Ray without dashboard."""
    if spec.address is not None:
        return {"address": spec.address, "log_to_driver": False}
    return {"num_cpus": spec.num_cpus, "include_dashboard": False, "_temp_dir": str(temp_dir), "log_to_driver": False}


def ensure_ray(spec: RaySpec, temp_dir: Path) -> None:
    """Start Ray (or connect to ``spec.address``) unless this process already did."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(**ray_init_arguments(spec, temp_dir))


def _failure(task: Task, attempts: int, cause: BaseException) -> TrainingTaskError:
    return TrainingTaskError(
        f"training {task.scope} in fold {task.fold} failed after {attempts} attempt(s): {cause}", task.scope, task.fold
    )


def run_serial(tasks: Iterable[Task], work: Callable[[Any], Any], max_retries: int, progress: Progress) -> list[Any]:
    """Run ``work(task)`` for each task in order, retrying retryable errors ``max_retries`` times."""
    results = []
    for number, task in enumerate(tasks, start=1):
        attempt = 1
        while True:
            try:
                results.append(work(task))
                break
            except RETRYABLE as error:
                if attempt > max_retries:
                    raise _failure(task, attempt, error) from error
                attempt += 1
                progress(f"retrying {task.scope} in fold {task.fold} (attempt {attempt})")
        progress(f"trained {task.scope} in fold {task.fold} ({number} tasks done)")
    return results


def run_ray(
    tasks: Iterable[Task], work: Callable[[Any], Any], spec: RaySpec, temp_dir: Path, progress: Progress
) -> list[Any]:
    """Run ``work(task)`` as Ray tasks, at most ``2 x num_cpus`` in flight, results in task order.

    A task that raises a retryable error is retried by Ray ``max_retries`` times; then the job
    fails with :class:`TrainingTaskError` naming the scope (symbol or ``global``) and the fold, and
    the tasks still in flight are cancelled.
    """
    import ray
    from ray.exceptions import RayTaskError

    ensure_ray(spec, temp_dir)
    remote = ray.remote(work).options(max_retries=spec.max_retries, retry_exceptions=list(RETRYABLE), num_cpus=1)
    window = 2 * spec.num_cpus
    pending: dict[Any, tuple[int, Task]] = {}
    results: dict[int, Any] = {}
    iterator: Iterator[tuple[int, Task]] = enumerate(tasks)

    def submit() -> bool:
        for index, task in iterator:
            pending[remote.remote(task)] = (index, task)
            return True
        return False

    while len(pending) < window and submit():
        pass
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        index, task = pending.pop(ref)
        try:
            results[index] = ray.get(ref)
        except RayTaskError as error:
            for other in pending:
                ray.cancel(other, force=True)
            raise _failure(task, spec.max_retries + 1, error.cause) from error
        progress(f"trained {task.scope} in fold {task.fold} ({len(results)} tasks done)")
        submit()
    return [results[i] for i in range(len(results))]


def run_tasks(tasks: Iterable[Task], work: Callable[[Any], Any], spec: RaySpec, temp_dir: Path, progress: Progress) -> list[Any]:
    """Run ``tasks`` through Ray when ``spec.enabled``, else serially; return results in task order."""
    if spec.enabled:
        return run_ray(tasks, work, spec, temp_dir, progress)
    return run_serial(tasks, work, spec.max_retries, progress)
