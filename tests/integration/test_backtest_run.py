"""Integration tests for backend.runs.backtest: the run folder and a summary that agrees with it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.audit.decisions import decision_log_sha256, read_decisions
from backend.clock import WallClock
from backend.config.canonical import canonical_json
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ConfigError
from backend.home import Home
from backend.models.bundle import load_bundle
from backend.runs.backtest import prepare_run_dir, run_backtest
from backend.runs.runner import frame_sha256
from execution.accounting.portfolio import to_decimal

RUN_FILES = [
    "campaigns.parquet",
    "decisions.parquet",
    "equity.parquet",
    "fills.parquet",
    "inputs.json",
    "inputs.parquet",
    "model",
    "report.html",
    "spec.json",
    "states.parquet",
    "summary.json",
]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return compile_pipeline(small_spec("training.num_threads=1"))


@pytest.fixture(scope="module")
def run(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], list[str]]:
    """One backtest of the SMALL spec: its folder, the returned summary and the progress messages."""
    root = tmp_path_factory.mktemp("backtest")
    messages: list[str] = []
    summary = run_backtest(pipeline, Home(root / "home"), root / "runs" / "one", WallClock(), messages.append)
    return root / "runs" / "one", summary, messages


def test_a_backtest_writes_a_complete_run_folder(run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, summary, messages = run

    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES
    assert (run_dir / "model" / "manifest.json").is_file()
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8")) == summary
    assert summary["run_dir"] == str(run_dir) and summary["report"] == str(run_dir / "report.html")
    assert messages


def test_the_spec_and_inputs_recorded_are_the_ones_the_run_used(pipeline: Pipeline, run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, summary, _ = run
    inputs = pl.read_parquet(run_dir / "inputs.parquet")
    recorded = json.loads((run_dir / "inputs.json").read_text(encoding="utf-8"))

    assert json.loads((run_dir / "spec.json").read_text(encoding="utf-8")) == pipeline.spec.model_dump(mode="json")
    assert canonical_json(pipeline.spec) == canonical_json(json.loads((run_dir / "spec.json").read_text(encoding="utf-8")))
    assert recorded["inputs_sha256"] == frame_sha256(inputs)
    assert recorded["rows"] == inputs.height == summary["events"]
    bundle = load_bundle(run_dir / "model")
    assert bundle.version == summary["model_version"]
    assert bundle.lineage["lake_snapshot"] == recorded["lake_snapshot"]
    assert summary["spec_hash"] == pipeline.spec_hash and summary["profile_version"] == pipeline.profile_version


def test_the_summary_counts_agree_with_the_written_logs(run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, summary, _ = run
    decisions = read_decisions(run_dir / "decisions.parquet")
    fills = pl.read_parquet(run_dir / "fills.parquet")

    assert summary["decisions"] == decisions.height > 0
    assert summary["decision_log_sha256"] == decision_log_sha256(decisions)
    assert summary["decisions_admitted"] == decisions["admitted"].sum()
    assert summary["orders"] == decisions["order_id"].drop_nulls().len()
    assert summary["fills"] == fills.height
    assert set(fills["order_id"]) <= set(decisions["order_id"].drop_nulls())
    assert summary["ledger_reconciles"] is True
    assert summary["symbols"] == 4 and summary["timestamps"] == 2880 and summary["events"] == 4 * 2880


def test_the_summary_money_agrees_with_the_equity_curve(run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, summary, _ = run
    equity = pl.read_parquet(run_dir / "equity.parquet")["equity"].to_numpy()
    fees = sum(float(f) for f in pl.read_parquet(run_dir / "fills.parquet")["fee"])

    assert summary["initial_equity"] == 100_000.0 == equity[0]
    assert summary["final_equity"] == round(float(equity[-1]), 2)
    assert summary["return_pct"] == round(100.0 * (equity[-1] / 100_000.0 - 1.0), 4)
    peak = np.maximum.accumulate(equity)
    assert summary["max_drawdown_pct"] == round(100.0 * float(np.max(1.0 - equity / peak)), 4) > 0
    assert float(summary["fees_paid"]) == pytest.approx(fees)


def test_the_summary_reports_speed_and_timings(run: tuple[Path, dict[str, object], list[str]]) -> None:
    _, summary, _ = run

    assert set(summary["timings"]) == {"features_and_predictions", "event_loop", "decision_log"}
    assert summary["wall_seconds"] >= summary["train_seconds"] > 0
    assert summary["spine_seconds"] == pytest.approx(sum(summary["timings"].values()), abs=2e-3)
    assert summary["events_per_second"] == pytest.approx(summary["events"] / summary["spine_seconds"], rel=0.05)


def test_the_state_trace_has_one_column_per_symbol(run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, _, _ = run
    states = pl.read_parquet(run_dir / "states.parquet")

    assert states.columns == ["ts", "BTC", "DOGE", "ETH", "SOL"]
    assert states.height == 2880
    # campaign_v1 has six states, coded by their order in the graph.
    assert set(states.drop("ts").unique().to_numpy().ravel()) <= set(range(6))


def test_the_report_marks_every_admitted_order(run: tuple[Path, dict[str, object], list[str]]) -> None:
    run_dir, _, _ = run
    decisions = read_decisions(run_dir / "decisions.parquet").filter(pl.col("order_id").is_not_null())
    html = (run_dir / "report.html").read_text(encoding="utf-8")

    assert "ACTS backtest default" in html
    assert html.count('data-kind="entry"') == decisions.filter(pl.col("action") == "enter").height > 0
    assert html.count('data-kind="exit"') == decisions.filter(pl.col("action") == "exit").height


def test_prepare_run_dir_creates_missing_parents(tmp_path: Path) -> None:
    assert prepare_run_dir(tmp_path / "a" / "b").is_dir()


def test_prepare_run_dir_accepts_an_existing_folder_without_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")

    assert prepare_run_dir(tmp_path) == tmp_path
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "x"


def test_a_folder_that_already_holds_a_run_is_refused_and_left_alone(pipeline: Pipeline, run: tuple[Path, dict[str, object], list[str]], tmp_path: Path) -> None:
    run_dir = run[0]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    with pytest.raises(ConfigError) as caught:
        run_backtest(pipeline, Home(tmp_path / "home"), run_dir, WallClock(), lambda _m: None)

    assert str(caught.value) == f"run folder {run_dir} already holds a run; choose another hydra.run.dir"
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert not (tmp_path / "home").exists()


def test_campaigns_parquet_reconciles_with_the_summary_and_the_equity_curve(
    run: tuple[Path, dict[str, object], list[str]],
) -> None:
    run_dir, summary, _ = run
    campaigns = pl.read_parquet(run_dir / "campaigns.parquet")
    fills = pl.read_parquet(run_dir / "fills.parquet")
    inputs = pl.read_parquet(run_dir / "inputs.parquet")

    realised = sum((Decimal(v) for v in campaigns["realised"]), Decimal(0))
    unrealised = sum((Decimal(v) for v in campaigns["unrealised"]), Decimal(0))
    assert realised == Decimal(summary["realized_pnl"])
    assert sum((Decimal(v) for v in campaigns["fees"]), Decimal(0)) == Decimal(summary["fees_paid"])
    assert campaigns["fills"].sum() == fills.height == summary["fills"]
    # Realised plus unrealised is the Decimal equity at the last closes minus the initial cash.
    last = dict(inputs.sort("ts").group_by("symbol").last().select("symbol", "close").iter_rows())
    held = campaigns.select("symbol", "open_qty").iter_rows()
    value = sum((Decimal(q) * to_decimal(last[sym]) for sym, q in held), Decimal(0))
    assert realised + unrealised == Decimal(summary["cash"]) + value - Decimal(str(summary["initial_equity"]))
    totals: dict[str, Decimal] = {}
    for campaign, total in campaigns.select("campaign_id", "total").iter_rows():
        totals[campaign] = totals.get(campaign, Decimal(0)) + Decimal(total)
    assert summary["campaigns"] == len(totals) > 0
    assert summary["campaigns_won"] == sum(t > 0 for t in totals.values())


def test_every_fill_pays_the_configured_slippage_for_its_size_on_its_bar(
    pipeline: Pipeline, run: tuple[Path, dict[str, object], list[str]]
) -> None:
    run_dir, _, _ = run
    model = pipeline.spec.execution.slippage
    bars = pl.read_parquet(run_dir / "inputs.parquet").select("ts", "symbol", "open", "volume")
    fills = pl.read_parquet(run_dir / "fills.parquet").join(bars, on=["ts", "symbol"])
    assert fills.height > 0
    paid = []
    for row in fills.iter_rows(named=True):
        direction = 1.0 if row["side"] == "buy" else -1.0
        share_pct = 100.0 * float(row["qty"]) / row["volume"]
        bps = min(model.max_bps, model.half_spread_bps + model.impact_bps_per_pct_of_bar_volume * share_pct)
        assert float(row["price"]) == pytest.approx(row["open"] * (1.0 + direction * bps / 10_000.0), rel=1e-9, abs=1e-8)
        paid.append(bps)
    assert max(paid) > model.half_spread_bps
