"""Reconciliation with evidence: gaps, late arrivals, revisions, cross-source disagreement, gap masks.

The functions that find issues are pure (values in, evidence out); :func:`reconcile_lake` and
:func:`gap_mask` read the lake. Nothing here repairs a bar silently: every change a batch makes to
bars already known is written down before the lake changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from backend.data import lake
from backend.data.lake import TIMEFRAME_MS
from backend.data.state import Cursor, Evidence, EvidenceKind, EvidenceRow, IngestState, Resolution


def find_gaps(ts: Sequence[int] | np.ndarray, bar_ms: int, previous_ms: int | None = None) -> list[tuple[int, int]]:
    """Return the missing bar ranges ``[start, end)`` between sorted, unique bar times.

    Parameters
    ----------
    ts : sequence of int
        Bar open times, sorted ascending, unique.
    bar_ms : int
        Bar length.
    previous_ms : int or None
        The bar before ``ts[0]`` (the series' newest stored bar), or None when ``ts`` starts the series.
    """
    times = np.asarray(ts, dtype=np.int64)
    if previous_ms is not None:
        times = np.concatenate([np.array([previous_ms], dtype=np.int64), times])
    if times.size < 2:
        return []
    steps = np.diff(times)
    at = np.flatnonzero(steps > bar_ms)
    return [(int(times[i] + bar_ms), int(times[i + 1])) for i in at]


def runs(ts: Sequence[int] | np.ndarray, bar_ms: int) -> list[tuple[int, int, int]]:
    """Group sorted bar times into contiguous runs ``(start, end, count)`` with ``end`` exclusive."""
    times = np.asarray(ts, dtype=np.int64)
    if times.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) != bar_ms) + 1
    bounds = np.concatenate([[0], breaks, [times.size]])
    return [(int(times[a]), int(times[b - 1] + bar_ms), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def series_ts(root: Path, source: str, timeframe: str, symbol: str, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    """Return the sorted bar times of one series in ``[start_ms, end_ms)`` (empty when none)."""
    files = lake.lake_files(root, source, timeframe, [symbol], start_ms, end_ms)
    if not files:
        return np.empty(0, dtype=np.int64)
    scan = pl.scan_parquet(files).select("ts")
    if start_ms is not None:
        scan = scan.filter(pl.col("ts") >= start_ms)
    if end_ms is not None:
        scan = scan.filter(pl.col("ts") < end_ms)
    return scan.collect()["ts"].sort().to_numpy()


def assess_bars(
    bars: pl.DataFrame,
    conflicts: pl.DataFrame,
    known_ts: np.ndarray,
    cursor: Cursor | None,
    open_gaps: Sequence[EvidenceRow],
    source: str,
    symbol: str,
    timeframe: str,
    batch_id: str,
) -> tuple[list[Evidence], list[tuple[int, Resolution]]]:
    """Say what a batch of valid bars changes, before it is written.

    Parameters
    ----------
    bars : pl.DataFrame
        The batch (one series, sorted by ts).
    conflicts : pl.DataFrame
        :func:`backend.data.lake.conflicting_bars` of the batch: known bars with other values.
    known_ts : np.ndarray
        Bar times the lake already holds in the batch's span and in the open gaps' spans.
    cursor : Cursor or None
        The series' cursor before the batch (``high_ms``: newest bar already stored).
    open_gaps : sequence of EvidenceRow
        Open gap records of the series.

    Returns
    -------
    tuple
        New evidence (revisions, late arrivals, gaps) and (gap record id, resolution) updates.
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    found: list[Evidence] = []
    for row in conflicts.iter_rows(named=True):
        detail = {
            "old": {k: row[f"old_{k}"] for k in ("open", "high", "low", "close", "volume", "batch_id")},
            "new": {k: row[f"new_{k}"] for k in ("open", "high", "low", "close", "volume", "batch_id")},
        }
        found.append(Evidence(EvidenceKind.REVISION, source, symbol, timeframe, row["ts"], row["ts"] + bar_ms,
                              detail, Resolution.SUPERSEDED_OLD_KEPT, batch_id))  # fmt: skip
    ts = bars["ts"].to_numpy()
    new_ts = ts[~np.isin(ts, known_ts)]
    high = None if cursor is None else cursor.high_ms
    late = new_ts[new_ts <= high] if high is not None else new_ts[:0]
    fresh = new_ts[new_ts > high] if high is not None else new_ts
    for start, end, count in runs(late, bar_ms):
        found.append(Evidence(EvidenceKind.LATE_ARRIVAL, source, symbol, timeframe, start, end,
                              {"bars": count, "newest_stored_ms": high}, Resolution.ACCEPTED_LATE, batch_id))  # fmt: skip
    present = np.union1d(known_ts, ts)
    if fresh.size:
        # Gaps up to the newest new bar, measured against every bar held (known or in this batch).
        window = present[present <= fresh.max()]
        window = window[window > high] if high is not None else window
        for start, end in find_gaps(window, bar_ms, high):
            found.append(Evidence(EvidenceKind.GAP, source, symbol, timeframe, start, end,
                                  {"missing_bars": (end - start) // bar_ms}, Resolution.OPEN, batch_id))  # fmt: skip
    updates: list[tuple[int, Resolution]] = []
    for gap in open_gaps:
        gap_start, gap_end = int(gap.ts_start or 0), int(gap.ts_end or 0)  # gap records always carry their span
        inside = present[(present >= gap_start) & (present < gap_end)]
        if inside.size == 0:
            continue
        expected = (gap_end - gap_start) // bar_ms
        if inside.size == expected:
            updates.append((gap.id, Resolution.REFETCHED))
            continue
        updates.append((gap.id, Resolution.PARTIALLY_REFETCHED))
        for start, end in find_gaps(inside, bar_ms, gap_start - bar_ms) + _tail_gap(inside, bar_ms, gap_end):
            found.append(Evidence(EvidenceKind.GAP, source, symbol, timeframe, start, end,
                                  {"missing_bars": (end - start) // bar_ms, "narrowed_from": gap.id},
                                  Resolution.OPEN, batch_id))  # fmt: skip
    return found, updates


def _tail_gap(inside: np.ndarray, bar_ms: int, end: int) -> list[tuple[int, int]]:
    last = int(inside.max()) + bar_ms
    return [(last, end)] if last < end else []


def compare_sources(
    left: pl.DataFrame, right: pl.DataFrame, tolerance_bps: float, timeframe: str
) -> list[Evidence]:
    """Flag bars where two sources' closes differ by more than ``tolerance_bps`` (one record per run).

    Parameters
    ----------
    left, right : pl.DataFrame
        Bars of the same symbol from two sources (canonical columns).
    tolerance_bps : float
        Allowed relative close difference, in basis points of the left close.
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    joined = left.join(right, on=["ts", "symbol"], how="inner", suffix="_right").sort("symbol", "ts")
    joined = joined.with_columns(diff_bps=((pl.col("close_right") - pl.col("close")).abs() / pl.col("close") * 1e4))
    found: list[Evidence] = []
    for (symbol,), part in joined.filter(pl.col("diff_bps") > tolerance_bps).partition_by("symbol", as_dict=True).items():
        source, other = part["source"][0], part["source_right"][0]
        for start, end, count in runs(part["ts"].to_numpy(), bar_ms):
            window = part.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            detail = {"other_source": other, "bars": count, "tolerance_bps": tolerance_bps,
                      "max_diff_bps": round(float(window["diff_bps"].max()), 4)}  # type: ignore[arg-type]  # fmt: skip
            found.append(Evidence(EvidenceKind.CROSS_SOURCE, source, symbol, timeframe, start, end, detail,
                                  Resolution.FLAGGED))  # fmt: skip
    return sorted(found, key=lambda e: (e.symbol, e.ts_start))


def scan_gaps(root: Path, source: str, timeframe: str, symbol: str) -> list[Evidence]:
    """Return a gap record for every hole between the first and the last stored bar of a series."""
    bar_ms = TIMEFRAME_MS[timeframe]
    return [
        Evidence(EvidenceKind.GAP, source, symbol, timeframe, start, end, {"missing_bars": (end - start) // bar_ms})
        for start, end in find_gaps(series_ts(root, source, timeframe, symbol, None, None), bar_ms)
    ]


def gap_mask(
    root: Path, source: str, timeframe: str, symbols: Sequence[str], start_ms: int, end_ms: int
) -> pl.DataFrame:
    """Return the explicit presence mask downstream code uses instead of guessing.

    Returns
    -------
    pl.DataFrame
        One row per (ts, symbol) on the full bar grid of ``[start_ms, end_ms)``: ``ts``, ``symbol``,
        ``present`` (False where the lake has no bar), sorted by (ts, symbol).
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    first = start_ms + (-start_ms) % bar_ms
    grid = np.arange(first, end_ms, bar_ms, dtype=np.int64)
    parts = []
    for symbol in sorted(set(symbols)):
        held = series_ts(root, source, timeframe, symbol, start_ms, end_ms)
        parts.append(pl.DataFrame({"ts": grid, "symbol": symbol, "present": np.isin(grid, held)},
                                  schema={"ts": pl.Int64, "symbol": pl.String, "present": pl.Boolean}))  # fmt: skip
    return pl.concat(parts).sort("ts", "symbol")


def record_scan(state: IngestState, evidence: Sequence[Evidence], now_ms: int) -> int:
    """Store findings (already known ones are skipped); return how many were new."""
    with state.transaction():
        return sum(state.add_evidence(e, now_ms) for e in evidence)
