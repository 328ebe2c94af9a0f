"""Benchmark: the event loop alone, fast path against the plain loop, on the same market matrix (issue 15 part 2).

Builds the matrix of ``acts backtest run=bench`` once in this process (features and predictions; by default
with the shipped bundle, ``model.source=bundle``, so nothing is trained), then runs ``run_spine_reference``
(every timestamp through ``Engine.on_batch``) and ``run_spine`` (quiet timestamps marked in bulk, ADR-053)
over it, each timed in wall and CPU seconds, and compares the decision log, state trace, equity and exposure
hashes. Extra arguments are Hydra overrides (e.g. ``data.days=60``). Prints the figures as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.audit.decisions import decision_log_sha256  # noqa: E402
from backend.bundles.channel import load_channel  # noqa: E402
from backend.bundles.compat import SHIPPED_DIR  # noqa: E402
from backend.bundles.use import installed_source  # noqa: E402
from backend.config.canonical import sha256_hex  # noqa: E402
from backend.config.compose import compose_spec  # noqa: E402
from backend.engine.loop import Spine, run_spine, run_spine_reference  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402
from backend.home import Home  # noqa: E402
from backend.runs.runner import edge_basis, load_bars, market_matrix, train_bundle  # noqa: E402


def _timed(loop, *args) -> tuple[Spine, float, float]:  # noqa: ANN001
    wall, cpu = time.perf_counter(), time.process_time()
    spine = loop(*args)
    return spine, time.perf_counter() - wall, time.process_time() - cpu


def _figures(spine: Spine, wall: float, cpu: float, events: int) -> dict[str, object]:
    started = time.perf_counter()
    log = spine.engine.log.frame()
    digest = decision_log_sha256(log)
    return {
        "loop_wall_seconds": round(wall, 3),
        "loop_cpu_seconds": round(cpu, 3),
        "events_per_second_wall": round(events / wall),
        "events_per_second_cpu": round(events / cpu),
        "decision_log_seconds": round(time.perf_counter() - started, 3),
        "batches_through_on_batch": spine.batches_run,
        "decisions": log.height,
        "fills": len(spine.engine.portfolio.ledger),
        "decision_log_sha256": digest,
        "state_trace_sha256": sha256_hex(spine.states.tobytes()),
        "equity_sha256": sha256_hex(spine.equity.tobytes()),
        "exposure_sha256": sha256_hex(spine.exposure.tobytes()),
    }


def main() -> dict[str, object]:
    overrides = ["run=bench", "model.source=bundle", *sys.argv[1:]]
    pipeline = compile_pipeline(compose_spec(overrides))
    with tempfile.TemporaryDirectory(prefix="acts-bench-spine-") as tmp:
        home = Home(Path(tmp))
        bars, snapshot = load_bars(pipeline.spec, home, lambda _: None)
        installed = installed_source(home, lambda: 0, SHIPPED_DIR, load_channel().bundle)
        bundle = train_bundle(pipeline, bars, snapshot, lambda _: None, home, installed=installed)
        started = time.perf_counter()
        matrix = market_matrix(pipeline, bars, bundle, pipeline.spec.training.num_threads)
        prepared = time.perf_counter() - started
    del bars
    edge, events = edge_basis(pipeline.spec, bundle), int(matrix.has_bar.sum())
    plain = _figures(*_timed(run_spine_reference, pipeline, matrix, edge, bundle.version), events)
    fast = _figures(*_timed(run_spine, pipeline, matrix, edge, bundle.version), events)
    same = [k for k in plain if k.endswith("sha256") and plain[k] == fast[k]]
    result = {
        "benchmark": f"event loop of backtest {' '.join(overrides)}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "events": events,
        "timestamps": len(matrix.ts_ms),
        "features_and_predictions_seconds": round(prepared, 2),
        "reference_loop": plain,
        "fast_loop": fast,
        "identical": same,
        "all_identical": len(same) == 4,
        "speed_up_cpu": round(plain["loop_cpu_seconds"] / fast["loop_cpu_seconds"], 2),  # type: ignore[operator]
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
