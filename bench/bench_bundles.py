"""Shipped bundle benchmark (issue 14): install time, bundle load time, first prediction latency from a cold start.

Uses the committed bundle ``bundles/sim_v1/1.0.0`` (170 files, about 3.5 MB):

- install: ``BundleStore.install`` into a fresh home (verify the source, copy into staging, verify the copy,
  rename into the store, switch ``state.json``, smoke check), 5 times;
- load: ``BundleStore.active`` of an installed bundle (every file hashed again, the model texts read and
  checked), 10 times in a warm process;
- cold start: a new Python process that imports the bundle code, loads the active bundle and predicts its
  smoke sample (the first prediction parses the boosters and loads numba's compiled kernel from its cache),
  then predicts again; 3 processes.

Prints JSON with the machine's load average.

    .venv/bin/python bench/bench_bundles.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.bundles.compat import SHIPPED_DIR, running
from backend.bundles.store import BundleStore

BUNDLE = SHIPPED_DIR / "sim_v1" / "1.0.0"
COLD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
import polars as pl
from backend.bundles.compat import running
from backend.bundles.store import BundleStore
from backend.models.train import predict_bundle
t1 = time.perf_counter()
active = BundleStore(Path(sys.argv[1])).active(running())
t2 = time.perf_counter()
sample = pl.read_parquet(active.path / active.manifest.smoke.sample)
clusters = dict(active.manifest.compat.clusters)
predict_bundle(active.model, sample, clusters, 1, forward=True)
t3 = time.perf_counter()
predict_bundle(active.model, sample, clusters, 1, forward=True)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "second_predict_s": t4 - t3, "rows": sample.height}))
"""


def main() -> None:
    runtime = running()
    work = Path(tempfile.mkdtemp(prefix="acts-bench-bundles-"))
    installs = []
    for i in range(5):
        store = BundleStore(work / f"home{i}" / "bundles")
        started = time.perf_counter()
        store.install(BUNDLE, "bench", "install benchmark", 1, runtime)
        installs.append(time.perf_counter() - started)
    loads = []
    for _ in range(10):
        started = time.perf_counter()
        store.active(runtime)
        loads.append(time.perf_counter() - started)
    colds = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD, str(store.root)], capture_output=True, text=True, check=True)
        colds.append({**json.loads(done.stdout), "process_s": time.perf_counter() - started})
    manifest = json.loads((BUNDLE / "bundle.json").read_text())
    print(json.dumps({
        "bundle": "sim_v1/1.0.0",
        "files": len(manifest["files"]) + 1,
        "bytes": sum(f["bytes"] for f in manifest["files"].values()) + (BUNDLE / "bundle.json").stat().st_size,
        "install_s": {"p50": statistics.median(installs), "max": max(installs), "runs": installs},
        "load_s": {"p50": statistics.median(loads), "max": max(loads)},
        "cold_start": {k: statistics.median(c[k] for c in colds) for k in colds[0]},
        "load_average": os.getloadavg(),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
