"""Scale-out benchmark (issue 15, part 3): training serial vs local Ray vs a two-node cluster; a sweep vs backtests.

``training``: walk-forward training of the ``run=bench`` universe (30 symbols) on a modest window,
serially, on a local Ray of 2 CPUs, and on a two-node cluster started with ``ray start`` (a head
and a worker, one CPU each, as tests/ray_cluster.py starts them), checking that all three give
byte-identical model texts.

``sweep``: 16 variants (4 entry thresholds x 4 position sizes of the aggressive profile) as one
``acts sweep`` (bars, model, features and predictions once; 16 engine loops as Ray tasks on a local
Ray of 2 CPUs, and in this process), against 16 sequential ``acts backtest`` runs of the same
variants (each loads, trains, predicts and loops), checking that every decision log matches.

The machine is shared with other agents: ``uptime``'s load is printed with every figure. Prints JSON.

    .venv/bin/python bench/bench_scaleout.py training [--days 120 --folds 4]
    .venv/bin/python bench/bench_scaleout.py sweep [--days 30 --symbols 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the cluster helper the tests use

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray_cluster import start_cluster  # noqa: E402

from backend.config.compose import compose_spec  # noqa: E402
from backend.data.simulator import simulate_ohlcv  # noqa: E402
from backend.models.parallel import ensure_ray  # noqa: E402
from backend.models.train import train_walk_forward  # noqa: E402
from backend.runs.runner import training_dataset  # noqa: E402

BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


def load() -> str:
    """The load averages (1, 5, 15 min), as ``uptime`` shows them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def training(days: int, folds: int) -> dict[str, object]:
    import ray

    spec = compose_spec(
        ["run=bench", f"data.days={days}", f"training.walk_forward.n_folds={folds}", "training.walk_forward.min_train_bars=8640", "training.num_threads=1"]
    )
    bars = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, days * 288, spec.seed).select(BAR_COLUMNS)
    dataset = training_dataset(spec, bars)
    names = tuple(f.name for f in spec.features.features)
    temp = Path(tempfile.mkdtemp(prefix="acts-bench-ray-"))
    result: dict[str, object] = {"symbols": len(spec.symbols), "days": days, "folds": folds, "rows": bars.height}

    def train(ray_spec):  # type: ignore[no-untyped-def]
        training_spec = spec.training.model_copy(update={"ray": ray_spec})
        started = time.perf_counter()
        bundle = train_walk_forward(dataset, names, spec.universe.clusters, spec.model, training_spec, spec.seed, {}, lambda _m: None, temp)
        return bundle, round(time.perf_counter() - started, 2)

    serial, result["serial_seconds"] = train(spec.training.ray.model_copy(update={"enabled": False}))
    result["serial_load"] = load()
    result["tasks"] = len({(m.fold, m.scope) for m in serial.models})
    local_spec = spec.training.ray.model_copy(update={"enabled": True, "num_cpus": 2})
    started = time.perf_counter()
    ensure_ray(local_spec, temp)
    result["local_ray_start_seconds"] = round(time.perf_counter() - started, 2)
    local, result["local_ray_seconds"] = train(local_spec)
    result["local_ray_load"] = load()
    ray.shutdown()
    started = time.perf_counter()
    cluster = start_cluster(workers=1)
    try:
        result["cluster_start_seconds"] = round(time.perf_counter() - started, 2)
        cluster_spec = spec.training.ray.model_copy(update={"enabled": True, "address": cluster.address})
        started = time.perf_counter()
        ensure_ray(cluster_spec, temp)
        result["cluster_connect_seconds"] = round(time.perf_counter() - started, 2)
        remote, result["cluster_seconds"] = train(cluster_spec)
        result["cluster_load"] = load()
        ray.shutdown()
    finally:
        cluster.stop()
    texts = [m.text for m in serial.models]
    result["identical_models"] = [m.text for m in local.models] == texts and [m.text for m in remote.models] == texts
    result["local_ray_speedup"] = round(float(result["serial_seconds"]) / float(result["local_ray_seconds"]), 2)
    result["cluster_speedup"] = round(float(result["serial_seconds"]) / float(result["cluster_seconds"]), 2)
    return result


def sweep(days: int, symbols: int) -> dict[str, object]:
    import ray

    from backend.clock import WallClock
    from backend.engine.pipeline import compile_pipeline
    from backend.home import Home
    from backend.runs.backtest import run_backtest
    from backend.runs.sweep import run_sweep

    everything = compose_spec().symbols
    universe = ["BTC", *(s for s in everything if s != "BTC")][:symbols]  # the features read BTC's returns
    base = [f"data.days={days}", f"data.symbols=[{','.join(universe)}]", "training.walk_forward.n_folds=2", "training.walk_forward.min_train_bars=2880", "training.num_threads=2", "risk=aggressive"]
    swept = ["risk.entry_min_p_up=choice(0.5,0.52,0.54,0.56)", "risk.position_size_pct=choice(0.05,0.1,0.15,0.2)"]
    root = Path(tempfile.mkdtemp(prefix="acts-bench-sweep-"))
    home = Home(root / "home")
    os.environ["ACTS_HOME"] = str(home.root)
    quiet = lambda _m: None  # noqa: E731
    result: dict[str, object] = {"variants": 16, "symbols": symbols, "days": days}

    from backend.runs.variants import expand_variants

    variants = expand_variants([*base, *swept], 16)
    run_backtest(compile_pipeline(compose_spec(base)), home, root / "warm", WallClock(), quiet)  # the lake holds the bars for every run below
    started = time.perf_counter()
    sequential = [run_backtest(compile_pipeline(compose_spec(list(v.overrides))), home, root / "seq" / v.folder, WallClock(), quiet) for v in variants]
    result["sequential_backtests_seconds"] = round(time.perf_counter() - started, 2)
    result["sequential_load"] = load()
    started = time.perf_counter()
    serial = run_sweep([*base, *swept, "sweep.ray.enabled=false", f"sweep.out={root / 'serial'}"], home, WallClock(), quiet)
    result["sweep_in_process_seconds"] = round(time.perf_counter() - started, 2)
    result["sweep_in_process_load"] = load()
    started = time.perf_counter()
    on_ray = run_sweep([*base, *swept, "sweep.ray.num_cpus=2", f"sweep.out={root / 'ray'}"], home, WallClock(), quiet)
    result["sweep_local_ray_seconds_including_ray_start"] = round(time.perf_counter() - started, 2)
    result["sweep_local_ray_load"] = load()
    ray.shutdown()
    digests = [s["decision_log_sha256"] for s in sequential]
    result["identical_decision_logs"] = serial.table["decision_log_sha256"].to_list() == digests == on_ray.table["decision_log_sha256"].to_list()
    result["speedup_in_process"] = round(float(result["sequential_backtests_seconds"]) / float(result["sweep_in_process_seconds"]), 2)
    result["speedup_local_ray"] = round(float(result["sequential_backtests_seconds"]) / float(result["sweep_local_ray_seconds_including_ray_start"]), 2)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("training", "sweep"))
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()
    if args.part == "training":
        figures = training(args.days or 120, args.folds)
    else:
        figures = sweep(args.days or 30, args.symbols)
    print(json.dumps(figures, indent=1))
