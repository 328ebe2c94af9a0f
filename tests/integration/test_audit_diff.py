"""Config-diff replay audit on real small runs: replays, two-run comparisons, profiles, the CLI."""

from __future__ import annotations

import io
import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.audit.decisions import read_decisions
from backend.clock import SimulatedClock, WallClock
from backend.engine.pipeline import compile_pipeline
from backend.errors import AuditError, ConfigError, ReplayError
from backend.home import Home
from backend.profiles.store import ProfileStore
from backend.runs.audit_diff import (
    SERIES_POINTS,
    AuditDiff,
    audit_replay,
    audit_runs,
    decision_changes,
    divergence_summary,
    gross_exposure,
    load_run_record,
    mark_matrix,
    profile_file_override,
    profile_override,
    render_html,
    render_text,
    store_profile_override,
    thin,
)
from backend.runs.backtest import run_backtest
from scripts.cli import main

# Above the p_up of some of the SMALL run's entries (0.60 to 0.81 on its planted signal), so trades change.
THRESHOLD = "risk.entry_min_p_up=0.65"


def _backtest(root: Path, name: str, *extra: str) -> Path:
    pipeline = compile_pipeline(small_spec("training.num_threads=1", *extra))
    run_backtest(pipeline, Home(root / "home"), root / name, WallClock(), lambda _m: None)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    return {"base": _backtest(root, "base"), "stricter": _backtest(root, "stricter", THRESHOLD)}


@pytest.fixture(scope="module")
def run_dir(runs: dict[str, Path]) -> Path:
    return runs["base"]


@pytest.fixture(scope="module")
def stricter(run_dir: Path) -> AuditDiff:
    return audit_replay(run_dir, [THRESHOLD])


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- replay under a change
def test_a_stricter_entry_threshold_changes_decisions_and_their_effect(stricter: AuditDiff, run_dir: Path) -> None:
    assert stricter.kind == "replay" and stricter.original == str(run_dir) and stricter.replay == f"replay of {run_dir}"
    assert [(c.key, c.old, c.new) for c in stricter.changes] == [("risk.entry_min_p_up", 0.52, 0.65)]
    assert stricter.first_divergence is not None
    changed = stricter.counts["removed"] + stricter.counts["added"] + stricter.counts["changed"]
    assert changed == len(stricter.decisions) > 0
    effect = stricter.effects
    assert any(effect[m]["delta"] not in (0, 0.0, "0.00000000") for m in ("fees_usd", "final_equity_usd", "avg_gross_exposure_usd"))
    for row in effect.values():
        if isinstance(row["original"], str):
            assert Decimal(row["replay"]) - Decimal(row["original"]) == Decimal(row["delta"])
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert effect["trades"]["original"] == summary["fills"]
    assert effect["fees_usd"]["original"] == str(Decimal(summary["fees_paid"]).quantize(Decimal("0.00000001")))
    assert effect["final_equity_usd"]["original"] == summary["final_equity"]


def test_changed_decisions_are_sorted_by_time_and_carry_both_sides(stricter: AuditDiff) -> None:
    keys = [(r["ts"], r["symbol"], r["transition"], r["occurrence"]) for r in stricter.decisions]
    assert keys == sorted(keys)
    for row in stricter.decisions:
        assert (row["original"] is None) == (row["change"] == "added")
        assert (row["replay"] is None) == (row["change"] == "removed")
        for side in (row["original"], row["replay"]):
            if side is not None:
                assert {"reason", "admitted", "gate_reason", "seq"} <= set(side)


def test_the_first_divergence_is_at_or_before_the_first_changed_decision(stricter: AuditDiff) -> None:
    div = stricter.first_divergence
    assert div is not None and div["ts"] <= stricter.decisions[0]["ts"]
    assert div["time"].endswith(" UTC") and isinstance(div["seq"], int)


def test_the_audit_is_deterministic_in_every_format(stricter: AuditDiff, run_dir: Path) -> None:
    again = audit_replay(run_dir, [THRESHOLD])

    assert again.as_dict() == stricter.as_dict()
    assert render_text(again) == render_text(stricter)
    assert render_html(again) == render_html(stricter)
    assert json.loads(json.dumps(stricter.as_dict(), allow_nan=False)) == stricter.as_dict()


def test_a_kill_switch_profile_denies_every_entry_and_trades_nothing(run_dir: Path) -> None:
    audit = audit_replay(run_dir, ["risk.kill_switch=true"])

    entries = [r for r in audit.decisions if r["transition"] == "enter_on_edge" and r["change"] == "changed"]
    assert entries and all(r["replay"]["gate_reason"] == "KILL_SWITCH_ACTIVE" and r["replay"]["admitted"] is False for r in entries)
    assert all({"admitted", "gate_reason"} <= set(r["fields"]) for r in entries)
    assert audit.effects["trades"]["replay"] == 0 and audit.effects["fees_usd"]["replay"] == "0.00000000"
    assert audit.effects["max_gross_exposure_usd"]["replay"] == 0.0
    assert audit.effects["trades"]["delta"] == -audit.effects["trades"]["original"] < 0


