"""Tests for backend.audit.decisions: seq order, schema, canonical lines and hash, atomic parquet round trip."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backend.audit.decisions import (
    COLUMNS,
    DECISION_SCHEMA,
    DecisionLog,
    canonical_lines,
    clean_float,
    decision_log_sha256,
    read_decisions,
    write_decisions,
)


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": 1_704_067_200_000,
        "symbol": "BTC",
        "transition": "enter_on_edge",
        "action": "enter",
        "state_from": "FLAT",
        "state_to": "HOLDING",
        "reason": "ENTRY_PREDICTED_EDGE",
        "admitted": True,
        "gate_reason": "PASSED",
        "gates": '[{"gate":"kill_switch"}]',
        "p_up": 0.61,
        "expected_return": 0.004,
        "inputs": '{"pred.p_up":0.61}',
        "qty": 0.25,
        "ref_price": 42_000.0,
        "equity": 100_000.0,
        "order_id": "abc123",
        "campaign_id": "c0ffee0123456789",
        "edge": 0.02,
        "cost": 0.009,
        "margin": 0.002,
        "cost_reason": "EDGE_CLEARS_COST",
        "profile_version": "aggressive@0123456789ab",
        "profile_params": '{"position_size_pct":0.12}',
        "model_version": "m1",
        "spec_hash": "f" * 64,
    }
    row.update(changes)
    return row


def _log(*rows: dict[str, Any]) -> DecisionLog:
    log = DecisionLog()
    for row in rows:
        log.append(row)
    return log


def test_seq_is_assigned_in_order_of_arrival_and_overrides_a_given_seq() -> None:
    log = _log(_row(symbol="BTC"), _row(symbol="ETH", seq=99), _row(symbol="SOL"))
    frame = log.frame()
    assert len(log) == 3
    assert frame["seq"].to_list() == [0, 1, 2]
    assert frame["symbol"].to_list() == ["BTC", "ETH", "SOL"]


def test_frame_has_the_canonical_columns_and_schema_even_when_empty() -> None:
    empty = DecisionLog().frame()
    assert empty.height == 0
    assert empty.columns == list(COLUMNS)
    assert dict(empty.schema) == DECISION_SCHEMA
    assert dict(_log(_row()).frame().schema) == DECISION_SCHEMA


def test_a_row_missing_a_field_is_refused_and_leaves_the_log_unchanged() -> None:
    log = _log(_row())
    incomplete = _row()
    del incomplete["spec_hash"]
    with pytest.raises(KeyError, match="spec_hash"):
        log.append(incomplete)
    assert len(log) == 1
    assert log.frame().height == 1


@pytest.mark.parametrize(("value", "expected"), [(float("nan"), None), (0.5, 0.5), (3, 3.0), (-0.0, -0.0)])
def test_clean_float_maps_nan_to_none_and_keeps_numbers(value: float, expected: float | None) -> None:
    assert clean_float(value) == expected


def test_canonical_lines_turn_nan_into_null_and_sort_keys() -> None:
    frame = _log(_row(p_up=float("nan"), expected_return=None)).frame()
    assert math.isnan(frame["p_up"][0])
    (line,) = list(canonical_lines(frame))
    record = json.loads(line)
    assert record["p_up"] is None
    assert record["expected_return"] is None
    assert list(record) == sorted(COLUMNS)
    assert "NaN" not in line


def test_canonical_lines_follow_seq_order_whatever_the_frame_order() -> None:
    frame = _log(_row(symbol="BTC"), _row(symbol="ETH"), _row(symbol="SOL")).frame()
    shuffled = frame.sort("symbol", descending=True)
    assert [json.loads(line)["seq"] for line in canonical_lines(shuffled)] == [0, 1, 2]
    assert decision_log_sha256(shuffled) == decision_log_sha256(frame)


def test_nan_and_null_hash_the_same() -> None:
    assert decision_log_sha256(_log(_row(p_up=float("nan"))).frame()) == decision_log_sha256(_log(_row(p_up=None)).frame())


CHANGES = [
    ("ts", 1_704_067_500_000),
    ("symbol", "ETH"),
    ("transition", "exit_on_edge_turn"),
    ("action", "exit"),
    ("state_from", "HOLDING"),
    ("state_to", "FLAT"),
    ("reason", "EXIT_EDGE_TURNED"),
    ("admitted", False),
    ("gate_reason", "KILL_SWITCH_ACTIVE"),
    ("gates", "[]"),
    ("p_up", 0.6100000001),
    ("expected_return", float("nan")),
    ("inputs", "{}"),
    ("qty", 0.2500001),
    ("ref_price", 42_000.01),
    ("equity", 99_999.99),
    ("order_id", None),
    ("campaign_id", None),
    ("edge", 0.0200001),
    ("cost", 0.0135),
    ("margin", 0.0),
    ("cost_reason", "EDGE_BELOW_COST"),
    ("profile_version", "aggressive@ba9876543210"),
    ("profile_params", "{}"),
    ("model_version", "m2"),
    ("spec_hash", "e" * 64),
]


def test_changes_cover_every_field_but_seq() -> None:
    assert {name for name, _ in CHANGES} == set(COLUMNS) - {"seq"}


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[name for name, _ in CHANGES])
def test_hash_changes_when_any_field_changes(field: str, value: Any) -> None:
    base = decision_log_sha256(_log(_row(), _row(symbol="SOL")).frame())
    changed = decision_log_sha256(_log(_row(**{field: value}), _row(symbol="SOL")).frame())
    assert changed != base


def test_hash_changes_with_the_order_or_number_of_decisions() -> None:
    first, second = _row(symbol="BTC"), _row(symbol="ETH")
    one_two = decision_log_sha256(_log(first, second).frame())
    assert decision_log_sha256(_log(second, first).frame()) != one_two
    assert decision_log_sha256(_log(first).frame()) != one_two


def test_hash_is_the_sha256_of_the_joined_canonical_lines() -> None:
    frame = _log(_row(), _row(symbol="ETH")).frame()
    text = "\n".join(canonical_lines(frame))
    assert decision_log_sha256(frame) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert decision_log_sha256(_log(_row()).frame()) == decision_log_sha256(_log(_row()).frame())


def test_write_then_read_round_trips_rows_schema_and_hash(tmp_path: Path) -> None:
    frame = _log(_row(), _row(symbol="ETH", p_up=float("nan"), order_id=None, admitted=False)).frame()
    path = write_decisions(frame, tmp_path / "decisions.parquet")
    assert path == tmp_path / "decisions.parquet"
    back = read_decisions(path)
    assert back.equals(frame)
    assert dict(back.schema) == DECISION_SCHEMA
    assert decision_log_sha256(back) == decision_log_sha256(frame)


def test_write_is_atomic_leaves_no_tmp_file_and_replaces_an_older_log(tmp_path: Path) -> None:
    path = tmp_path / "decisions.parquet"
    write_decisions(_log(_row()).frame(), path)
    write_decisions(_log(_row(), _row(symbol="ETH")).frame(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decisions.parquet"]
    assert read_decisions(path)["symbol"].to_list() == ["BTC", "ETH"]


def test_read_returns_columns_in_canonical_order(tmp_path: Path) -> None:
    frame = _log(_row()).frame()
    path = tmp_path / "shuffled.parquet"
    frame.select(list(reversed(COLUMNS))).write_parquet(path)
    assert read_decisions(path).columns == list(COLUMNS)
    assert read_decisions(path).equals(frame)
    assert isinstance(read_decisions(path), pl.DataFrame)
