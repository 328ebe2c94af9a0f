"""Tune the cost margins of the risk presets on the TUNING segment only (issue 11, ADR-029).

Usage: .venv/bin/python bench/tune_margins.py RUN_DIR [--out FILE]

RUN_DIR is a finished `acts backtest run=real` folder: its recorded bars and bundle give the market matrix
once; every candidate profile then runs a fresh engine over the tuning segment (out-of-sample rows before the
final 20 % of the history's timestamps). The holdout segment is never run here: its rows are cut off before
any engine sees them. Each candidate is a shipped preset with its two margins replaced; the table is printed
and written as JSON. Which values were chosen, and why, is recorded by hand in docs/model_quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from backend.config.compose import compose_spec, validate_raw  # noqa: E402
from backend.runs.evaluation import RecordedRun, baseline_figures, rows_of, segments, strategy_figures, with_profile  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402
from backend.engine.economics import calibrate_edge  # noqa: E402
from backend.runs.runner import edge_basis, market_matrix, realised_matrix  # noqa: E402
from backend.models.bundle import load_bundle  # noqa: E402

PRESETS = ("conservative", "balanced", "aggressive")
ENTRY_MARGINS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)
EXIT_MARGINS = (0.0, 0.005, 0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tune_margins.json"))
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--entry", nargs="+", type=float, default=ENTRY_MARGINS, help="entry_edge_margin values to try")
    parser.add_argument("--exit", nargs="+", type=float, default=EXIT_MARGINS, help="exit_edge_margin values to try")
    args = parser.parse_args()
    started = time.monotonic()
    raw = json.loads((args.run_dir / "spec.json").read_text(encoding="utf-8"))
    # A run recorded before the margins existed: give it the current balanced preset so it validates.
    raw["risk"] = compose_spec(["risk=balanced"]).risk.model_dump(mode="json")
    spec = validate_raw(raw)
    bundle = load_bundle(args.run_dir / "model")
    pipeline = compile_pipeline(spec)
    bars = pl.read_parquet(args.run_dir / "inputs.parquet")
    matrix = market_matrix(pipeline, bars, bundle, spec.training.num_threads)
    run = RecordedRun(args.run_dir, raw, pipeline, matrix, edge_basis(spec, bundle), bundle.version)
    realised = realised_matrix(spec, bars, matrix.ts_ms, matrix.symbols, run.edge.label_cost)
    _, lines = calibrate_edge(matrix.pred["expected_return"], realised, matrix.pred["fold"], matrix.ts_ms, run.edge.horizon_ms)
    for line in lines:
        print("calibration", line, flush=True)
    tuning = next(s for s in segments(matrix, 0.2) if s.name == "tuning")
    rows = rows_of(matrix, tuning)
    print(f"tuning rows {tuning.first}..{tuning.stop} of {len(matrix.ts_ms)}; load {os.getloadavg()}", flush=True)
    results = {"calibration": [line.__dict__ for line in lines], "segment": {"first_ts": int(rows.ts_ms[0]), "last_ts": int(rows.ts_ms[-1])}, "baselines": baseline_figures(pipeline, rows), "candidates": []}
    for name, figures in results["baselines"].items():
        print(name, figures, flush=True)
    for preset in args.presets:
        base = compose_spec([f"risk={preset}"]).risk
        for entry in args.entry:
            for exit_ in args.exit:
                profile = base.model_copy(update={"entry_edge_margin": entry, "exit_edge_margin": exit_})
                figures = strategy_figures(with_profile(run, profile), rows, run.edge, run.model_version)
                row = {"preset": preset, "entry_edge_margin": entry, "exit_edge_margin": exit_, **figures}
                results["candidates"].append(row)
                print(json.dumps(row), flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