def test_the_same_change_as_two_backtests_gives_the_same_audit_as_the_replay(runs: dict[str, Path], stricter: AuditDiff) -> None:
    audit = audit_runs(runs["base"], runs["stricter"])

    assert audit.kind == "runs" and audit.replay == str(runs["stricter"])
    assert audit.counts == stricter.counts
    assert audit.decisions == stricter.decisions
    assert audit.effects == stricter.effects
    assert audit.first_divergence == stricter.first_divergence


def test_series_for_the_charts_are_thinned_and_keep_the_last_point(stricter: AuditDiff, run_dir: Path) -> None:
    equity = pl.read_parquet(run_dir / "equity.parquet")
    series = stricter.series

    assert set(series) == {"ts", "equity_original", "equity_replay", "exposure_original", "exposure_replay"}
    assert 2 <= len(series["ts"]) <= SERIES_POINTS + 1 and all(len(v) == len(series["ts"]) for v in series.values())
    assert series["ts"][0] == equity["ts"][0] and series["ts"][-1] == equity["ts"][-1]
    assert series["equity_original"][-1] == round(equity["equity"][-1], 2)
    assert series["equity_replay"][-1] == stricter.effects["final_equity_usd"]["replay"]
    html = render_html(stricter)
    assert html.count("<svg") == 2 and html.count('<polyline class="replay"') == 2


@pytest.mark.parametrize(("n", "points", "expected"), [(1, 600, [0]), (5, 600, [0, 1, 2, 3, 4]), (10, 4, [0, 3, 6, 9]), (11, 4, [0, 3, 6, 9, 10])])
def test_thinning_keeps_every_kth_sample_and_the_last(n: int, points: int, expected: list[int]) -> None:
    assert thin(n, points).tolist() == expected


def test_exposure_from_fills_and_closes_matches_the_ledger_at_the_end(run_dir: Path) -> None:
    record = load_run_record(run_dir)
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    symbols = sorted(bars["symbol"].unique().to_list())
    exposure = gross_exposure(record.ts_ms, symbols, mark_matrix(bars, record.ts_ms, symbols), record.fills)
    cash = Decimal(json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["cash"])

    # Equity is cash plus marked holdings, so holdings are equity minus cash.
    assert exposure[-1] == pytest.approx(record.equity[-1] - float(cash), abs=1e-6)
    assert np.all(exposure >= 0) and exposure.max() > 0


def test_a_change_that_decides_nothing_differently_shows_no_divergence_and_no_effect(run_dir: Path) -> None:
    audit = audit_replay(run_dir, ["name=renamed"])

    assert [(c.key, c.new) for c in audit.changes] == [("name", "renamed")]
    assert audit.first_divergence is None and audit.decisions == ()
    assert audit.counts["removed"] == audit.counts["added"] == audit.counts["changed"] == audit.counts["resized"] == 0
    assert all(row["delta"] in (0, 0.0, "0.00000000") for row in audit.effects.values())
    assert "first diverging decision: none (the decisions are the same)\n" in render_text(audit)
    assert "<p>none: the decisions are the same</p>" in render_html(audit)


def test_a_replay_that_ends_early_diverges_where_it_ends(run_dir: Path) -> None:
    log = read_decisions(run_dir / "decisions.parquet")

    div = divergence_summary(log, log.head(3))

    assert div is not None and div["seq"] == 3 and div["replay"] is None
    assert div["ts"] == log["ts"][3] and div["original"]["symbol"] == log["symbol"][3]


def test_a_repeated_decision_key_is_matched_by_occurrence(run_dir: Path) -> None:
    log = read_decisions(run_dir / "decisions.parquet")
    doubled = pl.concat([log, log.head(1).with_columns(seq=pl.lit(log.height, dtype=pl.Int64))])

    rows, counts = decision_changes(log, doubled)

    assert counts["added"] == 1 and counts["unchanged"] == log.height
    assert [(r["change"], r["occurrence"], r["ts"]) for r in rows] == [("added", 1, log["ts"][0])]


# ---------------------------------------------------------------- refusals
def test_an_audit_without_any_change_is_refused(run_dir: Path) -> None:
    with pytest.raises(AuditError, match="nothing to audit: give --set key=value, --profile-file, --profile, or a second run"):
        audit_replay(run_dir, [])


