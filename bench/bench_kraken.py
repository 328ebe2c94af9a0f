"""Benchmark: feed-to-decision latency on the Kraken feed (30 symbols), and incremental features vs batch.

Records a 30-symbol backtest (default universe, 14 days of 5-minute bars, small walk-forward, as
``bench_paper.py``), then serves its bars from the Kraken emulator one bar per poll and runs a paper
session on the Kraken feed (``kraken_feed`` + ``PaperRuntime``, the code of ``acts run --source kraken``).
For every bar it measures, from the poll that closes it to the event's journal commit:

* the exchange: time inside ccxt's HTTP calls to the emulator (30 OHLC requests a poll, local sockets);
* answers to bars ready: from the last HTTP answer in hand to the end of the poll (the poll's raw
  bodies kept in one synced transaction, pages parsed and validated, pending pages recorded, the
  ready-time rule);
* ready to decision: incremental features of the new bar, prediction, engine decisions and gates,
  simulated fills, and the event's journal transaction (synchronous=FULL);
* feed-to-decision excluding the exchange: from the last HTTP answer in hand to the event's journal
  commit (goal p99 < 50 ms), in wall time and in CPU time of the process (comparable under load);
* after the decision: the poll's settlement (reconciliation evidence, lake, cursors), not on the path.

Then it times :class:`IncrementalFeatures.update` per bar against a batch recompute
(``build_features`` over the history so far) on the same bars. Prints JSON.
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
import polars as pl  # noqa: E402

from backend.clock import WallClock  # noqa: E402
from backend.config.compose import compose_spec  # noqa: E402
from backend.config.schema import TIMEFRAME_MS  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402
from backend.features.build import build_features  # noqa: E402
from backend.features.incremental import IncrementalFeatures  # noqa: E402
from backend.home import Home  # noqa: E402
from backend.kraken.settings import KrakenSettings  # noqa: E402
from backend.models.registry import ModelRegistry  # noqa: E402
from backend.runs.backtest import run_backtest  # noqa: E402
from backend.runtime.live import kraken_feed  # noqa: E402
from backend.runtime.paper import PaperRuntime, load_run_model  # noqa: E402
from backend.sandbox.kraken import KrakenEmulator  # noqa: E402

OVERRIDES = [
    "name=bench-kraken",
    "data.days=14",
    "training.walk_forward.n_folds=2",
    "training.walk_forward.min_train_bars=1440",
    "training.walk_forward.purge_bars=48",
    "training.walk_forward.embargo_bars=6",
    "training.label.horizon_bars=48",
    "training.max_train_rows=40000",
    "training.num_threads=1",
]
START_BAR = 2600  # the session starts here (720 bars of warm-up served before it)
POLLS = int(os.environ.get("ACTS_BENCH_KRAKEN_POLLS", "200"))
FEATURE_BARS = 40


class BarClock:
    """The emulator's and the session's now, moved one bar per poll by the feed's sleep."""

    def __init__(self, now_ms: int, bar_ms: int) -> None:
        self.now, self.bar_ms = now_ms, bar_ms

    def __call__(self) -> int:
        return self.now

    def now_ms(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += self.bar_ms


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000.0
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
            "max": round(float(ms.max()), 2)}  # fmt: skip


