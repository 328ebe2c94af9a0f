"""Integration fixtures: a real two-node Ray cluster on this machine, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ray_cluster import ClusterStartError, RayCluster, start_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and one worker node (one CPU each), each its own `ray start` process; stopped by PID at the end."""
    try:
        cluster = start_cluster(workers=1)
    except ClusterStartError as error:
        pytest.skip(f"cannot start a two-node Ray cluster on this machine: {error}")
    yield cluster
    cluster.stop()
