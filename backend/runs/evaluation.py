"""The honest protocol (ADR-029): a finished run judged out of sample only, against baselines on the same rows.

A run folder's recorded inputs and bundle (verified as replay verifies them) give the run's market matrix once.
Its timestamps are cut into segments:

* ``out_of_sample``: from the first timestamp with a walk-forward prediction to the end;
* ``tuning``: the out-of-sample rows before the final ``holdout_fraction`` of the history's timestamps (the only
  rows any tuning decision may look at);
* ``holdout``: the final ``holdout_fraction`` of the history's timestamps, reported separately and never tuned on.

On every segment a fresh engine (initial cash, flat) runs each requested profile twice: with the model's
predictions, and with a naive momentum score in their place (same graph, same profile, same costs). Baselines on
the same rows: cash, equal-weight buy-and-hold of the run's symbols and buy-and-hold BTC, both paying one leg of
fee and half-spread. Every figure is after the same fees (module ``execution.accounting.performance``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.config.canonical import content_hash
from backend.config.compose import validate_raw
from backend.config.schema import RiskProfileSpec
from backend.runs.backtest import one_leg
from backend.engine.economics import EdgeBasis
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.runs.runner import edge_basis, frame_sha256, market_matrix, simulate, write_json
from backend.errors import ConfigError, DataError, ReplayError
from backend.models.bundle import load_bundle
from execution.accounting.performance import buy_and_hold, performance

SEGMENTS = ("out_of_sample", "tuning", "holdout")
BENCHMARK = "BTC"


@dataclass(frozen=True)
class Segment:
    """Rows ``first`` (inclusive) to ``stop`` (exclusive) of a run's matrix."""

    name: str
    first: int
    stop: int


def segments(matrix: MarketMatrix, holdout_fraction: float) -> tuple[Segment, ...]:
    """Cut ``matrix``'s timestamps into the out-of-sample span, its tuning part and the final holdout.

    Raises
    ------
    ConfigError
        When ``holdout_fraction`` is not in (0, 0.5].
    DataError
        When the run has no out-of-sample prediction, or the holdout would swallow every out-of-sample row.
    """
    if not 0.0 < holdout_fraction <= 0.5:
        raise ConfigError(f"'holdout_fraction' must be > 0 and <= 0.5, was {holdout_fraction}")
    n = len(matrix.ts_ms)
    predicted = np.isfinite(matrix.pred["p_up"]).any(axis=1)
    if not predicted.any():
        raise DataError("the run has no out-of-sample prediction: nothing to evaluate")
    first = int(np.argmax(predicted))
    cut = n - math.ceil(n * holdout_fraction)
    if cut <= first:
        raise DataError(
            f"the holdout (final {holdout_fraction} of {n} timestamps, from row {cut}) starts at or before the first "
            f"out-of-sample row {first}: no rows are left to tune on"
        )
    return Segment("out_of_sample", first, n), Segment("tuning", first, cut), Segment("holdout", cut, n)


def rows_of(matrix: MarketMatrix, segment: Segment, pred: dict[str, np.ndarray] | None = None) -> MarketMatrix:
    """Return the segment's rows of ``matrix`` (with ``pred`` in place of its predictions when given)."""
    cut = slice(segment.first, segment.stop)
    source = matrix.pred if pred is None else pred
    return MarketMatrix(
        matrix.ts_ms[cut], matrix.symbols, matrix.open[cut], matrix.close[cut], matrix.has_bar[cut],
        {k: v[cut] for k, v in source.items()}, {k: v[cut] for k, v in matrix.feat.items()},
        None if matrix.volume is None else matrix.volume[cut],
    )  # fmt: skip


