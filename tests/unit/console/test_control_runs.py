"""The control plane's read side over runs and sessions: listing, decision queries, holdings."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from console_helpers import PARTIAL_EVENTS, RUN_ID

from backend.audit.decisions import read_decisions
from backend.operator.runs import (
    DecisionQuery,
    RunKind,
    decision_facets,
    find_run,
    gate_outcomes,
    holdings,
    list_runs,
    paper_checkpoint,
    positions_from_fills,
    query_decisions,
    recorded_run_of,
    symbols_of,
)
from backend.errors import ControlError
from backend.home import Home


def test_list_runs_gives_paper_sessions_then_backtests_newest_first(filled_home: Path) -> None:
    older = filled_home / "runs" / "20240101T000000_000000"
    shutil.copytree(filled_home / "runs" / RUN_ID, older)
    (filled_home / "runs" / "20990101T000000_000000").mkdir()  # an unfinished run: no summary.json
    (filled_home / "paper" / "empty").mkdir()  # not a session: no journal
    keys = [r.key for r in list_runs(Home(filled_home))]
    assert keys == ["paper/default", "paper/fresh", "paper/holding", f"runs/{RUN_ID}", "runs/20240101T000000_000000"]
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    assert (run.kind, run.mode, run.name) == (RunKind.BACKTEST, "backtest", "default")
    assert run.label == f"runs/{RUN_ID} (backtest, default)"


def test_an_empty_home_lists_nothing_and_an_unknown_run_is_refused_by_name(acts_home: Path) -> None:
    assert list_runs(Home(acts_home)) == []
    with pytest.raises(ControlError, match=r"'run' must be one of the home's runs \(none\), was 'runs/x'"):
        find_run(Home(acts_home), "runs/x")


def test_unknown_run_lists_the_known_ones(filled_home: Path) -> None:
    with pytest.raises(ControlError, match=rf"\(paper/default, paper/fresh, paper/holding, runs/{RUN_ID}\), was 'nope'"):
        find_run(Home(filled_home), "nope")


def test_decision_page_filters_and_pages_like_the_full_log(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    log = read_decisions(filled_home / "runs" / RUN_ID / "decisions.parquet")
    facets = decision_facets(run)
    assert facets["symbol"] == tuple(sorted(log["symbol"].unique().to_list()))
    assert facets["action"] == tuple(sorted(log["action"].unique().to_list()))
    query = DecisionQuery(kinds=("hold",), reasons=("HOLD_EDGE_PERSISTS",), page=1, page_size=3)
    page = query_decisions(run, query)
    expected = log.filter((pl.col("action") == "hold") & (pl.col("reason") == "HOLD_EDGE_PERSISTS")).sort("seq")
    assert page.total == expected.height and page.pages == -(-expected.height // 3)
    assert page.rows["seq"].to_list() == expected["seq"].to_list()[3:6]
    assert page.rows.columns[:5] == ["seq", "ts", "symbol", "action", "reason"]


def test_symbol_and_admitted_filters_and_a_page_past_the_end_is_clamped(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    everything = query_decisions(run, DecisionQuery(page_size=500))
    symbol = everything.rows["symbol"][0]
    page = query_decisions(run, DecisionQuery(symbols=(symbol,), admitted_only=True, page=99, page_size=10))
    wanted = everything.rows.filter((pl.col("symbol") == symbol) & pl.col("admitted"))
    assert page.total == wanted.height and page.page == page.pages - 1
    assert page.rows["seq"].to_list() == wanted["seq"].to_list()[page.page * 10 :]
    none = query_decisions(run, DecisionQuery(symbols=("NOPE",)))
    assert (none.total, none.pages, none.page, none.rows.height) == (0, 1, 0, 0)


def test_p_recovery_comes_from_the_guard_inputs_when_the_guard_read_it(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    rows = query_decisions(run, DecisionQuery(page_size=500)).rows
    for row in rows.iter_rows(named=True):
        has = '"pred.p_recovery"' in row["inputs"]
        assert (row["p_recovery"] is not None) == has


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (DecisionQuery(page_size=0), r"'page_size' must be 1 to 500, was 0"),
        (DecisionQuery(page_size=501), r"'page_size' must be 1 to 500, was 501"),
        (DecisionQuery(page=-1), r"'page' must be >= 0, was -1"),
    ],
)
def test_a_query_out_of_bounds_is_refused_naming_field_bound_and_value(filled_home: Path, query: DecisionQuery, message: str) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    with pytest.raises(ControlError, match=message):
        query_decisions(run, query)


def test_a_run_without_its_decision_log_is_refused(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    (run.path / "decisions.parquet").unlink()
    with pytest.raises(ControlError, match="has no decision log"):
        query_decisions(run, DecisionQuery())


def test_facets_are_recomputed_when_the_file_changes(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    before = decision_facets(run)
    log = read_decisions(run.path / "decisions.parquet")
    log.head(1).with_columns(pl.lit("ZZZ").alias("symbol")).write_parquet(run.path / "decisions.parquet")
    assert before != decision_facets(run) and decision_facets(run)["symbol"] == ("ZZZ",)


def test_paper_session_decisions_come_from_its_journal(filled_home: Path) -> None:
    home = Home(filled_home)
    session = find_run(home, "paper/default")
    backtest = read_decisions(filled_home / "runs" / RUN_ID / "decisions.parquet")
    page = query_decisions(session, DecisionQuery(page_size=500))
    assert page.total == backtest.height
    assert page.rows["reason"].to_list() == backtest.sort("seq")["reason"].to_list()[:500]
    assert decision_facets(session)["action"] == tuple(sorted(backtest["action"].unique().to_list()))
    fresh = find_run(home, "paper/fresh")
    assert query_decisions(fresh, DecisionQuery()).total == 0
    assert paper_checkpoint(fresh) is None and recorded_run_of(home, fresh) is None
    assert paper_checkpoint(find_run(home, "paper/holding"))["next_index"] == PARTIAL_EVENTS
    assert recorded_run_of(home, session).key == f"runs/{RUN_ID}"


def test_gate_outcomes_are_listed_in_chain_order(filled_home: Path) -> None:
    run = find_run(Home(filled_home), f"runs/{RUN_ID}")
    rows = query_decisions(run, DecisionQuery(kinds=("enter",), page_size=1)).rows
    outcomes = gate_outcomes(rows["gates"][0])
    assert [o["gate"] for o in outcomes][:3] == ["kill_switch", "profile_valid", "drawdown"]
    assert list(outcomes[0]) == ["gate", "passed", "reason", "value", "bound"]
    assert gate_outcomes("") == []


def _fills(*rows: tuple[int, str, str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"order_id": f"o{i}", "ts": ts, "symbol": s, "side": side, "qty": q, "price": p, "fee": "0", "campaign_id": "c"}
         for i, (ts, s, side, q, p) in enumerate(rows)]
    )  # fmt: skip


def test_positions_from_fills_average_cost_after_partial_exit_and_closed_positions_dropped() -> None:
    fills = _fills(
        (1, "BTC", "buy", "2", "100"), (2, "BTC", "buy", "2", "200"), (3, "BTC", "sell", "1", "300"),
        (4, "ETH", "buy", "1", "10"), (5, "ETH", "sell", "1", "12"), (6, "SOL", "sell", "1", "5"),
    )  # fmt: skip
    positions = positions_from_fills(fills, {"BTC": 250.0})
    assert positions.to_dicts() == [
        {"symbol": "BTC", "qty": 3.0, "avg_cost": 150.0, "mark": 250.0, "value": 750.0, "unrealised": 300.0}
    ]
    assert float(Decimal("450") / Decimal("3")) == positions["avg_cost"][0]


def test_holdings_of_a_backtest_run_is_its_final_state(filled_home: Path) -> None:
    home = Home(filled_home)
    run = find_run(home, f"runs/{RUN_ID}")
    held = holdings(home, run)
    # The run ends invested: the symbols whose last order was a buy, valued at their last close.
    log = read_decisions(run.path / "decisions.parquet").filter(pl.col("order_id").is_not_null()).sort("seq")
    last = log.group_by("symbol").agg(pl.col("action").last())
    still_held = sorted(last.filter(pl.col("action").is_in(["enter", "reenter", "scale_out"]))["symbol"].to_list())
    assert held.positions["symbol"].to_list() == still_held and len(still_held) > 0
    closes = pl.read_parquet(run.path / "inputs.parquet").sort("ts").group_by("symbol").agg(pl.col("close").last())
    assert held.positions["mark"].to_list() == [closes.filter(pl.col("symbol") == s)["close"][0] for s in still_held]
    assert held.cash == float(run.summary["cash"])
    assert held.equity == pytest.approx(held.cash + held.positions["value"].sum(), abs=0.01)
    assert held.equity == pytest.approx(run.summary["final_equity"], abs=0.01)
    assert set(held.markers["kind"].to_list()) <= {"entry", "partial exit", "re-entry", "exit"}
    assert held.markers.height == run.summary["decisions_admitted"] - query_decisions(run, DecisionQuery(kinds=("hold",))).total
    assert symbols_of(held) == ("BTC", "DOGE", "ETH", "SOL")


def test_holdings_of_a_paper_session_at_its_checkpoint(filled_home: Path) -> None:
    home = Home(filled_home)
    held = holdings(home, find_run(home, "paper/holding"))
    assert held.positions["symbol"].to_list() == ["DOGE"]
    assert held.equity == pytest.approx(held.cash + held.positions["value"][0])
    assert held.prices["ts"].max() <= paper_checkpoint(find_run(home, "paper/holding"))["ts"]
    assert f"at event {PARTIAL_EVENTS}" in held.note
    fresh = holdings(home, find_run(home, "paper/fresh"))
    assert fresh.positions.is_empty() and fresh.prices is None and "no event yet" in fresh.note
    assert symbols_of(fresh) == ()


def test_a_paper_session_whose_recorded_run_is_elsewhere_shows_positions_unvalued(filled_home: Path) -> None:
    shutil.rmtree(filled_home / "runs")
    home = Home(filled_home)
    held = holdings(home, find_run(home, "paper/holding"))
    assert held.prices is None and "not in this home" in held.note
    assert held.positions["symbol"].to_list() == ["DOGE"] and held.equity == held.cash
