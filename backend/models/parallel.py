"""Run training tasks serially or as Ray tasks, with retries, in a deterministic result order.

The same task function runs in both paths with the same inputs, so a Ray run produces the same
model texts as a serial run. Results are returned in task order, whatever order they finish in.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from backend.config.schema import RaySpec
from backend.errors import ClusterError, ModelError, TrainingTaskError


def retryable() -> tuple[type[BaseException], ...]:
    """Return the errors a retry may cure (a flaky worker, LightGBM refusing a degenerate slice); never TypeError and the like.

    An ``except`` clause evaluates this only when an error reaches it, so LightGBM is not imported for it
    until then (a run that trains nothing never loads LightGBM, ADR-082).
    """
    from lightgbm.basic import LightGBMError

    return (ModelError, LightGBMError)


# Unix sockets under Ray's temp dir must fit in 107 bytes; longer homes fall back to the system temp dir.
_MAX_TEMP_DIR = 60
# The packages a cluster's workers import from the driver (scripts/ is the shell: workers never run it).
_ROOT = Path(__file__).resolve().parents[2]
_SHIPPED = ("backend", "execution")


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


def stage_code(into: Path) -> Path:
    """Copy this process's own ``backend`` and ``execution`` packages (no bytecode) into ``into``; return it."""
    for name in _SHIPPED:
        shutil.copytree(_ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def code_runtime_env(staged: Path) -> dict[str, Any]:
    """Return the ``runtime_env`` that makes a cluster's workers run the code staged in ``staged``.

    A cluster started by another process runs whatever its interpreter finds, and Ray puts the
    driver's current directory first on the workers' path unless a ``working_dir`` is given. The
    staged copy of the driver's packages as ``working_dir`` (Ray uploads it once per content hash)
    makes every worker import exactly the driver's code, from wherever the driver was started.
    """
    return {"working_dir": str(staged)}


def ray_init_arguments(spec: RaySpec, temp_dir: Path) -> dict[str, Any]:
    """Return ``ray.init`` arguments: the cluster at ``spec.address`` running the code staged in ``temp_dir``, or a local Ray.

    A local Ray has no dashboard and keeps its files in ``temp_dir``.
    """
    if spec.address is not None:
        return {"address": spec.address, "log_to_driver": False, "runtime_env": code_runtime_env(temp_dir)}
    return {"num_cpus": spec.num_cpus, "include_dashboard": False, "_temp_dir": str(temp_dir), "log_to_driver": False}


def library_versions() -> dict[str, str]:
    """Return the versions that decide model bytes: Python, LightGBM, NumPy, polars (run on each node to compare)."""
    import sys

    import lightgbm
    import numpy
    import polars

    return {
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "lightgbm": lightgbm.__version__,
        "numpy": numpy.__version__,
        "polars": polars.__version__,
    }


def node_versions() -> dict[str, str]:
    """:func:`library_versions` as a node sees them: the task :func:`check_cluster` sends to every node."""
    return library_versions()


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse quickly when nothing listens at ``address`` (Ray itself retries for minutes).

    Raises
    ------
    ClusterError
        Naming ``training.ray.address``, the address and the reason.
    """
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(
            f"training.ray.address: no Ray cluster answers at {address!r} ({error.strerror or error}); "
            "start one with `ray start --head` or set training.ray.address=null for a local Ray"
        ) from error


def compare_versions(address: str, here: dict[str, str], nodes: dict[str, dict[str, str]]) -> None:
    """Refuse a cluster whose nodes run other library versions than this process: models would differ.

    Raises
    ------
    ClusterError
        Naming the node, the library and both versions.
    """
    for node, versions in sorted(nodes.items()):
        for name in sorted(here):
            if versions.get(name) != here[name]:
                raise ClusterError(
                    f"training.ray.address: node {node[:12]} of the cluster at {address!r} runs {name} "
                    f"{versions.get(name)}, this process {here[name]}: models would not be byte-identical"
                )


def check_cluster(address: str) -> None:
    """Run :func:`library_versions` on every alive node with CPUs and compare with this process."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1)
    remote = ray.remote(node_versions)
    refs = [
        remote.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in nodes
    ]
    compare_versions(address, library_versions(), dict(zip(nodes, ray.get(refs), strict=True)))


def ensure_ray(spec: RaySpec, temp_dir: Path) -> None:
    """Start a local Ray, or connect to the cluster at ``spec.address`` and check it, unless this process already did.

    Raises
    ------
    ClusterError
        When nothing answers at ``spec.address`` or a node runs other library versions.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if spec.address is not None:
        probe_address(spec.address)
        with tempfile.TemporaryDirectory(prefix="acts-code-") as staging:  # uploaded by ray.init, then not needed
            ray.init(**ray_init_arguments(spec, stage_code(Path(staging))))
        try:
            check_cluster(spec.address)
        except ClusterError:
            ray.shutdown()  # disconnect only: the cluster belongs to whoever started it
            raise
        return
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(**ray_init_arguments(spec, temp_dir))


def in_flight(spec: RaySpec) -> int:
    """Return how many calls to keep in flight: two per CPU, of the local Ray or of the whole cluster."""
    import ray

    if spec.address is None:
        return 2 * spec.num_cpus
    return 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))


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
            except retryable() as error:
                if attempt > max_retries:
                    raise _failure(task, attempt, error) from error
                attempt += 1
                progress(f"retrying {task.scope} in fold {task.fold} (attempt {attempt})")
        progress(f"trained {task.scope} in fold {task.fold} ({number} tasks done)")
    return results


class TaskFailed(ModelError):
    """A task of a batch still failed after its retries; ``index`` is its place in the batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:  # Ray pickles the exception back to the driver
        return (TaskFailed, (self.index, str(self)))


def run_batch(work: Callable[[Any], Any], batch: list[Task], max_retries: int) -> list[Any]:
    """Run ``work`` over ``batch`` in order, each task retried ``max_retries`` times on a retryable error.

    Raises
    ------
    TaskFailed
        Naming the task's place in the batch, when a task still fails after its retries.
    """
    results = []
    for index, task in enumerate(batch):
        attempt = 0
        while True:
            try:
                results.append(work(task))
                break
            except retryable() as error:
                if attempt == max_retries:
                    raise TaskFailed(index, str(error)) from error
                attempt += 1
    return results


def _batches(tasks: Iterable[Task], size: int) -> Iterator[list[Task]]:
    batch: list[Task] = []
    for task in tasks:
        batch.append(task)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_ray(
    tasks: Iterable[Task], work: Callable[[Any], Any], spec: RaySpec, temp_dir: Path, progress: Progress
) -> list[Any]:
    """Run ``work(task)`` on Ray workers, ``spec.tasks_per_call`` consecutive tasks a call, results in task order.

    At most two calls per CPU (of the local Ray, or of the cluster at ``spec.address``) are in flight. A task that raises a retryable error is retried
    ``max_retries`` times in its worker (a worker that dies is replaced and its call retried by Ray
    as often); then the job fails with :class:`TrainingTaskError` naming the failing task's scope
    (symbol or ``global``) and fold, and the calls still in flight are cancelled.
    """
    import ray
    from ray.exceptions import RayTaskError

    ensure_ray(spec, temp_dir)
    remote = ray.remote(run_batch).options(max_retries=spec.max_retries, num_cpus=1)
    window = in_flight(spec)
    pending: dict[Any, tuple[int, list[Task]]] = {}
    results: dict[int, list[Any]] = {}
    iterator: Iterator[tuple[int, list[Task]]] = enumerate(_batches(tasks, spec.tasks_per_call))
    done = 0

    def submit() -> bool:
        for index, batch in iterator:
            pending[remote.remote(work, batch, spec.max_retries)] = (index, batch)
            return True
        return False

    while len(pending) < window and submit():
        pass
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        index, batch = pending.pop(ref)
        try:
            results[index] = ray.get(ref)
        except RayTaskError as error:
            for other in pending:
                ray.cancel(other, force=True)
            failed = error.cause  # TaskFailed: anything else is not retryable and is raised as it is
            if not isinstance(failed, TaskFailed):
                raise
            raise _failure(batch[failed.index], spec.max_retries + 1, failed) from error
        for task in batch:
            done += 1
            progress(f"trained {task.scope} in fold {task.fold} ({done} tasks done)")
        submit()
    return [result for i in range(len(results)) for result in results[i]]


def run_tasks(tasks: Iterable[Task], work: Callable[[Any], Any], spec: RaySpec, temp_dir: Path, progress: Progress) -> list[Any]:
    """Run ``tasks`` through Ray when ``spec.enabled``, else serially; return results in task order."""
    if spec.enabled:
        return run_ray(tasks, work, spec, temp_dir, progress)
    return run_serial(tasks, work, spec.max_retries, progress)
