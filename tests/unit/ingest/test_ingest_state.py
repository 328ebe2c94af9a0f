"""Cursors, batches and evidence in the ingestion SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.data.state import Cursor, Evidence, EvidenceKind, IngestState, Resolution


@pytest.fixture
def state(tmp_path: Path) -> IngestState:
    store = IngestState(tmp_path / "data" / "ingest.sqlite")
    yield store
    store.close()


def gap(start: int, end: int, symbol: str = "BTC") -> Evidence:
    return Evidence(EvidenceKind.GAP, "coinapi", symbol, "5m", start, end, {"missing_bars": (end - start) // 300_000})


def test_a_cursor_is_absent_until_set_then_updated_in_place(state: IngestState) -> None:
    assert state.cursor("coinapi", "BTC", "5m") is None

    state.set_cursor("coinapi", "BTC", "5m", Cursor(600_000, 300_000), 1)
    state.set_cursor("coinapi", "BTC", "5m", Cursor(900_000, 600_000), 2)
    state.set_cursor("coinapi", "ETH", "5m", Cursor(300_000, None), 3)

    assert state.cursor("coinapi", "BTC", "5m") == Cursor(900_000, 600_000)
    assert [(s, sym, c) for s, sym, _, c in state.cursors()] == [
        ("coinapi", "BTC", Cursor(900_000, 600_000)), ("coinapi", "ETH", Cursor(300_000, None)),
    ]  # fmt: skip



def test_a_resume_point_is_kept_per_series_until_its_run_finishes(state: IngestState) -> None:
    assert state.resume_point("coinapi", "BTC", "5m") is None

    state.set_resume_point("coinapi", "BTC", "5m", 600_000, 1)
    state.set_resume_point("coinapi", "BTC", "5m", 900_000, 2)
    state.set_resume_point("coinapi", "ETH", "5m", 300_000, 3)
    assert state.resume_point("coinapi", "BTC", "5m") == 900_000

    state.set_resume_point("coinapi", "BTC", "5m", None, 4)
    assert state.resume_point("coinapi", "BTC", "5m") is None
    assert state.resume_point("coinapi", "ETH", "5m") == 300_000

def test_the_same_finding_is_stored_once(state: IngestState) -> None:
    assert state.add_evidence(gap(0, 600_000), 10) is True
    assert state.add_evidence(gap(0, 600_000), 20) is False
    assert state.add_evidence(gap(0, 900_000), 30) is True

    rows = state.evidence(EvidenceKind.GAP)
    assert [(r.ts_start, r.ts_end, r.detected_at_ms, r.resolution) for r in rows] == [
        (0, 600_000, 10, Resolution.OPEN), (0, 900_000, 30, Resolution.OPEN),
    ]  # fmt: skip


def test_a_record_stored_resolved_carries_its_batch_as_resolver(state: IngestState) -> None:
    evidence = Evidence(EvidenceKind.REVISION, "coinapi", "BTC", "5m", 0, 300_000, {"old": 1}, Resolution.SUPERSEDED_OLD_KEPT, "b1")
    state.add_evidence(evidence, 7)

    (row,) = state.evidence()
    assert (row.resolution, row.resolved_at_ms, row.resolved_by, row.batch_id) == (Resolution.SUPERSEDED_OLD_KEPT, 7, "b1", "b1")
    assert row.as_dict()["kind"] == "revision" and row.as_dict()["detail"] == {"old": 1}


def test_only_an_open_record_can_be_resolved_and_its_first_resolution_sticks(state: IngestState) -> None:
    state.add_evidence(gap(0, 600_000), 1)
    (row,) = state.evidence()

    state.resolve(row.id, Resolution.REFETCHED, "batch-a", 5)
    state.resolve(row.id, Resolution.ACCEPTED_TRUE_GAP, "batch-b", 6)

    (row,) = state.evidence()
    assert (row.resolution, row.resolved_by, row.resolved_at_ms) == (Resolution.REFETCHED, "batch-a", 5)


def test_evidence_filters_combine(state: IngestState) -> None:
    state.add_evidence(gap(0, 600_000, "BTC"), 1)
    state.add_evidence(gap(0, 600_000, "ETH"), 1)
    (eth,) = state.evidence(symbol="ETH")
    state.resolve(eth.id, Resolution.ACCEPTED_TRUE_GAP, "x", 2)

    assert [r.symbol for r in state.evidence(EvidenceKind.GAP, "coinapi", None, "5m", Resolution.OPEN)] == ["BTC"]
    assert state.evidence(source="kraken") == []


def test_a_failed_transaction_leaves_nothing_behind(state: IngestState) -> None:
    with pytest.raises(RuntimeError), state.transaction():
        state.add_evidence(gap(0, 600_000), 1)
        state.set_cursor("coinapi", "BTC", "5m", Cursor(1, 1), 1)
        raise RuntimeError("crash between the two writes")

    assert state.evidence() == [] and state.cursor("coinapi", "BTC", "5m") is None


def test_a_batch_status_moves_from_writing_to_committed(state: IngestState) -> None:
    state.record_batch("coinapi:ab", "coinapi", "BTC", "5m", "writing", 10, [3, 1], 5)
    state.record_batch("coinapi:ab", "coinapi", "BTC", "5m", "committed", 10, [3, 1], 6)

    assert state.batches() == [{"batch_id": "coinapi:ab", "source": "coinapi", "symbol": "BTC", "timeframe": "5m",
                                "status": "committed", "rows": 10, "raw_ids": "[1, 3]", "created_at_ms": 5}]
