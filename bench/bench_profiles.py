"""Profile store benchmark: the per-event cost of ProfileWatcher.current(), commits, activations, verify.

The paper runtime asks the watcher on every event, so its cached path must stay far below the
2 ms p99 budget of one live decision. Run: ``.venv/bin/python bench/bench_profiles.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from backend.clock import WallClock
from backend.profiles.store import ProfileStore
from backend.profiles.watcher import ProfileWatcher

CALLS = 100_000
COMMITS = 1_000


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="acts-bench-profiles-") as tmp:
        started = time.perf_counter()
        store = ProfileStore(Path(tmp) / "acts.db", WallClock())
        results["open_and_seed_ms"] = round((time.perf_counter() - started) * 1000, 3)
        watcher = ProfileWatcher(store)
        watcher.current()
        timings = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            watcher.current()
            timings.append(time.perf_counter() - t0)
        results["watcher_cached_mean_us"] = round(sum(timings) / CALLS * 1e6, 2)
        results["watcher_cached_p99_us"] = round(percentile(timings, 0.99) * 1e6, 2)
        commit_times = []
        for index in range(COMMITS):
            t0 = time.perf_counter()
            store.set("balanced", {"position_size_pct": round(0.05 + (index % 50) * 0.001 + 0.0001 * (index // 50), 6)}, "bench", "bench", index + 1)
            commit_times.append(time.perf_counter() - t0)
        results["set_commit_p50_ms"] = round(percentile(commit_times, 0.5) * 1000, 3)
        results["set_commit_p99_ms"] = round(percentile(commit_times, 0.99) * 1000, 3)
        reload_times = []
        for version in range(2, 202):
            store.activate("balanced", version, "bench", "bench")
            t0 = time.perf_counter()
            watcher.current()
            reload_times.append(time.perf_counter() - t0)
        results["watcher_after_activation_p99_us"] = round(percentile(reload_times, 0.99) * 1e6, 2)
        t0 = time.perf_counter()
        report = store.verify_chain()
        results["verify_chain_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        results["verify_chain_commits"] = report.commits
        store.close()
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
