"""Console benchmark: first render of the Decisions page on a 3-million-row decision log, and one filter change.

The log is generated with the decision log's own schema (``backend.audit.decisions.DECISION_SCHEMA``):
30 symbols, the strategy's decision kinds and reason codes, eight gate outcomes and the guard inputs
as JSON on every row, as the engine writes them, in parquet row groups of ``ROW_GROUP_ROWS`` (zstd), as ``write_decisions`` does. The page
runs through Streamlit's AppTest, the same script a browser session runs on the server; the times are
the server's (the browser then draws 50 rows). Run: ``.venv/bin/python bench/bench_console.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from backend.audit.decisions import DECISION_SCHEMA, ROW_GROUP_ROWS

ROWS = 3_000_000
CHUNK = 250_000
SYMBOLS = tuple(f"S{i:02d}" for i in range(30))
KINDS = ("hold", "enter", "exit", "scale_out", "reenter")
REASONS = {
    "hold": ("HOLD_FLAT_NO_EDGE", "HOLD_EDGE_PERSISTS", "HOLD_PARTIAL_AWAITING_EDGE"),
    "enter": ("ENTRY_PREDICTED_EDGE",), "exit": ("EXIT_EDGE_TURNED", "EXIT_SEVERE_LOSS"),
    "scale_out": ("SCALE_OUT_EDGE_WEAKENED",), "reenter": ("REENTRY_EDGE_STRENGTHENED",),
}  # fmt: skip
GATES = ("kill_switch", "profile_valid", "drawdown", "capital", "concurrency", "total_exposure", "cluster_exposure", "minimums")
PARAMS = json.dumps({"entry_min_p_up": 0.55, "exit_max_p_up": 0.45, "max_concurrent_positions": 8.0, "position_size_pct": 0.1},
                    sort_keys=True, separators=(",", ":"))  # fmt: skip


def _chunk(start: int, n: int, rng: np.random.Generator) -> pl.DataFrame:
    kinds = rng.choice(len(KINDS), size=n, p=[0.9, 0.03, 0.03, 0.02, 0.02])
    kind = np.array(KINDS)[kinds]
    reason = np.array([REASONS[k][rng.integers(len(REASONS[k]))] for k in KINDS])[kinds]
    p_up = rng.uniform(0.3, 0.7, n).round(6)
    er = rng.normal(0, 0.003, n).round(6)
    value = rng.uniform(0, 100_000, n).round(2)
    frame = pl.DataFrame({"seq": np.arange(start, start + n), "p_up": p_up, "expected_return": er, "v": value, "kind": kind,
                          "reason": reason, "symbol": np.array(SYMBOLS)[rng.integers(0, 30, n)]})  # fmt: skip
    value_text = pl.col("v").cast(pl.String)
    parts: list[pl.Expr] = [pl.lit("[")]
    for i, gate in enumerate(GATES):
        parts += [pl.lit('{"bound":100000.0,"gate":"' + gate + '","passed":true,"reason":"PASSED","value":'), value_text,
                  pl.lit("}" + ("," if i < len(GATES) - 1 else "]"))]  # fmt: skip
    gates = pl.concat_str(parts)
    inputs = pl.concat_str([pl.lit('{"pred.expected_return":'), pl.col("expected_return").cast(pl.String), pl.lit(',"pred.p_up":'),
                            pl.col("p_up").cast(pl.String), pl.lit(',"profile.entry_min_p_up":0.55}')])  # fmt: skip
    traded = pl.col("kind") != "hold"
    return frame.select(
        pl.col("seq").cast(pl.Int64), (pl.lit(1_735_689_600_000) + pl.col("seq") // 30 * 300_000).alias("ts"), "symbol",
        pl.when(traded).then(pl.col("kind") + pl.lit("_on_edge")).otherwise(pl.lit("")).alias("transition"),
        pl.col("kind").alias("action"), pl.lit("FLAT").alias("state_from"), pl.lit("HOLDING").alias("state_to"), "reason",
        pl.lit(True).alias("admitted"), pl.when(traded).then(pl.lit("PASSED")).otherwise(pl.lit("NO_ORDER")).alias("gate_reason"),
        gates.alias("gates"), "p_up", "expected_return", inputs.alias("inputs"), pl.col("v").alias("qty"), pl.lit(1.0).alias("ref_price"),
        pl.lit(100_000.0).alias("equity"), pl.when(traded).then(pl.format("o{}", pl.col("seq"))).alias("order_id"),
        pl.lit("c1").alias("campaign_id"), pl.lit("balanced@v1#93bd6a624425").alias("profile_version"), pl.lit(PARAMS).alias("profile_params"),
        pl.lit("lgbm_blend_v1@0e3c2c37d323db78").alias("model_version"), pl.lit("ab" * 32).alias("spec_hash"),
    ).cast(DECISION_SCHEMA)  # fmt: skip


def write_log(run_dir: Path, rows: int, seed: int = 12) -> Path:
    """Write a ``rows``-row decision log and a minimal summary into ``run_dir``; return the log's path."""
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"run": "bench-console", "mode": "backtest"}), encoding="utf-8")
    rng = np.random.default_rng(seed)
    path = run_dir / "decisions.parquet"
    writer = None
    for start in range(0, rows, CHUNK):
        table = _chunk(start, min(CHUNK, rows - start), rng).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    writer.close()
    return path


def _page(slug: str) -> None:
    from backend.console.app import run_page

    run_page(slug)


def measure(home: Path, empty: Path) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    # A running console has imported its modules already: warm them on an empty home (no data cached).
    os.environ["ACTS_HOME"] = str(empty)
    started = time.perf_counter()
    AppTest.from_function(_page, args=("decisions",), default_timeout=120).run()
    warmup = time.perf_counter() - started
    os.environ["ACTS_HOME"] = str(home)
    at = AppTest.from_function(_page, args=("decisions",), default_timeout=120)
    started = time.perf_counter()
    at.run()
    first = time.perf_counter() - started
    assert not at.exception, at.exception
    figures = {"process_warmup_s": round(warmup, 3), "first_render_s": round(first, 3)}
    changes = []
    for symbol in ("S03", "S17", "S29"):
        at.multiselect(key="decisions_symbols").set_value([symbol])
        started = time.perf_counter()
        at.run()
        changes.append(time.perf_counter() - started)
    kinds = []
    for kind in ("enter", "exit", "scale_out"):
        at.multiselect(key="decisions_kinds").set_value([kind])
        started = time.perf_counter()
        at.run()
        kinds.append(time.perf_counter() - started)
    at.number_input(key="decisions_page").set_value(2)
    started = time.perf_counter()
    at.run()
    figures["next_page_s"] = round(time.perf_counter() - started, 3)
    figures["filter_symbol_median_s"] = round(statistics.median(changes), 3)
    figures["filter_symbol_max_s"] = round(max(changes), 3)
    figures["filter_kind_median_s"] = round(statistics.median(kinds), 3)
    figures["shown_total"] = at.caption[0].value
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acts-bench-console-") as tmp:
        home = Path(tmp) / "home"
        started = time.perf_counter()
        path = write_log(home / "runs" / "20250101T000000_000000", args.rows)
        written = time.perf_counter() - started
        figures = {"rows": args.rows, "file_mb": round(path.stat().st_size / 1e6, 1), "write_s": round(written, 1), **measure(home, Path(tmp) / "empty")}
    figures["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
