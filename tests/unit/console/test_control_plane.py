"""The control plane's operator API: status and gates, kill switch, profile edits, models, audits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from console_helpers import RUN_ID

from backend.config.compose import compose_spec
from backend.config.schema import ExposureLimitSpec
from backend.operator import plane
from backend.operator.runs import find_run
from backend.control.store import ControlStore
from backend.clock import SimulatedClock, WallClock
from backend.errors import AuditError, ControlError
from backend.home import Home
from backend.profiles.errors import ProfileError, ProfileValueError, StaleProfileError
from backend.profiles.store import ProfileStore

CLOCK = SimulatedClock(1_800_000_000_000)
BALANCED = compose_spec([]).risk


def test_gate_figures_compare_each_gate_with_the_profile_bound_in_its_unit_mode() -> None:
    profile = BALANCED.model_copy(update={
        "max_concurrent_positions": 2,
        "max_total_exposure": ExposureLimitSpec(mode="absolute", value=1000.0),
        "max_cluster_exposure": ExposureLimitSpec(mode="pct_of_pv", value=0.1),
    })  # fmt: skip
    values = {"BTC": 600.0, "ETH": 500.0, "DOGE": 0.0, "XYZ": 50.0}
    clusters = {"BTC": "majors", "ETH": "majors", "DOGE": "memes"}
    gates = {g.gate: g for g in plane.gate_figures(profile, values, 9000.0, 10000.0, clusters, killed=False)}
    assert (gates["open positions"].figure, gates["open positions"].bound, gates["open positions"].within) == (3.0, 2.0, False)
    assert (gates["total exposure"].figure, gates["total exposure"].bound, gates["total exposure"].within) == (1150.0, 1000.0, False)
    assert gates["total exposure"].unit == "USD (absolute 1000)"
    assert gates["drawdown"].figure == pytest.approx(0.1) and gates["drawdown"].bound == profile.max_drawdown_pct
    assert gates["cluster exposure: majors"].figure == 1100.0 and gates["cluster exposure: majors"].bound == pytest.approx(900.0)
    assert not gates["cluster exposure: majors"].within and gates["cluster exposure: memes"].within
    assert gates["cluster exposure: unknown"].figure == 50.0
    assert gates["kill switch"].within
    killed = {g.gate: g for g in plane.gate_figures(profile, {}, 0.0, 0.0, {}, killed=True)}
    assert (killed["kill switch"].figure, killed["kill switch"].within, killed["drawdown"].figure) == (1.0, False, 0.0)


def test_status_of_an_empty_home_names_no_source_and_the_active_preset(acts_home: Path) -> None:
    home = Home(acts_home)
    assert plane.is_empty(home)
    status = plane.runtime_status(home, CLOCK)
    assert (status.health, status.source, status.last_event_ms, status.lag_ms) == (plane.Health.NO_RUNTIME, "none", None, None)
    assert status.active_profile.startswith("balanced@v1#") and not status.kill_switch.killed
    assert [g.gate for g in status.gates] == ["kill switch", "drawdown", "open positions", "total exposure"]


def test_status_follows_the_newest_started_paper_session(filled_home: Path) -> None:
    home = Home(filled_home)
    journal = filled_home / "paper" / "default" / "journal.sqlite"
    written = journal.stat().st_mtime_ns // 1_000_000
    running = plane.runtime_status(home, SimulatedClock(written + 1000))
    assert (running.health, running.source, running.mode) == (plane.Health.RUNNING, "paper/default", "paper")
    assert running.lag_ms == written + 1000 - running.last_event_ms
    stale = plane.runtime_status(home, SimulatedClock(written + 16 * 60 * 1000))
    assert stale.health is plane.Health.STALE
    # The session holding DOGE becomes the newest: its position shows in the gates, valued at its marks.
    os.utime(filled_home / "paper" / "holding" / "journal.sqlite", ns=(journal.stat().st_mtime_ns + 10**9,) * 2)
    holding = plane.runtime_status(home, SimulatedClock(written + 2000))
    gates = {g.gate: g for g in holding.gates}
    assert holding.source == "paper/holding" and gates["open positions"].figure == 1.0
    assert gates["total exposure"].figure > 0 and any(g.startswith("cluster exposure: ") for g in gates)


def test_status_of_a_session_not_started_when_it_is_the_only_one(filled_home: Path) -> None:
    for name in ("default", "holding"):
        shutil.rmtree(filled_home / "paper" / name)
    status = plane.runtime_status(Home(filled_home), WallClock())
    assert (status.health, status.source, status.last_event_ms) == (plane.Health.NOT_STARTED, "paper/fresh", None)


def test_status_without_a_session_shows_the_newest_run_final_state(filled_home: Path) -> None:
    shutil.rmtree(filled_home / "paper")
    status = plane.runtime_status(Home(filled_home), CLOCK)
    assert (status.health, status.source, status.mode) == (plane.Health.NO_RUNTIME, f"runs/{RUN_ID}", "backtest")
    assert status.last_event_ms is not None and status.lag_ms == CLOCK.now_ms() - status.last_event_ms
    assert {g.gate: g for g in status.gates}["drawdown"].figure > 0


def test_kill_and_resume_are_logged_in_the_store_the_cli_reads(acts_home: Path) -> None:
    home = Home(acts_home)
    after = plane.engage_kill_switch(home, " alice ", "drill", CLOCK)
    assert after.killed and after.last_action.author == "alice"
    assert plane.runtime_status(home, CLOCK).kill_switch.killed
    plane.resume_trading(home, "bob", "drill over", CLOCK)
    with ControlStore(acts_home / "acts.db") as store:
        assert [(a.action, a.author, a.reason) for a in store.actions()] == [("kill", "alice", "drill"), ("resume", "bob", "drill over")]
    assert [a.action for a in plane.control_actions(home)] == ["resume", "kill"]
    assert not plane.kill_switch(home).killed


@pytest.mark.parametrize(("author", "reason", "field"), [("", "why", "author"), ("me", "  ", "reason"), ("a\x07", "why", "author")])
def test_kill_without_author_or_reason_is_refused_and_nothing_logged(acts_home: Path, author: str, reason: str, field: str) -> None:
    home = Home(acts_home)
    with pytest.raises(ControlError, match=f"'{field}'"):
        plane.engage_kill_switch(home, author, reason, CLOCK)
    assert plane.kill_switch(home).actions == 0


def test_profile_fields_list_every_field_with_schema_bounds() -> None:
    fields = {f.key: f for f in plane.profile_fields()}
    assert "name" not in fields
    assert fields["max_concurrent_positions"].kind == "integer" and fields["max_concurrent_positions"].bounds == ">= 1, <= 30"
    assert fields["scale_out_fraction"].bounds == "> 0, < 1"
    assert fields["max_total_exposure.mode"].choices == ("pct_of_pv", "absolute")
    assert fields["kill_switch"].kind == "boolean"
    assert set(plane.flatten(BALANCED.model_dump(mode="json"))) - {"name"} == set(fields)


def test_changes_from_form_keep_only_what_differs_read_as_yaml_scalars() -> None:
    current = {"a": 1, "b": {"c": "x", "d": 0.5}, "e": True}
    submitted = {"a": "1", "b.c": "x", "b.d": "0.25", "e": True, "f": "2"}
    assert plane.changes_from_form(current, submitted) == {"b.d": 0.25, "f": 2}
    assert plane.changes_from_form({"a": 1}, {"a": "1.0"}) == {"a": 1.0}
    with pytest.raises(ProfileValueError, match=r"'a' value is not valid YAML, was '\[1'"):
        plane.changes_from_form(current, {"a": "[1"})


def _form(home: Home) -> tuple[dict, int]:
    view = plane.profile_view(home, "balanced", CLOCK)
    flat = plane.flatten(view.latest.tree())
    return {k: (v if isinstance(v, (bool, str)) else str(v)) for k, v in flat.items() if k != "name"}, view.latest.version


def test_a_valid_edit_commits_a_new_version_with_author_and_reason(acts_home: Path) -> None:
    home = Home(acts_home)
    form, parent = _form(home)
    form["max_concurrent_positions"] = "5"
    done = plane.commit_profile_edit(home, "balanced", form, "carol", "fewer positions", parent, CLOCK)
    assert (done.version, done.author, done.reason, done.parent_version) == (2, "carol", "fewer positions", 1)
    view = plane.profile_view(home, "balanced", CLOCK)
    assert view.latest.tree()["max_concurrent_positions"] == 5 and view.active_version == 1
    assert [c.key for c in plane.profile_diff(home, "balanced", 1, 2, CLOCK)] == ["max_concurrent_positions"]
    names, active = plane.profile_names(home, CLOCK)
    assert "balanced" in names and active == "balanced"
    activation = plane.activate_profile(home, "balanced", 2, "carol", "use it", CLOCK)
    assert activation.version == 2 and plane.runtime_status(home, CLOCK).active_profile.startswith("balanced@v2#")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_concurrent_positions", "31", r"'max_concurrent_positions' must be <= 30, was 31"),
        ("position_size_pct", "0", r"'position_size_pct' must be > 0"),
        ("max_total_exposure.value", "2.5", r"'value' must be <= 1.0 in pct_of_pv mode"),
    ],
)
def test_an_out_of_bound_edit_is_refused_by_the_server_and_writes_nothing(acts_home: Path, key: str, value: str, message: str) -> None:
    home = Home(acts_home)
    form, parent = _form(home)
    form[key] = value
    with pytest.raises(ProfileValueError, match=message):
        plane.commit_profile_edit(home, "balanced", form, "dave", "too far", parent, CLOCK)
    assert plane.profile_view(home, "balanced", CLOCK).latest.version == 1


def test_a_stale_edit_is_refused_naming_both_versions_and_writes_nothing(acts_home: Path) -> None:
    home = Home(acts_home)
    form, parent = _form(home)
    first = dict(form, max_concurrent_positions="4")
    plane.commit_profile_edit(home, "balanced", first, "erin", "first", parent, CLOCK)
    second = dict(form, max_concurrent_positions="6")
    with pytest.raises(StaleProfileError, match="edit based on v1 is stale: the latest is v2") as refused:
        plane.commit_profile_edit(home, "balanced", second, "frank", "second", parent, CLOCK)
    assert plane.is_stale(refused.value) and not plane.is_stale(ProfileError("x"))
    assert plane.profile_view(home, "balanced", CLOCK).latest.version == 2


def test_an_edit_without_author_or_reason_or_without_change_is_refused(acts_home: Path) -> None:
    home = Home(acts_home)
    form, parent = _form(home)
    with pytest.raises(ProfileValueError, match="'author' must be 1 to 64 characters"):
        plane.commit_profile_edit(home, "balanced", dict(form, min_order_usd="6"), "", "why", parent, CLOCK)
    with pytest.raises(ProfileValueError, match="'reason' must be 1 to 500 characters"):
        plane.commit_profile_edit(home, "balanced", dict(form, min_order_usd="6"), "me", "", parent, CLOCK)
    with pytest.raises(ProfileValueError, match="no changes given"):
        plane.commit_profile_edit(home, "balanced", form, "me", "nothing", parent, CLOCK)
    assert plane.profile_view(home, "balanced", CLOCK).latest.version == 1


def test_models_overview_marks_the_promoted_model_live_with_windows_hashes_and_gates(filled_home: Path) -> None:
    rows = plane.models_overview(Home(filled_home))
    assert len(rows) == 1 and rows[0].live and rows[0].status == "promoted"
    row = rows[0]
    assert len(row.training_windows) == 2 and all(w[0] < w[1] <= w[2] < w[3] for w in row.training_windows)
    assert len(row.inputs_sha256) == 64 and row.gates and all(isinstance(g[1], bool) for g in row.gates)
    assert [h["status"] for h in row.history] == ["candidate", "promoted"]
    assert plane.run_bundles(Home(filled_home)) == [(f"runs/{RUN_ID}", find_run(Home(filled_home), f"runs/{RUN_ID}").summary["model_version"])]
    assert plane.models_overview(Home(filled_home / "nothing")) == []


def test_models_overview_recomputes_a_candidate_gates_against_the_live_model(filled_home: Path) -> None:
    registry = filled_home / "registry" / "models"
    live = next(p for p in registry.iterdir() if not p.name.startswith("."))
    other = registry / (live.name[:-16] + "0" * 16)
    shutil.copytree(live, other)
    record = (other / "record.json").read_text().replace('"status": "promoted"', '"status": "candidate"')
    (other / "record.json").write_text(record.replace(live.name, other.name))
    rows = plane.models_overview(Home(filled_home))
    assert [r.live for r in rows].count(True) == 1 and {r.status for r in rows} == {"promoted", "candidate"}


def test_audit_replays_a_run_under_a_store_profile_and_overrides(filled_home: Path) -> None:
    home = Home(filled_home)
    run = find_run(home, f"runs/{RUN_ID}")
    audit = plane.audit_run(home, run, "balanced@v1", ["risk.entry_min_p_up=0.6", " "], WallClock())
    keys = [c.key for c in audit.changes]
    assert "risk.name" in keys and "risk.entry_min_p_up" in keys
    assert audit.as_dict()["decision_counts"]
    with pytest.raises(ControlError, match="'run' must be a backtest run folder"):
        plane.audit_run(home, find_run(home, "paper/default"), None, ["risk.entry_min_p_up=0.6"], WallClock())


def test_audit_without_any_change_is_refused(filled_home: Path) -> None:
    home = Home(filled_home)
    with pytest.raises(AuditError, match="nothing to audit"):
        plane.audit_run(home, find_run(home, f"runs/{RUN_ID}"), None, [""], WallClock())


def test_money_is_shown_with_two_decimals() -> None:
    assert plane.money(1234.5) == "1,234.50"
