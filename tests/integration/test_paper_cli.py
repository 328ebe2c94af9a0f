"""Integration tests for `acts run --mode paper`: the command, the model rule and refused state folders."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
import io
import json
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from paper_helpers import record_run

from backend.audit.decisions import decision_log_sha256, read_decisions
from backend.clock import WallClock
from backend.errors import ModelError
from backend.models.bundle import load_bundle
from backend.models.registry import ModelRegistry, StatusTrigger
from backend.profiles.store import ProfileStore
from backend.runtime.paper import PaperRuntime, PaperRuntimeError, load_recorded
from scripts.cli import main


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return record_run(tmp_path_factory.mktemp("paper-cli"))


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def paper_args(run_dir: Path, *extra: str) -> list[str]:
    return ["run", "--mode", "paper", "--source", "recorded", "--run-dir", str(run_dir), "--speed", "0", *extra]


def test_acts_run_paper_continues_in_the_default_state_folder(recorded: tuple[Path, dict[str, object]], acts_home: Path) -> None:
    run_dir, summary = recorded

    code1, out1, err1 = acts(*paper_args(run_dir, "--allow-run-bundle", "--max-events", "100"))
    code2, out2, err2 = acts(*paper_args(run_dir, "--allow-run-bundle"))

    first, second = json.loads(out1), json.loads(out2)
    assert (code1, code2) == (0, 0)
    assert first["state"] == second["state"] == str(acts_home / "paper" / summary["run"])
    assert (first["next_index"], first["finished"]) == (100, False)
    assert "continuing at event 0 of 2880" in err1 and "continuing at event 100 of 2880" in err2
    assert second["finished"] and second["decision_log_sha256"] == summary["decision_log_sha256"]
    assert second["ledger_reconciles"] and second["fills"] == summary["fills"]
    assert decision_log_sha256(read_decisions(Path(second["state"]) / "decisions.parquet")) == summary["decision_log_sha256"]


def test_acts_run_paper_uses_the_promoted_model_without_the_run_bundle_flag(
    recorded: tuple[Path, dict[str, object]], acts_home: Path, tmp_path: Path
) -> None:
    run_dir, summary = recorded
    registry = ModelRegistry(acts_home / "registry" / "models")
    bundle = load_bundle(run_dir / "model")
    registry.register(bundle, {}, 1, "test")
    registry.transition(bundle.version, StatusTrigger.PROMOTE, "test", 2, author="test")

    code, out, _ = acts(*paper_args(run_dir, "--state", str(tmp_path / "state")))

    assert code == 0 and json.loads(out)["decision_log_sha256"] == summary["decision_log_sha256"]


def test_acts_run_paper_records_the_profile_store_version_in_decisions(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    db = tmp_path / "profiles.db"
    with ProfileStore(db, WallClock()) as store:
        version, _ = store.active()

    code, out, _ = acts(*paper_args(recorded[0], "--allow-run-bundle", "--state", str(tmp_path / "s"), "--profile-store", str(db)))

    assert code == 0 and json.loads(out)["finished"]
    with sqlite3.connect(tmp_path / "s" / "journal.sqlite") as conn:
        rows = [json.loads(r[0])["profile_version"] for r in conn.execute("SELECT row FROM paper_decisions")]
    assert rows and set(rows) == {version}


def test_acts_run_paper_refuses_a_model_that_is_not_promoted(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    code, _, err = acts(*paper_args(recorded[0], "--state", str(tmp_path / "state")))

    assert code == 2 and "promoted is none" in err and "--allow-run-bundle" in err
    assert not (tmp_path / "state").exists()


def test_load_recorded_refuses_a_bundle_other_than_the_promoted_one(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    bundle = load_bundle(recorded[0] / "model")
    other = registry.path("other@" + "0" * 16)
    other.mkdir(parents=True)
    record = {"version": "other@" + "0" * 16, "status": "promoted", "created_ms": 1}
    (other / "record.json").write_text(json.dumps(record), encoding="utf-8")

    with pytest.raises(ModelError, match=f"the run's bundle is {bundle.version}, promoted is other@0000000000000000"):
        load_recorded(recorded[0], registry, allow_run_bundle=False)


def test_load_recorded_refuses_a_folder_without_a_recorded_run(tmp_path: Path) -> None:
    with pytest.raises(PaperRuntimeError, match=f"--run-dir {tmp_path} is not a recorded run"):
        load_recorded(tmp_path, ModelRegistry(tmp_path / "r"), allow_run_bundle=True)


def test_load_recorded_refuses_altered_inputs(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(recorded[0], tmp_path / "copy"))
    bars = pl.read_parquet(copy / "inputs.parquet")
    bars.with_columns(pl.col("close") * 1.01).write_parquet(copy / "inputs.parquet")

    with pytest.raises(PaperRuntimeError, match="does not match its recorded hash"):
        load_recorded(copy, ModelRegistry(tmp_path / "r"), allow_run_bundle=True)


@pytest.mark.parametrize(("speed", "max_events", "message"), [(-1.0, None, "--speed must be >= 0"), (0.0, 0, "--max-events must be >= 1, was 0"),
                                                                (float("nan"), None, "--speed must be a finite number, was nan")])
def test_bad_speed_or_event_limit_is_refused_before_any_event(
    recorded: tuple[Path, dict[str, object]], tmp_path: Path, speed: float, max_events: int | None, message: str
) -> None:
    feed = load_recorded(recorded[0], ModelRegistry(tmp_path / "r"), allow_run_bundle=True)
    runtime = PaperRuntime(feed, tmp_path / "state")

    with pytest.raises(PaperRuntimeError, match=message):
        runtime.run(speed, max_events)
    assert runtime.result(0).next_index == 0
    runtime.close()


def test_a_state_folder_of_another_run_is_refused(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    feed = load_recorded(recorded[0], ModelRegistry(tmp_path / "r"), allow_run_bundle=True)
    PaperRuntime(feed, tmp_path / "state").close()

    with pytest.raises(PaperRuntimeError, match="belongs to another run"):
        PaperRuntime(dataclasses.replace(feed, identity="another"), tmp_path / "state")


def test_a_state_folder_whose_ledger_does_not_reconcile_is_refused(recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    feed = load_recorded(recorded[0], ModelRegistry(tmp_path / "r"), allow_run_bundle=True)
    runtime = PaperRuntime(feed, tmp_path / "state")
    runtime.run(max_events=2400)  # past the first fills (the SMALL run first buys at event 2160)
    runtime.close()
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as conn:
        conn.execute("DELETE FROM paper_fills WHERE seq = 0")

    with pytest.raises(PaperRuntimeError, match="ledger reconciles False"):
        PaperRuntime(feed, tmp_path / "state")


def test_acts_control_kill_between_two_paper_sessions_cancels_and_blocks_entries(
    recorded: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    acts(*paper_args(recorded[0], "--allow-run-bundle", "--state", str(state), "--max-events", "2161"))  # the buys of event 2160 are still open
    kill_code, _, _ = acts("control", "kill", "--reason", "test", "--author", "ops")

    code, out, _ = acts(*paper_args(recorded[0], "--allow-run-bundle", "--state", str(state)))

    result = json.loads(out)
    assert (kill_code, code, result["killed"], result["ledger_reconciles"]) == (0, 0, True, True)
    assert result["decision_log_sha256"] != recorded[1]["decision_log_sha256"]
    with sqlite3.connect(state / "journal.sqlite") as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM paper_actions ORDER BY seq")]
        refused = conn.execute("SELECT count(*) FROM paper_decisions WHERE row LIKE '%KILL_SWITCH_ACTIVE%'").fetchone()[0]
    assert actions == ["profile", "kill_switch", "cancel"] and refused > 0


def test_a_state_folder_whose_journal_holds_an_order_the_checkpoint_does_not_is_refused(
    recorded: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    feed = load_recorded(recorded[0], ModelRegistry(tmp_path / "r"), allow_run_bundle=True)
    runtime = PaperRuntime(feed, tmp_path / "state")
    runtime.run(max_events=5)
    runtime.journal.record_new("forged-1", "BTC", "buy", Decimal("1"), 0, "DECISION")  # open in the journal only
    runtime.close()

    with pytest.raises(PaperRuntimeError, match=r"does not reconcile: journal open orders \['forged-1'\], checkpoint open orders \[\]"):
        PaperRuntime(feed, tmp_path / "state")
