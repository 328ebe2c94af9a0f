"""Benchmark: the paper runtime's time to process one 30-symbol bar, journal commit included.

Records a 30-symbol backtest (default universe, 14 days of 5-minute bars, small walk-forward),
then plays it through ``PaperRuntime`` at speed 0 and times every ``step`` (kill-switch read,
decisions, gates, simulated fills, journal, ledger, decision rows and checkpoint committed with
synchronous=FULL). Prints the figures as JSON; the target is p99 < 50 ms.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from backend.clock import WallClock  # noqa: E402
from backend.config.compose import compose_spec  # noqa: E402
from backend.control.store import ControlStore  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402
from backend.home import Home  # noqa: E402
from backend.models.registry import ModelRegistry  # noqa: E402
from backend.runs.backtest import run_backtest  # noqa: E402
from backend.runtime.paper import PaperRuntime, load_recorded  # noqa: E402

OVERRIDES = [
    "name=bench-paper",
    "data.days=14",
    "training.walk_forward.n_folds=2",
    "training.walk_forward.min_train_bars=1440",
    "training.walk_forward.purge_bars=48",
    "training.walk_forward.embargo_bars=6",
    "training.label.horizon_bars=48",
    "training.max_train_rows=40000",
    "training.num_threads=1",
]


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="acts-bench-paper-") as tmp:
        root = Path(tmp)
        spec = compose_spec([*OVERRIDES, *sys.argv[1:]])
        summary = run_backtest(compile_pipeline(spec), Home(root / "home"), root / "run", WallClock(), lambda _m: None)
        feed = load_recorded(root / "run", ModelRegistry(root / "registry"), allow_run_bundle=True)
        control = ControlStore(root / "acts.db")
        runtime = PaperRuntime(feed, root / "state", control)
        seconds = []
        for batch in feed.batches(0):
            started = time.perf_counter()
            runtime.step(batch)
            seconds.append(time.perf_counter() - started)
        result = runtime.result(len(seconds))
        runtime.close()
        control.close()
    ms = np.array(seconds) * 1000.0
    out = {
        "benchmark": "paper runtime: one bar for all symbols, journal committed (synchronous=FULL)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "symbols": len(feed.matrix.symbols),
        "events": len(seconds),
        "decisions": result.decisions,
        "orders": result.orders,
        "ms_p50": round(float(np.percentile(ms, 50)), 3),
        "ms_p99": round(float(np.percentile(ms, 99)), 3),
        "ms_max": round(float(ms.max()), 3),
        "target_p99_ms": 50,
        "parity_with_backtest": result.decision_log_sha256 == summary["decision_log_sha256"],
        "ledger_reconciles": result.ledger_reconciles,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
