"""`acts control kill | resume | status` through the real command entry point."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from backend.control import ControlStore
from scripts.cli import main


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_status_of_a_fresh_home_is_off_with_no_actions(acts_home: Path) -> None:
    code, out, _ = _run("control", "status")

    assert code == 0
    assert out == (
        "kill switch off: trading allowed\n"
        "  since        never\n"
        "  actions      0\n"
        f"  database     {acts_home / 'acts.db'}\n"
    )


def test_kill_then_status_json_then_resume_round_trip(acts_home: Path) -> None:
    code, out, _ = _run("control", "kill", "--reason", "exchange outage", "--author", "operator1")
    assert code == 0
    assert out.startswith("kill switch ON: no new risk is admitted\n  since        20")
    assert "  last action  kill by operator1 at " in out and out.rstrip().endswith(f"database     {acts_home / 'acts.db'}")
    assert " UTC: exchange outage\n" in out

    code, out, _ = _run("control", "status", "--json")
    data = json.loads(out)
    assert code == 0 and data["killed"] is True and data["actions"] == 1
    assert data["last_action"]["author"] == "operator1" and data["last_action"]["reason"] == "exchange outage"
    assert data["since_ms"] == data["last_action"]["ts_ms"] > 0

    code, out, _ = _run("control", "resume", "--reason", "back", "--author", "lead")
    assert code == 0 and out.startswith("kill switch off: trading allowed\n")
    with ControlStore(acts_home / "acts.db") as store:
        assert [(a.action, a.author) for a in store.actions()] == [("kill", "operator1"), ("resume", "lead")]
        assert store.is_killed() is False


def test_a_refused_reason_exits_2_with_the_field_named_and_logs_nothing(acts_home: Path) -> None:
    code, out, err = _run("control", "kill", "--reason", " ", "--author", "lead")

    assert code == 2 and out == ""
    assert err == "acts: error: 'reason' must be 1 to 500 characters (after trimming), was 0: ' '\n"
    assert not (acts_home / "acts.db").exists()  # refused before the database is opened


def test_kill_requires_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["control", "kill"])

    assert caught.value.code == 2
    assert "--reason" in capsys.readouterr().err
