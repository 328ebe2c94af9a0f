"""Training benchmark (issue 4): walk-forward training of 30 specialists + the global model, serial vs Ray.

Targets: 12 folds over 1 year of 5-minute bars for 30 symbols in under 15 minutes and 6 GiB peak
memory; Ray on 2 CPUs at least 1.7 x faster than serial; batch prediction at least 1 million rows/s.

Simulates the bars and builds features and labels (timed separately), then trains the same spec
serially and through a local Ray (2 CPUs, one LightGBM thread per task in both runs), checks that
both give byte-identical model texts, and times one ``predict_bundle`` pass over every out-of-sample row.
Peak memory is sampled from /proc over this process and every Ray process. Prints JSON.

    .venv/bin/python bench/bench_training.py                 # the issue's size: 365 days, 12 folds
    .venv/bin/python bench/bench_training.py --days 60 --folds 3   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from backend.config.compose import compose_spec
from backend.data.simulator import simulate_ohlcv
from backend.models.train import predict_bundle, train_walk_forward
from backend.runs.runner import training_dataset

BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _ray_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if (b"ray::" in cmdline or b"raylet" in cmdline or b"gcs_server" in cmdline or b"default_worker" in cmdline) and str(os.getuid()):
            pids.append(int(entry))
    return pids


class PeakMemory:
    """Samples the resident memory of this process (and, when asked, of every Ray process) every 0.2 s."""

    def __init__(self, with_ray: bool) -> None:
        self.with_ray = with_ray
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = _rss_bytes(os.getpid())
            if self.with_ray:
                total += sum(_rss_bytes(pid) for pid in _ray_pids())
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(days: int, folds: int, min_train_days: int) -> dict[str, object]:
    spec = compose_spec(
        [
            "run=bench",
            f"data.days={days}",
            f"training.walk_forward.n_folds={folds}",
            f"training.walk_forward.min_train_bars={min_train_days * 288}",
            "training.num_threads=1",
        ]
    )
    results: dict[str, object] = {"days": days, "folds": folds, "symbols": len(spec.symbols), "min_train_days": min_train_days}
    n_bars = spec.data.days * 86_400_000 // spec.data.bar_ms
    started = time.perf_counter()
    bars = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, n_bars, spec.seed).select(BAR_COLUMNS)
    results["rows"] = bars.height
    results["simulate_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    dataset = training_dataset(spec, bars)
    results["features_and_labels_seconds"] = round(time.perf_counter() - started, 2)
    feature_names = tuple(f.name for f in spec.features.features)
    results["features"] = len(feature_names)

    def train(training):  # type: ignore[no-untyped-def]
        return train_walk_forward(
            dataset, feature_names, spec.universe.clusters, spec.model, training, spec.seed, {}, lambda _m: None, Path(tempfile.gettempdir()) / f"acts-ray-bench-{os.getuid()}"
        )

    with PeakMemory(with_ray=False) as memory:
        started = time.perf_counter()
        serial = train(spec.training)
        results["serial_train_seconds"] = round(time.perf_counter() - started, 2)
    results["serial_peak_rss_gib"] = round(memory.peak / 2**30, 3)
    results["models"] = len(serial.models)
    results["tasks"] = len({(m.fold, m.scope) for m in serial.models})

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from backend.models.parallel import ensure_ray

    ray_spec = spec.training.ray.model_copy(update={"enabled": True, "num_cpus": 2})
    started = time.perf_counter()
    ensure_ray(ray_spec, Path(tempfile.gettempdir()) / f"acts-ray-bench-{os.getuid()}")
    results["ray_start_seconds"] = round(time.perf_counter() - started, 2)
    with PeakMemory(with_ray=True) as memory:
        started = time.perf_counter()
        parallel = train(spec.training.model_copy(update={"ray": ray_spec}))
        results["ray_train_seconds"] = round(time.perf_counter() - started, 2)
    results["ray_peak_rss_gib"] = round(memory.peak / 2**30, 3)
    ray.shutdown()
    results["ray_speedup"] = round(float(results["serial_train_seconds"]) / float(results["ray_train_seconds"]), 2)
    results["ray_identical_models"] = [m.text for m in parallel.models] == [m.text for m in serial.models]

    started = time.perf_counter()
    predictions = predict_bundle(serial, dataset, spec.universe.clusters, 2)
    elapsed = time.perf_counter() - started
    results["predicted_rows"] = predictions.height
    results["predict_seconds"] = round(elapsed, 3)
    results["predict_rows_per_second"] = round(predictions.height / elapsed)
    # Each row is scored by up to six boosters (global and specialist, three targets).
    results["booster_rows_per_second"] = round(predictions.height * 6 / elapsed)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--folds", type=int, default=12)
    parser.add_argument("--min-train-days", type=int, default=60)
    args = parser.parse_args()
    main(args.days, args.folds, args.min_train_days)
