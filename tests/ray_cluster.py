"""A real two-node Ray cluster on this machine, for tests and benchmarks, stopped by the PIDs it started.

``start_cluster`` runs ``ray start --head --block`` and then a second ``ray start --block --address=...``,
each its own process (and session), on free ports, with a short temp dir of its own. ``stop`` terminates
those two processes (``ray start --block`` stops the processes it started when it gets SIGTERM), then kills
whatever is left whose command line names this cluster's temp dir, by PID. It never runs ``ray stop``,
which would stop every Ray of the user on the machine, other agents' included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_READY = "Ray runtime started."
# The raylet waits this long for its agents to write their ports; 15 s (Ray's default) is too short on a busy machine.
_AGENT_WAIT_MS = "28000"
_ATTEMPTS = 3


class ClusterStartError(RuntimeError):
    """A node did not start; the message carries the tail of its log."""


def free_port() -> int:
    """Return a TCP port nothing listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_agent_register_timeout_ms=_AGENT_WAIT_MS)
    return env


def _ports(head: bool) -> list[str]:
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
    if head:
        names.append("dashboard-port")
    return [f"--{name}={free_port()}" for name in names]


@dataclass
class RayCluster:
    """A head and its worker nodes; ``address`` is what ``training.ray.address`` takes."""

    temp_dir: Path
    address: str = ""
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _start_node(self, name: str, arguments: list[str], timeout_s: float) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        log = self.temp_dir / f"{name}.log"
        command = [ray, "start", "--block", "--num-cpus=1", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *arguments]
        with log.open("wb") as sink:
            node = subprocess.Popen(command, cwd=self.temp_dir, env=_environment(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(node)
        deadline = time.monotonic() + timeout_s
        while _READY not in log.read_text(errors="replace"):
            if node.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:]
                raise ClusterStartError(f"ray node {name} did not start (exit {node.poll()}): ...{tail}")
            time.sleep(0.2)

    def start(self, workers: int = 1, timeout_s: float = 90.0) -> RayCluster:
        """Start the head and ``workers`` worker nodes of one CPU each; a worker that fails to join is tried again.

        Ray gives a node 30 s to register; on a machine loaded by other agents its Python agents may take longer.
        """
        port = free_port()
        self._start_node("head", ["--head", f"--port={port}", "--include-dashboard=false", *_ports(head=True)], timeout_s)
        self.address = f"127.0.0.1:{port}"
        for number in range(1, workers + 1):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    self._start_node(f"worker{number}-{attempt}", [f"--address={self.address}", *_ports(head=False)], timeout_s)
                    break
                except ClusterStartError:
                    self._stop_process(self.nodes.pop())
                    if attempt == _ATTEMPTS:
                        raise
        return self

    @staticmethod
    def _stop_process(node: subprocess.Popen[bytes]) -> None:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(timeout=10)

    def leftover_pids(self) -> list[int]:
        """PIDs of this user's processes whose command line names this cluster's temp dir."""
        marker = str(self.temp_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if entry.stat().st_uid == os.getuid() and marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # the process ended while we looked
                continue
        return sorted(found)

    def stop(self) -> None:
        """Stop the nodes this cluster started (worker first), kill its leftovers by PID, remove its temp dir."""
        for node in reversed(self.nodes):
            self._stop_process(node)
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(workers: int = 1) -> RayCluster:
    """Start a head plus ``workers`` worker nodes (one CPU each) under a fresh short temp dir.

    The temp dir is in the system temp folder, not pytest's: Ray's socket paths must stay under 107 bytes.
    On failure everything started so far is stopped before :class:`ClusterStartError` is raised.
    """
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="acts-rc-", dir="/tmp")))
    try:
        return cluster.start(workers)
    except ClusterStartError:
        cluster.stop()
        raise
