"""The reliability drills, small: each drill runs a few trials and must count 0 lost, duplicated and torn.

`make drill` runs the same code with 100 trials each and large fuzz counts; here the trials are few so
the suite stays quick, and the detectors are shown to count real damage (a drill that always says 0
would prove nothing).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backend.bundles.compat import running
from backend.bundles.store import BundleStore
from backend.data.lake import lake_files
from backend.kraken.client import KrakenCallError, KrakenErrorClass
from backend.runtime.paper import JOURNAL_FILE, PaperRuntimeError
from backend.sandbox.coinapi import CoinApiEmulator
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.config.compose import compose_spec
from execution.brokers.kraken import KrakenBroker
from scripts.cli import main
from scripts.commands.drill import record
from scripts.drills import broker_faults, bundles, fuzz, kills, report
from scripts.drills.fuzz import FuzzTarget


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("drill-run"), lambda _m: None)


@pytest.fixture(scope="module")
def results(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    said: list[str] = []
    out = report.run_drills(run_dir, tmp_path_factory.mktemp("drill-work"), 3, 20, 5, said.append)
    assert said[0] == "SIGKILL drills, 3 trials each"
    return out


def test_every_sigkill_drill_counts_zero_lost_duplicated_and_torn(results: dict[str, Any]) -> None:
    drills = {d.name: d for d in results["kills"]}

    assert sorted(drills) == [
        "backfill", "bundle install", "incremental ingest", "kill-switch engage", "paper runtime", "profile commit"
    ]  # fmt: skip
    for drill in drills.values():
        assert (drill.trials, drill.lost, drill.duplicated, drill.torn, drill.identical) == (3, 0, 0, 0, 3), drill
        assert drill.killed >= 1, drill
    for name in ("backfill", "incremental ingest"):
        assert drills[name].notes == {kills.DIFFERING: 0}, drills[name]
    bundle = drills["bundle install"].notes
    assert bundle[bundles.OLD_NOTE] + bundle[bundles.NEW_NOTE] == 3
    assert sum(v for k, v in bundle.items() if k.startswith("killed while ")) == drills["bundle install"].killed
    assert drills["paper runtime"].notes["trials with open orders at the kill"] >= 1
    assert drills["profile commit"].notes["commits durable after the kill (acknowledged or not)"] >= drills["profile commit"].notes[
        "commits acknowledged before the kill"
    ]


def test_the_kill_switch_stops_new_risk_from_the_next_event_and_cancels_open_orders(results: dict[str, Any]) -> None:
    switch = results["switch"]

    assert switch.engagements >= 5 and switch.with_open_orders == switch.engagements
    assert switch.cancelled_at_next_event == switch.open_orders_at_kill > 0
    assert switch.left_open_after_next_event == 0
    assert switch.new_risk_admitted_after_kill == 0 and switch.max_events_until_no_new_risk == 0
    assert "per_event" not in switch.as_dict() and len(switch.per_event) == switch.engagements


def test_fuzzing_finds_no_unclear_refusal_and_counts_its_cases(results: dict[str, Any]) -> None:
    targets = results["fuzz"]

    assert [t.name.split(" ")[0] for t in targets] == ["config", "Hydra", "profile", "CLI", "attributable"]
    for target in targets:
        assert target.unclear == [], target.unclear
        assert target.cases == target.accepted + target.refused + target.noop > 0
    assert targets[0].fields > 400 and targets[3].fields > 80


def test_every_provider_fault_is_handled_with_evidence(results: dict[str, Any]) -> None:
    faults = results["faults"]

    assert len(faults.cases) == 21 and faults.handled == 21
    assert {c.source for c in faults.cases} == {"coinapi", "kraken", "kraken_trades"}
    assert all(c.evidence > 0 for c in faults.cases)
    assert faults.as_dict()["handled"] == 21


def test_every_broker_call_runs_under_every_fault_and_the_gaps_count_as_not_handled(results: dict[str, Any]) -> None:
    cases = {(c.call, c.fault): c for c in results["faults"].broker}

    assert len(cases) == len(results["faults"].broker) == 49
    assert sorted({call for call, _ in cases}) == sorted(call for call, *_ in broker_faults.CALLS)
    assert all(c.orders <= 1 for c in cases.values())  # never a duplicate order on Kraken
    for fault in ("EAPI:Rate limit exceeded (429)", "5xx", "timeout", "5xx after accept", "timeout after accept", "EAPI:Invalid nonce"):
        sent = cases[("AddOrder (submit)", fault)]  # retried, or reconciled by client id: one order, its fill applied once
        assert (sent.handled, sent.orders, sent.fills) == (True, 1, 1), sent
    for fault, error_class in (("EOrder:Insufficient funds", "insufficient_funds"), ("EGeneral:Invalid arguments", "invalid_arguments")):
        refused = cases[("AddOrder (submit)", fault)]
        assert (refused.handled, refused.orders, refused.fills, refused.evidence) == (True, 0, 0, (error_class,)), refused
    for call in ("OpenOrders (fill read)", "ClosedOrders (fill read)"):
        assert cases[(call, "5xx")].handled and cases[(call, "5xx")].evidence == ("unavailable",)
    # A truncated body is a malformed answer (read back by client id), a failed CancelAll is retried, a failed
    # start reconcile is retried and then fails closed. The gaps left (ADR-072) are a permanent refusal of the
    # start reconcile's calls: the stranger stays open and the session refuses to trade.
    truncated = cases[("AddOrder (submit)", "truncated body")]
    assert truncated.handled and "malformed_answer" in truncated.evidence and truncated.fills == 1
    assert cases[("CancelAll (kill switch)", "5xx")].handled and "Kraken order canceled" in cases[("CancelAll (kill switch)", "5xx")].detail
    assert cases[("CancelAll (kill switch)", "5xx after accept")].handled
    assert cases[("CancelOrder (start reconcile)", "5xx")].handled
    gaps = sorted(key for key, c in cases.items() if not c.handled)
    assert gaps == [("CancelOrder (start reconcile)", "EGeneral:Invalid arguments"),
                    ("OpenOrders (start reconcile)", "EGeneral:Invalid arguments")]  # fmt: skip
    assert results["faults"].broker_handled == sum(c.handled for c in cases.values()) == 47
    assert results["faults"].as_dict()["broker_cases"] == 49


def test_a_fill_never_read_and_an_order_placed_despite_a_refusal_count_as_not_handled(tmp_path: Path) -> None:
    bars = kills.drill_bars(60, 11).filter(pl.col("symbol") == "BTC")
    markets = broker_faults.load_markets(bars)
    reads_fail = FaultSpec(private_faults=(PrivateFault(endpoint="OpenOrders", calls=(1, 2, 3), status=502),))

    lost = broker_faults.broker_case("OpenOrders (fill read)", "OpenOrders", "session", "5xx", reads_fail, bars, markets, tmp_path / "a")
    # Named a refusal, but the 5xx only delays the order: Kraken holds one where the refusal must leave none.
    placed = broker_faults.broker_case("AddOrder (submit)", "AddOrder", "session", "EOrder:Insufficient funds",
                                       FaultSpec(private_faults=(PrivateFault(endpoint="AddOrder", calls=(1,), status=502),)),
                                       bars, markets, tmp_path / "b")  # fmt: skip

    assert (lost.handled, lost.orders, lost.fills, lost.evidence) == (False, 1, 0, ("unavailable",) * 3)
    assert "1 filled, 0 fill(s) applied, journal ACKNOWLEDGED" in lost.detail
    assert (placed.handled, placed.orders, placed.fills) == (False, 1, 1)


def test_a_start_reconcile_that_raises_or_a_scene_without_evidence_counts_as_not_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = kills.drill_bars(60, 11).filter(pl.col("symbol") == "BTC")
    markets = broker_faults.load_markets(bars)
    # No fault: the stranger is cancelled, but nothing in broker_events shows a fault was met.
    quiet = broker_faults.broker_case("OpenOrders (start reconcile)", "OpenOrders", "start", "none", FaultSpec(), bars, markets, tmp_path / "a")

    def raising(self: object) -> None:  # the broker before ADR-072: the start reconcile let Kraken's error out
        raise KrakenCallError("OpenOrders", KrakenErrorClass.UNAVAILABLE, "502")

    monkeypatch.setattr(KrakenBroker, "restored_problem", raising)
    raised = broker_faults.broker_case("OpenOrders (start reconcile)", "OpenOrders", "start", "5xx",
                                       FaultSpec(private_faults=(PrivateFault(endpoint="OpenOrders", calls=(1,), status=502),)),
                                       bars, markets, tmp_path / "b")  # fmt: skip

    assert (quiet.handled, quiet.detail) == (False, "stranger order canceled; no error class in broker_events")
    assert not raised.handled and raised.detail.startswith("stranger order open; start raised unavailable")


def test_the_page_has_date_machine_and_every_table(results: dict[str, Any]) -> None:
    page = report.render(results, 3, 20, 5, report.now(), 12.0, report.machine())

    assert page.startswith("# Reliability drills\n")
    assert "cores, Python 3.11" in page and "load average" in page
    for heading in ("## SIGKILL at random points", "## Kill switch engaged", "## Fuzzing (Hypothesis)", "## Emulator faults",
                    "### Broker faults"):  # fmt: skip
        assert heading in page
    assert "| AddOrder (submit) | 5xx after accept | yes | 1 | 1 | unavailable |" in page
    assert "| OpenOrders (start reconcile) | EGeneral:Invalid arguments | **no** |" in page
    assert "47 of 49 broker cases handled" in page
    assert "| backfill | 3 |" in page and "| bundle install | 3 |" in page


def test_acts_drill_writes_the_page(run_dir: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    page = tmp_path / "reliability.md"

    code = main(["drill", "--trials", "1", "--fuzz-examples", "3", "--run-dir", str(run_dir), "--work", str(tmp_path / "w"),
                 "--out", str(page)], out, io.StringIO())  # fmt: skip

    assert code == 0 and out.getvalue() == f"drill figures written to {page}\n"
    assert "| paper runtime | 1 |" in page.read_text(encoding="utf-8")


def test_acts_drill_refuses_an_output_folder_that_does_not_exist(tmp_path: Path) -> None:
    err = io.StringIO()

    assert main(["drill", "--out", str(tmp_path / "no" / "r.md")], io.StringIO(), err) == 2
    assert "folder " in err.getvalue() and "does not exist" in err.getvalue()


# ---------------------------------------------------------------- the detectors count real damage
def test_lake_counts_sees_lost_duplicated_changed_unreadable_and_leftover_files(tmp_path: Path) -> None:
    bars = kills.drill_bars(60, 3)
    home = tmp_path / "home"
    with CoinApiEmulator(bars, api_key=kills.KEY, universe=compose_spec([]).universe) as emulator:
        assert kills.cli_child(kills._env(emulator.base_url, home), ["data", "backfill", "--symbols", "BTC,ETH"]) == 0
    assert kills.lake_counts(home, bars) == (0, 0, 0)
    btc, eth = lake_files(home / "lake", "coinapi", "5m", ["BTC"])[0], lake_files(home / "lake", "coinapi", "5m", ["ETH"])[0]
    frame = pl.read_parquet(btc)
    frame.slice(1).write_parquet(btc)  # one bar lost
    eth_frame = pl.read_parquet(eth)
    pl.concat([eth_frame, eth_frame.head(1)]).write_parquet(eth)  # one bar twice
    assert kills.lake_counts(home, bars) == (1, 1, 0)
    frame.with_columns(pl.when(pl.col("ts") == frame["ts"][5]).then(1.0).otherwise(pl.col("close")).alias("close")).write_parquet(btc)
    (btc.parent / f".{btc.name}.tmp-1").write_bytes(b"half")
    assert kills.lake_counts(home, bars)[2] == 2  # the changed close and the leftover temporary
    btc.write_bytes(b"not parquet")
    assert kills.lake_counts(home, bars) == (len(bars), 0, 2)  # unreadable: nothing can be counted as present


def test_the_bundle_detectors_see_a_torn_state_a_half_copied_folder_and_a_changed_log(tmp_path: Path) -> None:
    new = bundles.release(bundles.SHIPPED, tmp_path / "shipped", "1.1.0")
    reference = BundleStore(tmp_path / "reference")
    for source in (bundles.SHIPPED, new):
        reference.install(source, "drill", "drill install", 1000, running())
    store = BundleStore(tmp_path / "store")
    shutil.copytree(reference.root, store.root)
    old_key, new_key = "sim_v1/1.0.0", "sim_v1/1.1.0"
    assert bundles.after_kill(store, old_key, new_key) == (new_key, 0)
    assert bundles.store_counts(store, reference) == (0, 0, 0)
    assert bundles.after_kill(store, old_key, "sim_v1/9.9.9") == (new_key, 1)  # neither the old nor the new bundle

    (store.folder(new_key) / "smoke" / "sample.parquet").write_bytes(b"half")  # the active folder half copied
    assert bundles.after_kill(store, old_key, new_key) == (None, 1)
    assert bundles.store_counts(store, reference) == (0, 0, 2)  # the folder differs and does not verify
    shutil.rmtree(store.folder(new_key))
    shutil.copytree(reference.folder(new_key), store.folder(new_key))
    (store.root / ".staging-1").mkdir()
    assert bundles.store_counts(store, reference) == (0, 0, 1)  # a staging folder left behind
    (store.root / ".staging-1").rmdir()

    state = json.loads(store.state_path.read_text(encoding="utf-8"))
    first, second = state["log"]
    store.state_path.write_text(json.dumps({**state, "log": [first, first]}), encoding="utf-8")
    assert bundles.store_counts(store, reference) == (1, 1, 0)  # the install entry lost, the first held twice
    store.state_path.write_text(json.dumps({**state, "active": old_key, "log": [first, second]}), encoding="utf-8")
    assert bundles.after_kill(store, old_key, new_key) == (None, 1)  # the state names a bundle its id is not
    assert bundles.store_counts(store, reference) == (0, 0, 1)
    store.state_path.write_text(json.dumps({**state, "active": None, "active_id": None}), encoding="utf-8")
    assert bundles.after_kill(store, old_key, new_key) == (None, 1)  # no bundle active at all
    store.state_path.write_text("{", encoding="utf-8")
    assert bundles.after_kill(store, old_key, new_key) == (None, 1)


def test_bundle_kill_points_cover_every_phase_and_wait_for_it(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "bundles")
    rng = random.Random(0)
    points: dict[str, Any] = {}
    while len(points) < len(bundles.PHASES):
        phase, ready, delay = bundles.kill_point(rng, store, "sim_v1/1.1.0", 3)
        points.setdefault(phase, ready)
        assert 0.0 <= delay <= 0.3
    assert not any(ready() for ready in points.values())  # nothing started yet

    staging = store.root / ".staging-7" / "model"
    staging.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (staging / name).write_text("x", encoding="utf-8")
    assert points["copying the files"]() and points["verifying the copy"]()
    assert not points["switching"]()
    store.folder("sim_v1/1.1.0").mkdir(parents=True)
    assert points["switching"]() and not points["smoke-checking"]()
    store.state_path.write_text(json.dumps({"active": "sim_v1/1.0.0"}), encoding="utf-8")
    assert not points["smoke-checking"]()
    store.state_path.write_text(json.dumps({"active": "sim_v1/1.1.0"}), encoding="utf-8")
    assert points["smoke-checking"]()


def test_paper_counts_calls_a_state_the_runtime_refuses_torn(results: dict[str, Any], run_dir: Path, tmp_path: Path) -> None:
    feed = kills.load_recorded(run_dir, kills.ModelRegistry(tmp_path / "r"), True)
    state = tmp_path / "state"
    runtime = kills.PaperRuntime(feed, state)
    runtime.run(0.0, 3)
    runtime.close()
    with sqlite3.connect(state / JOURNAL_FILE) as conn:  # an open order the checkpoint does not know
        conn.execute("INSERT INTO orders VALUES ('ghost', 'BTC', 'buy', '1', 'NEW', 0)")
    with pytest.raises(PaperRuntimeError):
        kills.PaperRuntime(feed, state)

    assert kills.paper_counts(feed, state, state / JOURNAL_FILE, 5) == (0, 0, 1)


def test_a_fuzz_target_keeps_every_unclear_case_with_its_input() -> None:
    target = FuzzTarget("t")
    for outcome in ("accepted", "refused", "no-op", "a write on refusal"):
        target.count(outcome, "x" * 400)

    assert (target.cases, target.accepted, target.refused, target.noop) == (4, 1, 1, 1)
    assert target.unclear == ["a write on refusal: " + "x" * 300]
    assert target.as_dict()["unclear"] == 1


def test_command_lines_for_the_cli_fuzz_fill_every_other_required_argument() -> None:
    arguments = {(path, a.dest): (a, parser) for path, a, parser in fuzz.cli_arguments(fuzz.build_parser())}
    speed, run = arguments[(("run",), "speed")]
    assignments, change = arguments[(("profile", "set"), "assignments")]

    assert fuzz._argv(("run",), run, speed, "nan") == [
        "run", "--mode", "paper", "--source", "recorded", "--run-dir", "1", "--speed=nan"
    ]
    assert fuzz._argv(("profile", "set"), change, assignments, "k=v") == [
        "profile", "set", "--reason", "x", "--author", "x", "--", "k=v"
    ]


def test_replaced_sets_a_dotted_key_through_lists_and_maps() -> None:
    tree = {"a": [{"b": 1}, {"b": 2}], "c": {"d": 3}}

    assert fuzz.replaced(tree, "a.1.b", 9) == {"a": [{"b": 1}, {"b": 9}], "c": {"d": 3}}
    assert fuzz.replaced(tree, "a.0", None) == {"a": [None, {"b": 2}], "c": {"d": 3}}
    assert sorted(fuzz.leaves(tree)) == ["a.0.b", "a.1.b", "c.d"]
    assert tree == {"a": [{"b": 1}, {"b": 2}], "c": {"d": 3}}


def test_the_environment_block_restores_what_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTS_DRILL_A", "old")
    monkeypatch.delenv("ACTS_DRILL_B", raising=False)
    with kills.environment({"ACTS_DRILL_A": "new", "ACTS_DRILL_B": "set"}):
        assert (kills.os.environ["ACTS_DRILL_A"], kills.os.environ["ACTS_DRILL_B"]) == ("new", "set")

    assert kills.os.environ["ACTS_DRILL_A"] == "old" and "ACTS_DRILL_B" not in kills.os.environ


def test_copying_a_missing_template_makes_an_empty_home(tmp_path: Path) -> None:
    kills._copy_home(tmp_path / "none", tmp_path / "home")
    assert list((tmp_path / "home").iterdir()) == []
    shutil.rmtree(tmp_path / "home")


def test_the_children_run_the_product_code_in_process(run_dir: Path, tmp_path: Path) -> None:
    db, ack = tmp_path / "acts.db", tmp_path / "ack"
    kills.profile_child(str(db), 2, str(ack))
    assert kills._acks(ack) == [2, 3]  # the presets are v1 of every profile
    kills.control_child(str(tmp_path / "control.db"), 3, str(tmp_path / "ack2"))
    assert kills._acks(tmp_path / "ack2") == [1, 2, 3]
    kills.paper_child(str(run_dir), str(tmp_path / "state"), "999999:before_event", 4)  # a crash point never reached
    runtime = kills.PaperRuntime(kills.load_recorded(run_dir, kills.ModelRegistry(tmp_path / "r"), True), tmp_path / "state")
    assert runtime.next_index == 4
    runtime.close()
    assert kills.KillDrill("x", trials=1).as_dict()["trials"] == 1


def test_judge_accepts_what_validates_and_names_what_it_refuses() -> None:
    from backend.errors import ConfigError

    def refuse() -> None:
        raise ConfigError("'risk.x' must be a finite number, was nan")

    assert fuzz.judge(lambda: None, "risk.x", "e") == ("accepted", "e")
    assert fuzz.judge(refuse, "risk.x", "e")[0] == "refused"
    assert fuzz.judge(refuse, "data.days", "e")[0] == "refusal does not name the field"


def test_a_refused_edit_that_changes_nothing_is_a_no_op_for_the_fuzz_not_an_unclear_refusal(tmp_path: Path) -> None:
    change = ["profile", "set", "position_size_pct=0.14", "--author", "dana", "--reason", "r"]
    out, err = io.StringIO(), io.StringIO()
    with kills.environment({"ACTS_HOME": str(tmp_path / "home")}):
        assert main(change, out, io.StringIO()) == 0
        assert main(change, out, err) == 2

    assert err.getvalue() == (
        "acts: error: profile 'balanced': v2 already holds position_size_pct=0.14; no change to make, nothing written\n"
    )
    assert fuzz.is_no_change(err.getvalue())
    assert not fuzz.is_no_change("acts: error: 'author' must not be empty, was ''\n")
    assert not fuzz.is_no_change("acts: error: profile 'x': y; no change to make, nothing written\nTraceback\n")
    # Run whole, the attributable commands meet such no-ops once a first valid value was committed.
    target = fuzz.fuzz_attribution(60, tmp_path / "fuzz")
    assert target.unclear == [] and target.noop > 0
    assert target.cases == target.accepted + target.refused + target.noop == 60