def test_an_incomplete_run_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as caught:
        audit_replay(tmp_path, [THRESHOLD])

    assert str(caught.value) == f"{tmp_path} is not a complete run folder (summary.json is missing)"


def test_an_altered_decision_log_is_refused(run_copy: Path) -> None:
    log = read_decisions(run_copy / "decisions.parquet")
    log.with_columns(admitted=~pl.col("admitted")).write_parquet(run_copy / "decisions.parquet")

    with pytest.raises(AuditError) as caught:
        audit_runs(run_copy, run_copy)

    assert str(caught.value) == f"{run_copy}/decisions.parquet does not match the run's decision_log_sha256; the log was altered"


def test_an_override_that_would_change_the_inputs_is_refused_by_the_replay(run_dir: Path) -> None:
    with pytest.raises(ReplayError, match="'data.days' would change the run's inputs or model"):
        audit_replay(run_dir, ["data.days=3"])


def test_an_override_outside_its_bound_names_the_field(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"'risk.entry_min_p_up' must be <= 1.0, was 1.5"):
        audit_replay(run_dir, ["risk.entry_min_p_up=1.5"])


def test_two_runs_over_different_inputs_are_refused(run_dir: Path, run_copy: Path) -> None:
    inputs = json.loads((run_copy / "inputs.json").read_text(encoding="utf-8"))
    (run_copy / "inputs.json").write_text(json.dumps({**inputs, "inputs_sha256": "f" * 64}), encoding="utf-8")

    with pytest.raises(AuditError) as caught:
        audit_runs(run_dir, run_copy)

    assert "saw different inputs (inputs_sha256 " in str(caught.value) and "ffffffffffff); an audit diff" in str(caught.value)


# ---------------------------------------------------------------- alternative profiles
def _profile(run_dir: Path, **changes: object) -> dict:
    spec = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    return {**spec["risk"], **changes}


def test_a_profile_file_replaces_the_whole_risk_profile(run_dir: Path, tmp_path: Path, stricter: AuditDiff) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(json.dumps(_profile(run_dir, name="strict", entry_min_p_up=0.65)), encoding="utf-8")

    audit = audit_replay(run_dir, [profile_file_override(path)])

    assert [c.key for c in audit.changes] == ["risk.entry_min_p_up", "risk.name"]
    assert audit.decisions == stricter.decisions and audit.effects == stricter.effects


def test_profile_overrides_keep_small_floats_as_numbers(run_dir: Path) -> None:
    audit = audit_replay(run_dir, [profile_override(_profile(run_dir, entry_min_expected_return=1e-05))])

    assert [(c.key, c.new) for c in audit.changes] == [("risk.entry_min_expected_return", 1e-05)]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("a: [1", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping of profile fields, was list")],
)
def test_a_bad_profile_file_is_refused_naming_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")

    with pytest.raises(AuditError) as caught:
        profile_file_override(path)

    assert str(caught.value).startswith(f"--profile-file {path}: {message}")


@pytest.fixture
def store_db(acts_home: Path) -> Path:
    path = acts_home / "acts.db"
    acts_home.mkdir(parents=True, exist_ok=True)
    with ProfileStore(path, SimulatedClock(1_000)) as store:
        store.set("aggressive", {"entry_min_p_up": 0.65}, "lead", "stricter entries", expected_parent=1)
    return path


@pytest.mark.parametrize("ref", ["aggressive@v2", "aggressive@2", "v2", "2", "aggressive"])
def test_a_profile_version_from_the_store_replays_like_the_same_set(
    run_dir: Path, store_db: Path, stricter: AuditDiff, ref: str
) -> None:
    override = store_profile_override(ref, run_dir, store_db, SimulatedClock(2_000))

    audit = audit_replay(run_dir, [override])

    assert [(c.key, c.new) for c in audit.changes] == [("risk.entry_min_p_up", 0.65)]
    assert audit.decisions == stricter.decisions


def test_a_store_reference_with_its_content_hash_is_checked(run_dir: Path, store_db: Path) -> None:
    with ProfileStore(store_db, SimulatedClock(3_000)) as store:
        digest = store.show("aggressive", 2).content_hash
    clock = SimulatedClock(3_000)

    assert store_profile_override(f"aggressive@v2#{digest[:12]}", run_dir, store_db, clock).startswith("risk={")
    with pytest.raises(AuditError) as caught:
        store_profile_override("aggressive@v2#00000000", run_dir, store_db, clock)
    assert str(caught.value) == f"--profile aggressive@v2#00000000: aggressive v2 has content hash {digest[:12]}, not 00000000"