def feed_latency(root: Path) -> dict[str, object]:
    spec = compose_spec([*OVERRIDES, *sys.argv[1:]])
    run_backtest(compile_pipeline(spec), Home(root / "home"), root / "run", WallClock(), lambda _m: None)
    pipeline, bundle = load_run_model(root / "run", ModelRegistry(root / "registry"), allow_run_bundle=True)
    bars = pl.read_parquet(root / "run" / "inputs.parquet")
    bar_ms = TIMEFRAME_MS[pipeline.spec.data.timeframe]
    first = int(bars["ts"].min())
    clock = BarClock(first + START_BAR * bar_ms + 1, bar_ms)
    settings = KrakenSettings(base_url="http://127.0.0.1:1", rate_limit=False, poll_seconds=0.01)
    with KrakenEmulator(bars, pipeline.spec.data.timeframe, universe=pipeline.spec.universe, now_ms=clock) as emu:
        settings = settings.model_copy(update={"base_url": emu.base_url})
        source, close = kraken_feed(pipeline, bundle, root / "live_home", settings, clock, first, sleep=clock.sleep,
                                    max_polls=POLLS)  # fmt: skip
        client = source.feed.ingestor.provider.fetcher.client  # type: ignore[attr-defined]
        http = [0.0, 0.0, 0.0]  # seconds inside ccxt's HTTP calls this poll; wall and CPU time at the last answer
        fetch = client.fetch

        def timed_fetch(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return fetch(*args, **kwargs)
            finally:
                http[0] += time.perf_counter() - started
                http[1], http[2] = time.perf_counter(), time.process_time()

        client.fetch = timed_fetch
        # (answers in hand: wall, CPU; poll end: wall, CPU; seconds inside HTTP)
        polls: list[tuple[float, float, float, float, float]] = []
        poll = source.feed.poll

        def timed_poll():  # type: ignore[no-untyped-def]
            http[:] = [0.0, 0.0, 0.0]
            found = poll()
            polls.append((http[1], http[2], time.perf_counter(), time.process_time(), http[0]))
            return found

        source.feed.poll = timed_poll  # type: ignore[method-assign]
        settles: list[float] = []
        settle = source.feed.settle

        def timed_settle() -> None:
            if not source.feed._received:  # nothing handed on since the last settlement
                return settle()
            started = time.perf_counter()
            settle()
            settles.append(time.perf_counter() - started)
            return None

        source.feed.settle = timed_settle  # type: ignore[method-assign]
        runtime = PaperRuntime(source, root / "state")
        commits: list[tuple[float, float, int]] = []  # (commit end: wall, CPU; polls so far)
        step = runtime.step

        def timed_step(batch):  # type: ignore[no-untyped-def]
            equity = step(batch)
            commits.append((time.perf_counter(), time.process_time(), len(polls)))
            return equity

        runtime.step = timed_step  # type: ignore[method-assign]
        try:
            runtime.run(0.0)
            result = runtime.result(len(commits))
        finally:
            runtime.close()
            close()
    answers_to_ready, ready_to_decision, exchange, total, total_cpu = [], [], [], [], []
    for ended, ended_cpu, index in commits:
        answered, answered_cpu, poll_end, _, http_seconds = polls[index - 1]
        answers_to_ready.append(poll_end - answered)
        ready_to_decision.append(ended - poll_end)
        exchange.append(http_seconds)
        total.append(ended - answered)
        total_cpu.append(ended_cpu - answered_cpu)
    return {
        "symbols": len(pipeline.spec.symbols),
        "polls": len(polls),
        "bars_decided": len(commits),
        "decisions": result.decisions,
        "orders": result.orders,
        "ledger_reconciles": result.ledger_reconciles,
        "exchange_http_ms": _stats(exchange),
        "answers_to_bars_ready_ms": _stats(answers_to_ready),
        "ready_to_decision_journaled_ms": _stats(ready_to_decision),
        "feed_to_decision_excluding_exchange_ms": _stats(total),
        "feed_to_decision_excluding_exchange_cpu_ms": _stats(total_cpu),
        "after_decision_settle_ms": _stats(settles),
        "features_and_prediction_ms": _stats([s for _, s in source.timings]),
        "target_p99_ms": 50,
        "bars": bars,
        "spec": pipeline.spec,
    }


def feature_cost(bars: pl.DataFrame, spec) -> dict[str, object]:  # type: ignore[no-untyped-def]
    clusters = spec.universe.clusters
    times = bars["ts"].unique().sort()
    cut = int(times[-FEATURE_BARS - 1])
    incremental = IncrementalFeatures(spec.features, clusters)
    incremental.seed(bars.filter(pl.col("ts") <= cut))
    inc, batch, worst = [], [], 0.0
    for ts in times[-FEATURE_BARS:]:
        part = bars.filter(pl.col("ts") == ts)
        started = time.perf_counter()
        rows = incremental.update(part)
        inc.append(time.perf_counter() - started)
        started = time.perf_counter()
        full = build_features(bars.filter(pl.col("ts") <= ts), spec.features, clusters).filter(pl.col("ts") == ts).sort("symbol")
        batch.append(time.perf_counter() - started)
        names = [c for c in rows.columns if rows[c].dtype.is_float()]
        worst = max(worst, max(float((rows[c] - full[c]).abs().fill_nan(0.0).max() or 0.0) for c in names))
    return {"history_bars": times.len(), "kept_bars": incremental.history_bars, "bars_timed": FEATURE_BARS,
            "incremental_ms": _stats(inc), "batch_recompute_ms": _stats(batch),
            "speedup_p50": round(float(np.median(batch) / np.median(inc)), 1), "max_abs_difference": worst}  # fmt: skip


def main() -> dict[str, object]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="acts-bench-kraken-") as tmp:
        latency = feed_latency(Path(tmp))
    bars, spec = latency.pop("bars"), latency.pop("spec")
    features = feature_cost(bars, spec)  # type: ignore[arg-type]
    out = {
        "benchmark": "Kraken feed (emulator) to journaled decision, 30 symbols; incremental features vs batch",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "feed": latency,
        "features": features,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