def momentum_scores(matrix: MarketMatrix, horizon_bars: int, label_cost: float) -> dict[str, np.ndarray]:
    """Return a naive momentum score in the model's place, from past closes only.

    ``expected_return`` = the log return of the last ``horizon_bars`` bars, net of the label cost (the trend is
    expected to continue over the next horizon); ``p_up`` = the share of those bars that closed up. No recovery
    probability: the graph's recovery decisions see it missing.
    """
    logs = np.log(matrix.close)
    move = np.full(logs.shape, np.nan)
    move[horizon_bars:] = logs[horizon_bars:] - logs[:-horizon_bars]
    up = np.zeros(logs.shape)
    up[1:] = (logs[1:] > logs[:-1]).astype(float)
    counted = np.cumsum(up, axis=0)
    share = np.full(logs.shape, np.nan)
    share[horizon_bars:] = (counted[horizon_bars:] - counted[:-horizon_bars]) / horizon_bars
    share[np.isnan(move)] = np.nan
    return {"p_up": share, "expected_return": move - label_cost, "p_recovery": np.full(logs.shape, np.nan)}


def strategy_figures(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> dict[str, Any]:
    """Run a fresh engine over ``matrix`` and return its protocol figures, orders and decision count."""
    spine = simulate(pipeline, matrix, edge, model_version)
    engine, equity, exposure = spine.engine, spine.equity, spine.exposure
    portfolio = engine.portfolio
    traded = float(sum(f.qty * f.price for f in portfolio.ledger))
    figures = performance(equity, exposure, float(portfolio.initial_cash), pipeline.spec.data.bar_ms, traded, float(portfolio.fees_paid))
    return {**figures, "orders": engine.state.orders, "decisions": len(engine.log), "ledger_reconciles": portfolio.reconciles()}


def baseline_figures(pipeline: Pipeline, matrix: MarketMatrix) -> dict[str, dict[str, Any]]:
    """Return cash, equal-weight buy-and-hold and (when the run trades it) buy-and-hold BTC on ``matrix``'s rows."""
    initial, bar_ms, leg = pipeline.spec.execution.initial_cash, pipeline.spec.data.bar_ms, one_leg(pipeline)
    flat = np.full(len(matrix.ts_ms), initial)
    out = {"cash": performance(flat, np.zeros_like(flat), initial, bar_ms, 0.0, 0.0)}
    holdings = {"buy_and_hold_equal_weight": list(range(len(matrix.symbols)))}
    if BENCHMARK in matrix.symbols:
        holdings[f"buy_and_hold_{BENCHMARK}"] = [matrix.symbols.index(BENCHMARK)]
    for name, columns in holdings.items():
        equity, exposure, paid = buy_and_hold(matrix.close, matrix.has_bar, initial, leg, columns)
        out[name] = performance(equity, exposure, initial, bar_ms, initial, paid)
    return out


@dataclass(frozen=True)
class RecordedRun:
    """A finished run folder's verified pieces: its pipeline, market matrix and pricing basis."""

    run_dir: Path
    raw: dict[str, Any]
    pipeline: Pipeline
    matrix: MarketMatrix
    edge: EdgeBasis
    model_version: str


def load_run(run_dir: Path) -> RecordedRun:
    """Load and verify a complete run folder (spec, inputs and bundle against their recorded hashes).

    Raises
    ------
    ReplayError
        When the folder is not a complete run or a recorded piece does not match its hash.
    """
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ReplayError(f"{run_dir} is not a complete run folder (summary.json is missing)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    raw = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    spec = validate_raw(raw)
    if content_hash(spec) != summary["spec_hash"]:
        raise ReplayError(f"{run_dir}/spec.json does not match the run's spec_hash; the spec was altered")
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    if frame_sha256(bars) != json.loads((run_dir / "inputs.json").read_text(encoding="utf-8"))["inputs_sha256"]:
        raise ReplayError(f"{run_dir}/inputs.parquet does not match its recorded hash; the inputs were altered")
    bundle = load_bundle(run_dir / "model")
    pipeline = compile_pipeline(spec)
    matrix = market_matrix(pipeline, bars, bundle, spec.training.num_threads)
    return RecordedRun(run_dir, raw, pipeline, matrix, edge_basis(spec, bundle), bundle.version)


def with_profile(run: RecordedRun, profile: RiskProfileSpec) -> Pipeline:
    """Return the run's pipeline under another risk profile (nothing else changes)."""
    return compile_pipeline(validate_raw({**run.raw, "risk": profile.model_dump(mode="json")}))


def evaluate(run: RecordedRun, profiles: Sequence[RiskProfileSpec], holdout_fraction: float) -> dict[str, Any]:
    """Return the protocol's report: per segment, each profile with the model and with momentum, and the baselines.

    ``profiles`` are judged in order; the run's own profile is judged when none is given.
    """
    pipelines = [with_profile(run, p) for p in profiles] or [run.pipeline]
    spec = run.pipeline.spec
    momentum = momentum_scores(run.matrix, spec.training.label.horizon_bars, run.edge.label_cost)
    report: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "model_version": run.model_version,
        "holdout_fraction": holdout_fraction,
        "label_horizon_bars": spec.training.label.horizon_bars,
        "label_round_trip_cost": run.edge.label_cost,
        "profiles": [p.spec.risk.name for p in pipelines],
        "segments": {},
    }
    for segment in segments(run.matrix, holdout_fraction):
        rows, naive = rows_of(run.matrix, segment), rows_of(run.matrix, segment, momentum)
        report["segments"][segment.name] = {
            "first_ts": int(rows.ts_ms[0]),
            "last_ts": int(rows.ts_ms[-1]),
            "timestamps": len(rows.ts_ms),
            "model": {p.spec.risk.name: strategy_figures(p, rows, run.edge, run.model_version) for p in pipelines},
            "momentum": {p.spec.risk.name: strategy_figures(p, naive, run.edge, "momentum") for p in pipelines},
            "baselines": baseline_figures(run.pipeline, rows),
        }
    report["verdict"] = verdict(report["segments"]["holdout"], report["profiles"][0])
    return report


def verdict(segment: dict[str, Any], profile: str) -> dict[str, Any]:
    """Judge ``profile`` on a segment by the issue's bar: return >= 0, drawdown and Sharpe better than buy-and-hold.

    When that bar is not met the profile must abstain: lose less than 1 %.
    """
    own, held = segment["model"][profile], segment["baselines"]["buy_and_hold_equal_weight"]
    beats = {
        "return_at_least_cash": own["return_pct"] >= 0.0,
        "drawdown_below_buy_and_hold": own["max_drawdown_pct"] < held["max_drawdown_pct"],
        "sharpe_above_buy_and_hold": (own["sharpe"] or 0.0) > (held["sharpe"] or 0.0),
    }
    return {"profile": profile, **beats, "edge_survives_costs": all(beats.values()), "abstains": own["return_pct"] > -1.0}


FIGURES = ("return_pct", "cagr_pct", "sharpe", "sortino", "max_drawdown_pct", "turnover", "fees_paid", "exposure_time_pct", "orders")


def markdown(report: dict[str, Any]) -> str:
    """Render the report as markdown tables, one per segment."""
    lines = [f"Evaluation of {report['run_dir']} (model {report['model_version']}); holdout = final {report['holdout_fraction']} of timestamps."]
    for name in SEGMENTS:
        seg = report["segments"][name]
        lines += ["", f"### {name} ({seg['timestamps']} timestamps)", "", "| scorer | " + " | ".join(FIGURES) + " |", "|---" * (len(FIGURES) + 1) + "|"]
        rows = [(f"model, {p}", f) for p, f in seg["model"].items()]
        rows += [(f"momentum, {p}", f) for p, f in seg["momentum"].items()]
        rows += list(seg["baselines"].items())
        for label, figures in rows:
            lines.append(f"| {label} | " + " | ".join("n/a" if figures.get(k) is None else str(figures.get(k)) for k in FIGURES) + " |")
    v = report["verdict"]
    lines += ["", f"Holdout verdict for {v['profile']}: " + ", ".join(f"{k} {v[k]}" for k in sorted(v) if k != "profile")]
    return "\n".join(lines) + "\n"


def write_evaluation(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``evaluation.json`` and ``evaluation.md`` into the run folder."""
    write_json(run_dir / "evaluation.json", report)
    (run_dir / "evaluation.md").write_text(markdown(report), encoding="utf-8")
