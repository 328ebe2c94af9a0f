"""Backtest: train walk-forward on the lake's bars, run the spine, write the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from backend.audit.decisions import write_decisions
from backend.bundles.channel import load_channel
from backend.bundles.compat import SHIPPED_DIR
from backend.bundles.use import installed_source
from backend.audit.report import Marker, render_report, write_report
from backend.clock import WallClock
from backend.engine.pipeline import Pipeline
from backend.errors import ConfigError
from backend.home import Home
from backend.models.bundle import ModelBundle, save_bundle
from backend.runs.runner import Outcome, Progress, execute, frame_sha256, load_bars, train_bundle, write_json
from execution.accounting.campaigns import CampaignPnl, campaign_pnl, campaign_totals
from execution.accounting.performance import buy_and_hold, performance

_MARKER_KIND = {"enter": "entry", "exit": "exit", "scale_out": "scale_out", "reenter": "reentry"}


def prepare_run_dir(run_dir: Path, create: bool = True) -> Path:
    """Refuse a ``run_dir`` that already holds a run (runs are never overwritten); create it if asked."""
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"run folder {run_dir} already holds a run; choose another hydra.run.dir")
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def campaign_rows(outcome: Outcome) -> list[CampaignPnl]:
    """Return the run's PnL per (campaign, symbol), open positions marked at the last closes seen."""
    portfolio = outcome.engine.portfolio
    marks = dict(zip(outcome.matrix.symbols, outcome.engine.state.marks.tolist(), strict=True))
    return campaign_pnl(portfolio.ledger, marks)


def one_leg(pipeline: Pipeline) -> float:
    """Return one order's fixed cost as a fraction of its notional: taker fee and half-spread (no size term)."""
    execution = pipeline.spec.execution
    return (execution.taker_fee_bps + execution.slippage.half_spread_bps) / 10_000.0


def benchmark_figures(pipeline: Pipeline, outcome: Outcome) -> dict[str, object]:
    """Return the strategy's Sharpe, Sortino, CAGR, turnover and exposure, and equal-weight buy-and-hold on the same bars."""
    portfolio, matrix = outcome.engine.portfolio, outcome.matrix
    initial, bar_ms = float(portfolio.initial_cash), pipeline.spec.data.bar_ms
    traded = float(sum(f.qty * f.price for f in portfolio.ledger))
    own = performance(outcome.equity, outcome.exposure, initial, bar_ms, traded, float(portfolio.fees_paid))
    equity, exposure, _ = buy_and_hold(matrix.close, matrix.has_bar, initial, one_leg(pipeline), list(range(len(matrix.symbols))))
    held = performance(equity, exposure, initial, bar_ms, 0.0, 0.0)
    return {
        **{k: own[k] for k in ("sharpe", "sortino", "cagr_pct", "turnover", "exposure_time_pct", "avg_exposure_pct")},
        "buy_and_hold_return_pct": held["return_pct"],
        "buy_and_hold_max_drawdown_pct": held["max_drawdown_pct"],
        "buy_and_hold_sharpe": held["sharpe"],
    }


def summarize(pipeline: Pipeline, outcome: Outcome, wall_seconds: float, extra: dict[str, object]) -> dict[str, object]:
    """Return the run summary: identity, counts, money, benchmark figures, hashes and speed."""
    engine = outcome.engine
    portfolio = engine.portfolio
    campaigns = campaign_totals(campaign_rows(outcome))
    events = int(outcome.matrix.has_bar.sum())
    final_equity = float(outcome.equity[-1])
    peak = np.maximum.accumulate(outcome.equity)
    timed = sum(outcome.timings.values())
    return {
        "run": pipeline.spec.name,
        "mode": pipeline.spec.mode.value,
        "spec_hash": pipeline.spec_hash,
        "profile_version": pipeline.profile_version,
        "model_version": engine.stamp.model_version,
        "symbols": len(outcome.matrix.symbols),
        "timestamps": len(outcome.matrix.ts_ms),
        "events": events,
        "decisions": len(outcome.decisions),
        "decisions_admitted": int(outcome.decisions["admitted"].sum()),
        "orders": engine.state.orders,
        "fills": len(portfolio.ledger),
        "initial_equity": float(portfolio.initial_cash),
        "final_equity": round(final_equity, 2),
        "return_pct": round(100.0 * (final_equity / float(portfolio.initial_cash) - 1.0), 4),
        "max_drawdown_pct": round(100.0 * float(np.max(1.0 - outcome.equity / peak)), 4),
        "fees_paid": str(portfolio.fees_paid),
        **benchmark_figures(pipeline, outcome),
        "realized_pnl": str(portfolio.realized_pnl),
        "campaigns": len(campaigns),
        "campaigns_won": sum(int(total > 0) for total in campaigns.values()),
        "cash": str(portfolio.cash),
        "ledger_reconciles": portfolio.reconciles(),
        "decision_log_sha256": outcome.decision_log_sha256,
        "state_trace_sha256": outcome.state_trace_sha256,
        "wall_seconds": round(wall_seconds, 3),
        "spine_seconds": round(timed, 3),
        "events_per_second": round(events / timed, 1) if timed > 0 else None,
        "timings": {k: round(v, 4) for k, v in outcome.timings.items()},
        **extra,
    }


