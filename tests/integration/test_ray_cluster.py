"""Integration: training on a real two-node Ray cluster started by other processes (`ray start`).

The cluster's nodes run in their own sessions with their own working directory and no PYTHONPATH;
the driver ships its code (``runtime_env.working_dir``, a staged copy of its packages) and the tasks carry their data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import ray
from ray_cluster import RayCluster
from stubs import small_overrides, small_spec

from backend.audit.decisions import read_decisions
from backend.clock import WallClock
from backend.config.schema import RaySpec
from backend.engine.pipeline import compile_pipeline
from backend.runs.runner import load_bars, train_bundle
from backend.errors import ClusterError
from backend.home import Home
from backend.models import parallel
from backend.models.bundle import ModelBundle
from backend.models.parallel import ensure_ray, in_flight, run_ray
from backend.runs.sweep import run_sweep

FAST = ("training.num_threads=1", "training.ray.tasks_per_call=2")


def _quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def cluster_spec(ray_cluster: RayCluster) -> Iterator[RaySpec]:
    """This process connected to the cluster (a local Ray of earlier tests is shut down first)."""
    ray.shutdown()
    spec = RaySpec(enabled=True, address=ray_cluster.address, tasks_per_call=1)
    ensure_ray(spec, Path("unused"))
    yield spec
    ray.shutdown()  # disconnects; the cluster's nodes stop with the session fixture


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Home, pl.DataFrame, ModelBundle]:
    home = Home(tmp_path_factory.mktemp("cluster_home"))
    pipeline = compile_pipeline(small_spec(*FAST))
    bars, snapshot = load_bars(pipeline.spec, home, _quiet)
    return home, bars, train_bundle(pipeline, bars, snapshot, _quiet, home)


def test_models_trained_on_the_cluster_are_byte_identical_to_serial_ones(
    cluster_spec: RaySpec, serial: tuple[Home, pl.DataFrame, ModelBundle]
) -> None:
    home, bars, expected = serial
    pipeline = compile_pipeline(small_spec(*FAST, "training.ray.enabled=true", f"training.ray.address={cluster_spec.address}"))
    progress: list[str] = []

    got = train_bundle(pipeline, bars, {}, progress.append, home)

    assert [(m.fold, m.scope, m.target, m.seed, m.train_rows) for m in got.models] == [(m.fold, m.scope, m.target, m.seed, m.train_rows) for m in expected.models]
    assert [m.text for m in got.models] == [m.text for m in expected.models]
    assert sum(message.startswith("trained ") for message in progress) == len({(m.fold, m.scope) for m in expected.models})


def test_tasks_run_on_both_nodes_with_the_code_the_driver_shipped(cluster_spec: RaySpec, ray_cluster: RayCluster) -> None:
    @dataclass(frozen=True)
    class Probe:
        fold: int
        scope: str

    def where(task: Probe) -> tuple[str, str]:
        import backend

        time.sleep(0.5)  # long enough that the second call goes to the other, idle node
        return ray.get_runtime_context().get_node_id(), backend.__file__

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    results = run_ray([Probe(i, "global") for i in range(6)], where, cluster_spec, Path("unused"), _quiet)

    assert len(alive) == 2
    assert {node for node, _ in results} == alive
    # The workers import backend from the copy Ray unpacked in the cluster's session, not from this worktree.
    outside = [file for _, file in results if not (Path(file).is_relative_to(ray_cluster.temp_dir) and "/runtime_resources/working_dir_files/" in file)]
    assert outside == []
    assert in_flight(cluster_spec) == 4  # two calls per cluster CPU, whatever num_cpus says


def test_a_sweep_on_the_cluster_gives_each_variant_the_decisions_of_its_own_run_in_this_process(
    cluster_spec: RaySpec, serial: tuple[Home, pl.DataFrame, ModelBundle], tmp_path: Path
) -> None:
    home = serial[0]
    overrides = [*small_overrides(*FAST), "risk.position_size_pct=0.06,0.12"]

    remote = run_sweep([*overrides, f"sweep.ray.address={cluster_spec.address}", f"sweep.out={tmp_path / 'cluster'}"], home, WallClock(), _quiet)
    local = run_sweep([*overrides, "sweep.ray.enabled=false", f"sweep.out={tmp_path / 'here'}"], home, WallClock(), _quiet)

    assert remote.settings.ray.address == cluster_spec.address
    assert remote.table.height == 2
    assert remote.table.drop("run_dir").equals(local.table.drop("run_dir"))
    for variant in remote.variants:
        assert read_decisions(tmp_path / "cluster" / variant.folder / "decisions.parquet").equals(read_decisions(tmp_path / "here" / variant.folder / "decisions.parquet"))


def test_the_cluster_fixture_finds_every_process_of_its_nodes_by_its_temp_dir(ray_cluster: RayCluster) -> None:
    pids = ray_cluster.leftover_pids()
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids if Path(f"/proc/{pid}").exists()}

    assert {node.pid for node in ray_cluster.nodes} <= set(pids)
    assert {"raylet", "gcs_server"} <= names


def test_a_cluster_running_other_library_versions_is_refused_and_left_running(
    cluster_spec: RaySpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = parallel.library_versions()
    # This process pretends to run another LightGBM; the nodes answer with their own, real versions.
    monkeypatch.setattr(parallel, "library_versions", lambda: {**real, "lightgbm": "0.0.1"})
    ray.shutdown()

    with pytest.raises(ClusterError, match=rf"node \w{{12}} of the cluster at '{cluster_spec.address}' runs lightgbm {real['lightgbm']}, this process 0.0.1"):
        ensure_ray(cluster_spec, Path("unused"))

    assert not ray.is_initialized()
    monkeypatch.undo()
    ensure_ray(cluster_spec, Path("unused"))  # the cluster still serves
    assert ray.is_initialized()
