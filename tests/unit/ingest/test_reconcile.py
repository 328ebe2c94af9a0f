"""Reconciliation core: gaps, runs, revisions, late arrivals, cross-source checks and the gap mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backend.data.lake import OHLCV_SCHEMA, conflicting_bars, write_ohlcv
from backend.data.reconcile import assess_bars, compare_sources, find_gaps, gap_mask, record_scan, runs, scan_gaps, series_ts
from backend.data.state import Cursor, Evidence, EvidenceKind, EvidenceRow, IngestState, Resolution

T0 = 1_704_067_200_000
FIVE = 300_000


def bars(indices: list[int], price: float = 100.0, source: str = "coinapi", batch: str = "b1", symbol: str = "BTC") -> pl.DataFrame:
    n = len(indices)
    return pl.DataFrame(
        {"ts": [T0 + i * FIVE for i in indices], "symbol": [symbol] * n, "open": [price] * n,
         "high": [price + 1] * n, "low": [price - 1] * n, "close": [price] * n, "volume": [1.0] * n,
         "source": [source] * n, "batch_id": [batch] * n},
        schema=OHLCV_SCHEMA,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ts", "previous", "gaps"),
    [
        ([0, 1, 2], None, []),
        ([0, 3, 4, 7], None, [(1, 3), (5, 7)]),
        ([5, 6], 2, [(3, 5)]),
        ([3], 2, []),
        ([], 2, []),
        ([9], None, []),
    ],
)
def test_find_gaps_returns_half_open_missing_ranges(ts: list[int], previous: int | None, gaps: list) -> None:
    scaled = [T0 + t * FIVE for t in ts]
    before = None if previous is None else T0 + previous * FIVE

    assert find_gaps(scaled, FIVE, before) == [(T0 + a * FIVE, T0 + b * FIVE) for a, b in gaps]


def test_runs_group_contiguous_bars() -> None:
    assert runs([T0, T0 + FIVE, T0 + 3 * FIVE], FIVE) == [(T0, T0 + 2 * FIVE, 2), (T0 + 3 * FIVE, T0 + 4 * FIVE, 1)]
    assert runs([], FIVE) == []


def open_gap(identifier: int, start: int, end: int) -> EvidenceRow:
    return EvidenceRow(identifier, EvidenceKind.GAP, "coinapi", "BTC", "5m", T0 + start * FIVE, T0 + end * FIVE, 0,
                       "b0", {}, Resolution.OPEN, None, None)  # fmt: skip


def assess(batch: pl.DataFrame, known: list[int], high: int | None, gaps: list[EvidenceRow] = (), conflicts=None):
    cursor = None if high is None else Cursor(T0 + (high + 1) * FIVE, T0 + high * FIVE)
    if conflicts is None:
        conflicts = pl.DataFrame()
    known_ts = np.array([T0 + k * FIVE for k in known], dtype=np.int64)
    return assess_bars(batch, conflicts, known_ts, cursor, list(gaps), "coinapi", "BTC", "5m", "b2")


def test_new_bars_after_a_hole_open_a_gap_record() -> None:
    found, updates = assess(bars([5, 6, 9]), known=[0, 1, 2, 3], high=3)

    assert [(e.kind, e.ts_start, e.ts_end, e.resolution, e.detail) for e in found] == [
        (EvidenceKind.GAP, T0 + 4 * FIVE, T0 + 5 * FIVE, Resolution.OPEN, {"missing_bars": 1}),
        (EvidenceKind.GAP, T0 + 7 * FIVE, T0 + 9 * FIVE, Resolution.OPEN, {"missing_bars": 2}),
    ]
    assert updates == []


def test_a_first_batch_after_imported_bars_measures_its_gap_from_them() -> None:
    found, _ = assess(bars([5, 6]), known=[0, 1], high=None)

    assert [(e.ts_start, e.ts_end) for e in found] == [(T0 + 2 * FIVE, T0 + 5 * FIVE)]


def test_a_first_batch_that_overlaps_imported_bars_opens_no_gap_before_them() -> None:
    found, _ = assess(bars([0, 1, 3]), known=[1], high=None)

    assert [(e.kind, e.ts_start) for e in found] == [(EvidenceKind.GAP, T0 + 2 * FIVE)]


def test_late_bars_inside_a_gap_are_recorded_and_resolve_it() -> None:
    gap = open_gap(7, 4, 6)

    found, updates = assess(bars([4, 5]), known=[3, 6, 7], high=7, gaps=[gap])

    assert [(e.kind, e.ts_start, e.ts_end, e.resolution, e.detail["bars"]) for e in found] == [
        (EvidenceKind.LATE_ARRIVAL, T0 + 4 * FIVE, T0 + 6 * FIVE, Resolution.ACCEPTED_LATE, 2)
    ]
    assert updates == [(7, Resolution.REFETCHED)]


def test_a_partly_filled_gap_is_narrowed_into_new_gap_records() -> None:
    gap = open_gap(3, 2, 8)

    found, updates = assess(bars([4]), known=[0, 1, 8, 9], high=9, gaps=[gap])

    assert updates == [(3, Resolution.PARTIALLY_REFETCHED)]
    gaps = [(e.ts_start, e.ts_end, e.detail) for e in found if e.kind is EvidenceKind.GAP]
    assert gaps == [(T0 + 2 * FIVE, T0 + 4 * FIVE, {"missing_bars": 2, "narrowed_from": 3}),
                    (T0 + 5 * FIVE, T0 + 8 * FIVE, {"missing_bars": 3, "narrowed_from": 3})]  # fmt: skip


def test_a_gap_the_batch_does_not_touch_stays_open() -> None:
    _, updates = assess(bars([10]), known=[9], high=9, gaps=[open_gap(1, 2, 4)])

    assert updates == []


def test_a_revised_bar_is_recorded_with_its_old_and_new_values(tmp_path: Path) -> None:
    write_ohlcv(tmp_path, bars([0, 1, 2]), "5m")
    revised = pl.concat([bars([0]), bars([1], price=105.0, batch="b2"), bars([2])])
    conflicts = conflicting_bars(tmp_path, revised, "5m")

    found, _ = assess(revised, known=[0, 1, 2], high=2, conflicts=conflicts)

    (revision,) = found
    assert (revision.kind, revision.ts_start, revision.resolution) == (EvidenceKind.REVISION, T0 + FIVE, Resolution.SUPERSEDED_OLD_KEPT)
    assert revision.detail["old"]["close"] == 100.0 and revision.detail["old"]["batch_id"] == "b1"
    assert revision.detail["new"]["close"] == 105.0 and revision.detail["new"]["batch_id"] == "b2"


def test_closes_apart_by_more_than_the_tolerance_are_flagged_per_run() -> None:
    left = pl.concat([bars([0, 1, 2, 3, 4]), bars([0], symbol="ETH")]).sort("ts", "symbol")
    right = pl.concat([bars([0, 1], price=100.2), bars([2, 3], price=101.0), bars([4]), bars([0], symbol="ETH", price=90.0)])
    right = right.with_columns(source=pl.lit("kraken")).sort("ts", "symbol")

    found = compare_sources(left, right, tolerance_bps=50.0, timeframe="5m")

    assert [(e.kind, e.symbol, e.ts_start, e.ts_end, e.detail["bars"], e.detail["max_diff_bps"], e.resolution) for e in found] == [
        (EvidenceKind.CROSS_SOURCE, "BTC", T0 + 2 * FIVE, T0 + 4 * FIVE, 2, 100.0, Resolution.FLAGGED),
        (EvidenceKind.CROSS_SOURCE, "ETH", T0, T0 + FIVE, 1, 1000.0, Resolution.FLAGGED),
    ]
    assert found[0].detail["other_source"] == "kraken"


def test_the_gap_mask_marks_every_missing_bar_explicitly(tmp_path: Path) -> None:
    write_ohlcv(tmp_path, pl.concat([bars([0, 1, 3]), bars([0, 1, 2, 3], symbol="ETH")]), "5m")

    mask = gap_mask(tmp_path, "coinapi", "5m", ["ETH", "BTC", "SOL"], T0, T0 + 4 * FIVE)

    assert mask.height == 12
    missing = mask.filter(~pl.col("present")).select("ts", "symbol").rows()
    assert missing == [(T0, "SOL"), (T0 + FIVE, "SOL"), (T0 + 2 * FIVE, "BTC"), (T0 + 2 * FIVE, "SOL"), (T0 + 3 * FIVE, "SOL")]


def test_scanning_the_lake_records_each_gap_once(tmp_path: Path) -> None:
    write_ohlcv(tmp_path, bars([0, 1, 4, 5, 8]), "5m")
    state = IngestState(tmp_path / "state.sqlite")

    found = scan_gaps(tmp_path, "coinapi", "5m", "BTC")

    assert [(e.ts_start, e.ts_end) for e in found] == [(T0 + 2 * FIVE, T0 + 4 * FIVE), (T0 + 6 * FIVE, T0 + 8 * FIVE)]
    assert record_scan(state, found, 1) == 2
    assert record_scan(state, found, 2) == 0
    assert scan_gaps(tmp_path, "coinapi", "5m", "ETH") == []
    assert series_ts(tmp_path, "coinapi", "5m", "BTC", T0 + FIVE, T0 + 5 * FIVE).tolist() == [T0 + FIVE, T0 + 4 * FIVE]
    state.close()
