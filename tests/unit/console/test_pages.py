"""Every console page's logic, run headless with Streamlit's AppTest against real homes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from console_helpers import RUN_ID
from streamlit.testing.v1 import AppTest

from backend.audit.decisions import read_decisions
from backend.control.store import ControlStore
from backend.profiles.store import ProfileStore
from backend.clock import WallClock

APP = Path(__file__).resolve().parents[3] / "backend" / "console" / "app.py"
TIMEOUT = 120


def _page(slug: str) -> None:
    from backend.console.app import run_page

    run_page(slug)


def _run(slug: str) -> AppTest:
    at = AppTest.from_function(_page, args=(slug,), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [s.value for s in at.success] + [w.value for w in at.warning]
    return "\n".join(str(p) for p in parts)


def test_the_app_builds_its_menu_from_the_page_modules_and_opens_status(acts_home: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Status"


def test_page_modules_are_discovered_in_menu_order() -> None:
    from backend.console.views import discover, page

    assert [m.SLUG for m in discover()] == ["status", "decisions", "holdings", "profiles", "audit", "models", "kraken"]
    with pytest.raises(KeyError, match="no console page 'nope'"):
        page("nope")


@pytest.mark.parametrize("slug", ["status", "decisions", "holdings", "audit"])
def test_every_page_on_an_empty_home_explains_what_to_run_first(acts_home: Path, slug: str) -> None:
    at = _run(slug)
    assert "acts demo" in _texts(at) and "acts backtest" in _texts(at)


def test_status_shows_health_mode_profile_and_every_gate_with_figure_and_bound(filled_home: Path) -> None:
    at = _run("status")
    assert {m.label for m in at.metric} == {"Health", "Mode", "Kill switch"}
    gates = at.dataframe[0].value
    assert list(gates.columns) == ["gate", "figure", "bound", "unit", "within", "note"]
    assert {"kill switch", "drawdown", "open positions", "total exposure"} <= set(gates["gate"])
    assert "Active risk profile** `balanced@v1#" in _texts(at)


def test_status_kill_switch_needs_author_and_reason_and_is_logged_like_the_cli(acts_home: Path) -> None:
    at = _run("status")
    _button(at, "Engage kill switch").click().run()
    assert "Refused: 'author' must be 1 to 64 characters" in _texts(at)
    with ControlStore(acts_home / "acts.db") as store:
        assert store.actions() == []
    at.text_input(key="ks_author").input("alice")
    at.text_input(key="ks_reason").input("drill")
    _button(at, "Engage kill switch").click().run()
    assert not at.exception
    assert "kill switch ON (action #1 by alice)" in _texts(at)
    assert next(m for m in at.metric if m.label == "Kill switch").value == "ON"
    assert at.dataframe[1].value["author"].tolist() == ["alice"]
    _button(at, "Resume trading").click().run()
    with ControlStore(acts_home / "acts.db") as store:
        assert [(a.action, a.author, a.reason) for a in store.actions()] == [("kill", "alice", "drill"), ("resume", "alice", "drill")]


def test_decisions_page_filters_by_symbol_kind_and_reason_and_shows_details(filled_home: Path) -> None:
    log = read_decisions(filled_home / "runs" / RUN_ID / "decisions.parquet")
    at = _run("decisions")
    at.selectbox(key="decisions_run").select(f"runs/{RUN_ID}").run()
    assert f"{log.height} decisions match; page 1 of {-(-log.height // 50)}" in _texts(at)
    # The first row is a hold of an entry whose edge was not calibrated yet (the first fold has no history).
    first = log.sort("seq").row(0, named=True)
    assert (first["reason"], first["edge"], first["cost"] > 0) == ("HOLD_EDGE_BELOW_COST", None, True)
    assert "Pricing (EDGE_BELOW_COST): edge missing (no calibrated edge) against cost" in _texts(at)
    at.multiselect(key="decisions_kinds").select("enter").run()
    table = at.dataframe[0].value
    assert set(table["action"]) == {"enter"} and {"p_up", "expected_return", "p_recovery", "profile_version"} <= set(table.columns)
    # Every admitted entry shows what it was expected to earn, what it cost and the margin it cleared.
    assert set(table["cost_reason"]) == {"EDGE_CLEARS_COST"} and (table["edge"] > table["cost"] + table["margin"]).all()
    assert "gate outcome PASSED" in _texts(at)
    entry = table.iloc[0]
    assert f"edge {entry['edge']:.4%} against cost {entry['cost']:.4%} + margin {entry['margin']:.4%}" in _texts(at)
    at.multiselect(key="decisions_kinds").unselect("enter").select("exit").run()
    assert "Pricing (NOT_PRICED): not priced (a way out, a recovery decision or no order)" in _texts(at)
    gates = at.dataframe[1].value
    assert list(gates["gate"])[:2] == ["kill_switch", "profile_valid"]
    at.multiselect(key="decisions_reasons").select("HOLD_FLAT_NO_EDGE").run()
    assert "0 decisions match" in _texts(at) and len(at.dataframe) == 1


def test_decisions_page_shows_a_paper_session_and_refuses_a_bad_page(filled_home: Path) -> None:
    at = _run("decisions")
    assert at.selectbox(key="decisions_run").value == "paper/default"
    at.multiselect(key="decisions_symbols").select("DOGE").run()
    at.checkbox(key="decisions_admitted").check().run()
    at.selectbox(key="decisions_size").select(25).run()
    assert "page 1 of" in _texts(at)
    at.number_input(key="decisions_page").set_value(0).run()
    assert "Refused: 'page' must be >= 0, was -1" in _texts(at)


def test_holdings_page_shows_cash_equity_positions_and_marked_price_chart(filled_home: Path) -> None:
    at = _run("holdings")
    at.selectbox(key="holdings_run").select("paper/holding").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Open positions"] == "1" and float(metrics["Cash (USD)"].replace(",", "")) > 0
    assert at.dataframe[0].value["symbol"].tolist() == ["DOGE"]
    # The chart opens on the first traded asset; BTC was bought and sold before the checkpoint, DOGE only bought.
    assert at.selectbox(key="holdings_symbol").value == "BTC"
    assert at.dataframe[1].value["kind"].tolist() == ["entry", "exit"]
    at.selectbox(key="holdings_symbol").select("DOGE").run()
    assert at.dataframe[1].value["kind"].tolist() == ["entry"]
    at.selectbox(key="holdings_run").select(f"runs/{RUN_ID}").run()
    metrics = {m.label: m.value for m in at.metric}
    held = at.dataframe[0].value["symbol"].tolist()
    assert metrics["Open positions"] == str(len(held)) and "DOGE" in held  # the run ends invested
    at.selectbox(key="holdings_symbol").select("BTC").run()
    assert at.dataframe[1].value["kind"].tolist() == ["entry", "exit", "entry"]
    at.selectbox(key="holdings_run").select("paper/fresh").run()
    assert "No open positions." in [m.value for m in at.markdown]
    assert "No prices for this run." in [m.value for m in at.markdown]


def test_holdings_page_with_no_trade_selects_the_first_asset(filled_home: Path) -> None:
    shutil.rmtree(filled_home / "paper")
    import polars as pl

    path = filled_home / "runs" / RUN_ID / "decisions.parquet"
    pl.read_parquet(path).filter(pl.col("action") == "hold").write_parquet(path)
    at = _run("holdings")
    assert at.selectbox(key="holdings_symbol").value == "BTC"


def _profile_form(at: AppTest, parent: int = 1) -> dict:
    return {t.key.rsplit(":", 1)[1]: t for t in at.text_input if t.key.startswith(f"edit:balanced:v{parent}:")}


def test_profiles_page_commits_a_valid_edit_with_author_and_reason(acts_home: Path) -> None:
    at = _run("profiles")
    assert "balanced@v1#" in _texts(at) and "(active)" in _texts(at)
    fields = _profile_form(at)
    assert "max_concurrent_positions (>= 1, <= 30)" == fields["max_concurrent_positions"].label
    fields["max_concurrent_positions"].input("5")
    at.text_input(key="edit:balanced:author").input("carol")
    at.text_input(key="edit:balanced:reason").input("fewer positions")
    _button(at, "Commit new version").click().run()
    assert not at.exception
    assert "committed balanced@v2#" in _texts(at) and "by carol" in _texts(at)
    with ProfileStore(acts_home / "acts.db", WallClock()) as store:
        latest = store.show("balanced")
    assert (latest.version, latest.author, latest.reason, latest.tree()["max_concurrent_positions"]) == (2, "carol", "fewer positions", 5)
    assert _profile_form(at, 2)["max_concurrent_positions"].value == "5"


def test_profiles_page_refuses_an_out_of_bound_value_past_the_widget(acts_home: Path) -> None:
    at = _run("profiles")
    _profile_form(at)["max_concurrent_positions"].input("31")
    at.text_input(key="edit:balanced:author").input("dave")
    at.text_input(key="edit:balanced:reason").input("too many")
    _button(at, "Commit new version").click().run()
    assert "'max_concurrent_positions' must be <= 30, was 31" in _texts(at)
    with ProfileStore(acts_home / "acts.db", WallClock()) as store:
        assert store.show("balanced").version == 1


def test_profiles_page_refuses_a_stale_edit_and_shows_the_newer_version(acts_home: Path) -> None:
    first, second = _run("profiles"), _run("profiles")
    for at, value, who in ((first, "4", "erin"), (second, "6", "frank")):
        _profile_form(at)["max_concurrent_positions"].input(value)
        at.text_input(key="edit:balanced:author").input(who)
        at.text_input(key="edit:balanced:reason").input("edit")
    _button(first, "Commit new version").click().run()
    _button(second, "Commit new version").click().run()
    text = _texts(second)
    assert "edit based on v1 is stale: the latest is v2" in text and "the latest version is v2" in text
    diff = second.dataframe[0].value
    assert diff.to_dict("records") == [{"key": "max_concurrent_positions", "v1": "8", "v2": "4"}]
    with ProfileStore(acts_home / "acts.db", WallClock()) as store:
        assert store.show("balanced").version == 2
    _button(second, "Edit on v2").click().run()
    assert _profile_form(second, 2)["max_concurrent_positions"].value == "4"
    assert "stale" not in _texts(second)


def test_profiles_page_activates_a_version_and_refuses_the_active_one(acts_home: Path) -> None:
    at = _run("profiles")
    at.text_input(key="activate:balanced:author").input("gina")
    at.text_input(key="activate:balanced:reason").input("again")
    _button(at, "Activate").click().run()
    assert "Refused: profile 'balanced': v1 is already active; no change to make, nothing written" in _texts(at)
    at.selectbox(key="profiles_name").select("conservative").run()
    at.text_input(key="activate:conservative:author").input("gina")
    at.text_input(key="activate:conservative:reason").input("safer")
    _button(at, "Activate").click().run()
    assert "activated conservative v1 (activation #2 by gina)" in _texts(at)
    at.selectbox(key="profiles_name").select("balanced").run()
    assert "v1 is active" not in _texts(at) and "(not active)" in _texts(at)


def test_audit_page_replays_a_run_under_a_profile_version(filled_home: Path) -> None:
    at = _run("audit")
    assert "balanced@v1" in at.selectbox(key="audit_profile").options
    at.selectbox(key="audit_profile").select("balanced@v1")
    _button(at, "Run audit").click().run()
    assert not at.exception
    assert at.subheader[0].value == "Config changes"
    changes = at.dataframe[0].value
    assert "risk.name" in set(changes["key"])
    assert {s.value for s in at.subheader} >= {"First divergence", "Effect on trades, fees, exposure and PnL"}


def test_audit_page_refuses_an_override_out_of_bounds(filled_home: Path) -> None:
    at = _run("audit")
    at.text_area(key="audit_sets").input("risk.entry_min_p_up=0.4")
    _button(at, "Run audit").click().run()
    assert "Refused:" in _texts(at) and "'risk.entry_min_p_up' must be >= 0.5, was 0.4" in _texts(at)


def test_models_page_lists_the_registry_and_the_live_model(filled_home: Path) -> None:
    at = _run("models")
    assert "**Live model:** lgbm_blend_v1@" in _texts(at)
    table = at.dataframe[0].value
    assert table["live"].tolist() == [True] and table["status"].tolist() == ["promoted"]
    assert at.dataframe[-1].value.columns.tolist() == ["run", "model version"]


def test_models_page_on_an_empty_registry_says_how_to_train(acts_home: Path) -> None:
    at = _run("models")
    assert "acts train" in _texts(at)


def test_models_page_says_none_promoted(filled_home: Path) -> None:
    registry = filled_home / "registry" / "models"
    for record in registry.glob("*/record.json"):
        record.write_text(record.read_text().replace('"status": "promoted"', '"status": "retired"'))
    at = _run("models")
    assert "**Live model:** none promoted" in _texts(at)


def test_audit_page_under_the_run_own_profile_finds_no_divergence(filled_home: Path) -> None:
    at = _run("audit")
    at.selectbox(key="audit_profile").select("aggressive@v1")
    _button(at, "Run audit").click().run()
    assert not at.exception
    assert "None: every decision is the same." in [m.value for m in at.markdown]
    assert "Changed decisions" not in {s.value for s in at.subheader}