def test_without_a_profile_store_the_hook_says_so(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditError) as caught:
        store_profile_override("aggressive@v2", run_dir, tmp_path / "acts.db", SimulatedClock(0), "backend.profiles.no_such_store")

    assert str(caught.value) == (
        "profile store not available (backend.profiles.no_such_store cannot be imported); use --profile-file FILE.yaml or --set"
    )


@pytest.mark.parametrize("ref", ["", "a b", "x@", "@v2", "a@vx"])
def test_a_malformed_profile_reference_is_refused(run_dir: Path, tmp_path: Path, ref: str) -> None:
    with pytest.raises(AuditError) as caught:
        store_profile_override(ref, run_dir, tmp_path / "acts.db", SimulatedClock(0))

    assert str(caught.value) == f"--profile must look like NAME, NAME@vN, vN or NAME@vN#HASH, was {ref!r}"


def test_a_version_alone_needs_the_runs_spec_for_the_profile_name(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as caught:
        store_profile_override("v2", tmp_path, tmp_path / "acts.db", SimulatedClock(0))

    assert str(caught.value) == f"{tmp_path} is not a complete run folder (spec.json is missing)"


# ---------------------------------------------------------------- the command
def test_cli_text_lists_changes_divergence_effects_and_decisions(run_dir: Path) -> None:
    code, out, err = _cli("audit", "diff", str(run_dir), "--set", THRESHOLD)

    assert code == 0 and err == ""
    assert out.startswith(f"audit diff (replay)\n  original: {run_dir}\n  replay:   replay of {run_dir}\nconfig changes (1):\n")
    assert "  risk.entry_min_p_up: 0.52 -> 0.65\nfirst diverging decision: seq " in out
    for part in ("\neffect:\n", "\n  fees_usd ", "\n  avg_gross_exposure_usd ", "\n  realized_pnl_usd ", "\nchanged decisions ("):
        assert part in out
    assert out == render_text(audit_replay(run_dir, [THRESHOLD]))


def test_cli_json_and_html_page(run_dir: Path, tmp_path: Path, stricter: AuditDiff) -> None:
    page = tmp_path / "audit.html"

    code, out, err = _cli("audit", "diff", str(run_dir), "--set", THRESHOLD, "--json", "--html", str(page))

    assert code == 0 and err == f"[acts] audit page: {page}\n"
    assert json.loads(out) == stricter.as_dict()
    html = page.read_text(encoding="utf-8")
    assert html == render_html(stricter)
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</body></html>\n")
    assert "<script" not in html and "http://" not in html and "https://" not in html and "<link" not in html
    assert "risk.entry_min_p_up" in html
    assert ('class="removed"' in html) or ('class="added"' in html)


def test_cli_compares_two_runs(runs: dict[str, Path]) -> None:
    code, out, _ = _cli("audit", "diff", str(runs["base"]), str(runs["stricter"]))

    assert code == 0 and out.startswith("audit diff (runs)\n")
    assert "risk.entry_min_p_up: 0.52 -> 0.65" in out


def test_cli_profile_file_then_set_applies_both(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(json.dumps(_profile(run_dir, name="strict")), encoding="utf-8")

    code, out, _ = _cli("audit", "diff", str(run_dir), "--profile-file", str(path), "--set", THRESHOLD, "--json")

    assert code == 0
    assert [c["key"] for c in json.loads(out)["config_changes"]] == ["risk.entry_min_p_up", "risk.name"]


def test_cli_profile_from_the_homes_store(run_dir: Path, store_db: Path, stricter: AuditDiff) -> None:
    code, out, _ = _cli("audit", "diff", str(run_dir), "--profile", "aggressive@v2", "--json")

    assert code == 0 and json.loads(out)["decisions"] == json.loads(json.dumps(list(stricter.decisions)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["RUN_B", "--set", THRESHOLD], "give a second run or overrides (--set, --profile-file, --profile), not both"),
        (["--profile-file", "x.yaml", "--profile", "v2"], "give --profile-file or --profile, not both (each replaces the whole risk profile)"),
        ([], "nothing to audit: give --set key=value, --profile-file, --profile, or a second run"),
    ],
)
def test_cli_refuses_contradictory_or_empty_requests(run_dir: Path, extra: list[str], message: str) -> None:
    argv = [str(run_dir) if a == "RUN_B" else a for a in extra]

    code, out, err = _cli("audit", "diff", str(run_dir), *argv)

    assert (code, out, err) == (2, "", f"acts: error: {message}\n")


def test_cli_refuses_an_html_path_in_a_missing_folder_before_replaying(tmp_path: Path) -> None:
    page = tmp_path / "no" / "audit.html"

    code, _, err = _cli("audit", "diff", str(tmp_path), "--set", THRESHOLD, "--html", str(page))

    assert code == 2 and err == f"acts: error: --html {page}: folder {page.parent} does not exist\n"