def write_outputs(run_dir: Path, outcome: Outcome) -> None:
    """Write the decision log, fills, equity curve and state trace of ``outcome``."""
    write_decisions(outcome.decisions, run_dir / "decisions.parquet")
    ledger = outcome.engine.portfolio.ledger
    pl.DataFrame(
        {
            "order_id": [f.order_id for f in ledger],
            "ts": [f.ts_ms for f in ledger],
            "symbol": [f.symbol for f in ledger],
            "side": [f.side for f in ledger],
            "qty": [str(f.qty) for f in ledger],
            "price": [str(f.price) for f in ledger],
            "fee": [str(f.fee) for f in ledger],
            "campaign_id": [f.campaign_id for f in ledger],
        },
        schema={
            "order_id": pl.String, "ts": pl.Int64, "symbol": pl.String, "side": pl.String, "qty": pl.String,
            "price": pl.String, "fee": pl.String, "campaign_id": pl.String,
        },  # fmt: skip
    ).write_parquet(run_dir / "fills.parquet")
    rows = campaign_rows(outcome)
    money = ("bought_qty", "sold_qty", "open_qty", "fees", "open_cost_basis", "realised", "unrealised")
    pl.DataFrame(
        {
            "campaign_id": [r.campaign_id for r in rows],
            "symbol": [r.symbol for r in rows],
            "first_ts": [r.first_ts for r in rows],
            "last_ts": [r.last_ts for r in rows],
            "fills": [r.fills for r in rows],
            **{name: [str(getattr(r, name)) for r in rows] for name in money},
            "total": [str(r.total) for r in rows],
        },
        schema={
            "campaign_id": pl.String, "symbol": pl.String, "first_ts": pl.Int64, "last_ts": pl.Int64, "fills": pl.Int64,
            **dict.fromkeys(money, pl.String), "total": pl.String,
        },  # fmt: skip
    ).write_parquet(run_dir / "campaigns.parquet")
    pl.DataFrame({"ts": outcome.matrix.ts_ms, "equity": outcome.equity}).write_parquet(run_dir / "equity.parquet")
    states = {s: outcome.states[:, i] for i, s in enumerate(outcome.matrix.symbols)}
    pl.DataFrame({"ts": outcome.matrix.ts_ms, **states}).write_parquet(run_dir / "states.parquet")


def report(pipeline: Pipeline, outcome: Outcome, summary: dict[str, object]) -> str:
    """Render the run's HTML report: equity, drawdown, and prices marked with trades."""
    matrix = outcome.matrix
    admitted = outcome.decisions.filter(pl.col("admitted") & pl.col("order_id").is_not_null())
    markers = [
        Marker(row["symbol"], row["ts"], row["ref_price"], _MARKER_KIND[row["action"]], row["reason"])
        for row in admitted.iter_rows(named=True)
    ]
    prices = {s: (matrix.ts_ms, matrix.close[:, i]) for i, s in enumerate(matrix.symbols)}
    return render_report(f"ACTS backtest {pipeline.spec.name}", summary, matrix.ts_ms, outcome.equity, prices, markers)


def write_inputs(run_dir: Path, pipeline: Pipeline, bars: pl.DataFrame, snapshot: dict[str, str]) -> None:
    """Write what a run is made of: the resolved spec, the input bars and their lake snapshot and hash."""
    write_json(run_dir / "spec.json", pipeline.spec.model_dump(mode="json"))
    bars.write_parquet(run_dir / "inputs.parquet", compression="zstd")
    write_json(run_dir / "inputs.json", {"lake_snapshot": snapshot, "inputs_sha256": frame_sha256(bars), "rows": bars.height})


def write_results(
    run_dir: Path, pipeline: Pipeline, bundle: ModelBundle, outcome: Outcome, wall_seconds: float, extra: dict[str, object]
) -> dict[str, object]:
    """Write the bundle, the outputs, the report and the summary of a finished run; return the summary.

    ``acts backtest`` and every variant of ``acts sweep`` write their run folders through this and
    :func:`write_inputs`, so a sweep's folders are the same as a backtest's.
    """
    save_bundle(bundle, run_dir / "model")
    write_outputs(run_dir, outcome)
    summary = summarize(pipeline, outcome, wall_seconds, extra)
    write_report(run_dir / "report.html", report(pipeline, outcome, summary))
    summary["report"] = str(run_dir / "report.html")
    write_json(run_dir / "summary.json", summary)
    return summary


def run_backtest(pipeline: Pipeline, home: Home, run_dir: Path, wall: WallClock, progress: Progress) -> dict[str, object]:
    """Run a backtest of ``pipeline`` and write everything into ``run_dir``; return the summary.

    With ``model.source=bundle`` the bundle is the home's active installed one (on first use the
    newest compatible bundle shipped in ``bundles/`` of the channel's line is installed).
    """
    source = pipeline.spec.model.source
    installed = installed_source(home, wall.now_ms, SHIPPED_DIR, load_channel().bundle) if source == "bundle" else None
    started = wall.monotonic()
    # Refuse a used folder and load the data before writing anything, so a failure leaves no litter.
    prepare_run_dir(run_dir, create=False)
    bars, snapshot = load_bars(pipeline.spec, home, progress)
    prepare_run_dir(run_dir)
    write_inputs(run_dir, pipeline, bars, snapshot)
    progress(f"training walk-forward on {bars.height} bars" if source in ("train", "cached") else f"using the {source} model: no training")
    trained = wall.monotonic()
    bundle = train_bundle(pipeline, bars, snapshot, progress, home, installed=installed, now_ms=wall.now_ms)
    train_seconds = wall.monotonic() - trained
    progress(f"running the spine over {bars.height} bar events")
    outcome = execute(pipeline, bars, bundle, wall)
    extra: dict[str, object] = {"train_seconds": round(train_seconds, 3), "run_dir": str(run_dir)}
    return write_results(run_dir, pipeline, bundle, outcome, wall.monotonic() - started, extra)
