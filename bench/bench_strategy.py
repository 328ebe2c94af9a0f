"""Benchmark: the campaign graph plus the gate chain (issue 5).

1. Event loop: campaign_v1 under the balanced profile over 30 symbols x 365 days of 5-minute bars
   (3,153,600 bar events) with constructed model outputs; events per second of ``Engine.on_batch``.
   A stress figure: the constructed edge persists for long stretches on many symbols at once, so the
   concurrency gate denies (and logs) an entry for most symbols on most bars, about 25 times the
   decisions per event of the model-driven run.
2. End to end (``--end-to-end``): ``acts backtest run=bench strategy=campaign_v1`` in a child process;
   its summary's ``events_per_second`` (features + predictions + event loop + decision log).
3. Live decision: a new bar for one symbol -> transitions -> gates -> order intent, on the live path
   (no precomputed guards); latency percentiles over many single-symbol batches that each produce
   an intent, after a warm-up.

Prints the figures as JSON. Sized for a 2-core machine: the event loop part takes about a minute.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.clock import SimulatedClock  # noqa: E402
from backend.config.compose import compose_spec  # noqa: E402
from backend.engine.core import Engine, Stamp  # noqa: E402
from backend.engine.economics import EdgeBasis  # noqa: E402
from backend.runs.runner import round_trip_cost  # noqa: E402
from backend.engine.events import BarBatch, MarketMatrix  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402

T0 = 1_704_067_200_000
STEP = 300_000


def _engine(overrides: list[str]) -> Engine:
    spec = compose_spec(["strategy=campaign_v1", *overrides])
    pipeline = compile_pipeline(spec)
    return Engine(
        spec.symbols, spec.universe.clusters, {a.symbol: a.ordermin for a in spec.universe.assets}, pipeline.graph,
        spec.risk, spec.execution, Stamp(pipeline.spec_hash, pipeline.profile_version, "bench"), SimulatedClock(T0),
        EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, round_trip_cost(spec)),
    )  # fmt: skip


def _market(symbols: tuple[str, ...], bars: int, seed: int = 11) -> MarketMatrix:
    rng = np.random.default_rng(seed)
    shape = (bars, len(symbols))
    vol = np.where(rng.random(shape).cumsum(axis=0) % 400 < 120, 0.012, 0.004)
    log_ret = vol * rng.standard_normal(shape)
    jumps = np.where(rng.random(shape) < 0.0015, rng.uniform(-0.16, -0.10, shape), 0.0)
    # Log prices revert slowly toward 0 (price 100), so a year of crashes does not drive prices to nothing.
    # Model noise is persistent, as real predictions built from rolling features are.
    level, noise = np.empty(shape), np.empty(shape)
    x, e = np.zeros(len(symbols)), np.zeros(len(symbols))
    shocks = rng.normal(0.0, 0.14, shape)
    for t in range(bars):
        x = 0.998 * x + log_ret[t] + jumps[t]
        e = 0.99 * e + shocks[t]
        level[t], noise[t] = x, e
    close = 100.0 * np.exp(level)
    seen = np.cumsum(log_ret, axis=0)
    future = np.zeros(shape)
    future[:-24] = seen[24:] - seen[:-24]
    z = future / (vol * np.sqrt(24.0))
    return MarketMatrix(
        T0 + STEP * np.arange(bars, dtype=np.int64), symbols, np.vstack([close[:1], close[:-1]]), close,
        np.ones(shape, dtype=bool),
        {
            # A weak edge (as real models have): strong enough to trade, not to compound without bound.
            "p_up": 1.0 / (1.0 + np.exp(-0.6 * (0.25 * z + noise))),
            "expected_return": 0.02 * future + 0.01 * noise,
            "p_recovery": np.clip(0.5 + 0.4 * z + rng.normal(0.0, 0.15, shape), 0.0, 1.0),
        },
        {},
    )  # fmt: skip


def event_loop(days: int = 365) -> dict[str, object]:
    engine = _engine([])
    matrix = _market(engine.symbols, days * 288)
    started = time.perf_counter()
    for batch in matrix.batches():
        engine.on_batch(batch)
    loop = time.perf_counter() - started
    frame = engine.log.frame()
    events = int(matrix.has_bar.sum())
    counts = frame.group_by("action").len().sort("action").rows()
    return {
        "symbols": len(engine.symbols),
        "events": events,
        "event_loop_seconds": round(loop, 3),
        "event_loop_events_per_second": round(events / loop, 1),
        "decisions": frame.height,
        "decisions_by_action": dict(counts),
        "recovery_decisions": int(frame.filter(frame["reason"].str.starts_with("RECOVERY")).height),
        "orders": engine.state.orders,
    }


def live_decision(samples: int = 5_000) -> dict[str, object]:
    """Latency of one new bar for one symbol that fires a transition and produces an order intent.

    The engine is warmed on a neutral market (marks set, nothing held); then ETH alternates a clear
    entry edge and a clear exit edge, so every bar fills the previous order, evaluates the graph,
    runs the gates and submits a new order. Wall and thread-CPU percentiles are both reported: on a
    shared machine the wall figure includes time the process waited for a core.
    """
    engine = _engine([])
    n = len(engine.symbols)
    j = engine.symbols.index("ETH")
    warm = _market(engine.symbols, 300)
    neutral = {"p_up": np.full(warm.has_bar.shape, 0.5), "expected_return": np.zeros(warm.has_bar.shape)}
    warm = MarketMatrix(warm.ts_ms, warm.symbols, warm.open, warm.close, warm.has_bar, neutral, {})
    for batch in warm.batches():
        engine.on_batch(batch)
    closes = warm.close[-1].copy()
    has_bar = np.zeros(n, dtype=bool)
    has_bar[j] = True
    walls, cpus = [], []
    ts = int(warm.ts_ms[-1])
    edges = [{"p_up": 0.9, "expected_return": 0.05}, {"p_up": 0.05, "expected_return": -0.05}]
    decisions_before, orders_before = len(engine.log), engine.state.orders
    for k in range(samples):
        ts += STEP
        pred = {name: np.full(n, value) for name, value in edges[k % 2].items()} | {"p_recovery": np.full(n, 0.5)}
        batch = BarBatch(k, ts, closes, closes, has_bar, pred, {})
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        engine.on_batch(batch)
        cpus.append(time.thread_time_ns() - cpu)
        walls.append(time.perf_counter_ns() - wall)
    wall_us, cpu_us = np.array(walls) / 1_000.0, np.array(cpus) / 1_000.0
    return {
        "samples": samples,
        "transitions": len(engine.log) - decisions_before,
        "orders_submitted": engine.state.orders - orders_before,
        "wall_p50_us": round(float(np.percentile(wall_us, 50)), 1),
        "wall_p99_us": round(float(np.percentile(wall_us, 99)), 1),
        "cpu_p50_us": round(float(np.percentile(cpu_us, 50)), 1),
        "cpu_p99_us": round(float(np.percentile(cpu_us, 99)), 1),
    }


def end_to_end() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="acts-bench-strategy-") as tmp:
        env = dict(os.environ, ACTS_HOME=str(Path(tmp) / "home"))
        run_dir = Path(tmp) / "run"
        subprocess.run(
            [str(REPO / ".venv/bin/acts"), "backtest", "run=bench", "strategy=campaign_v1", f"hydra.run.dir={run_dir}"],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        summary = json.loads((run_dir / "summary.json").read_text())
    return {k: summary[k] for k in ("events", "decisions", "orders", "fills", "events_per_second", "timings", "spine_seconds")}


def main() -> dict[str, object]:
    result: dict[str, object] = {
        "benchmark": "campaign_v1 + gate chain (30 symbols x 365 days x 5m)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "event_loop": event_loop(),
        "live_decision": live_decision(),
    }
    if "--end-to-end" in sys.argv[1:]:
        result["end_to_end"] = end_to_end()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
