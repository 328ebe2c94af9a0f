"""Parquet lake of OHLCV bars, one file per (source, timeframe, symbol, UTC month).

Layout::

    <root>/ohlcv/source=<source>/timeframe=<timeframe>/symbol=<SYMBOL>/<YYYY-MM>.parquet

Each file holds the canonical columns of :data:`OHLCV_SCHEMA`, sorted by ``ts`` (bar open time,
UTC milliseconds) with unique ``ts``. Files are replaced atomically, so a reader never sees a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from backend.config.schema import TIMEFRAME_MS
from backend.errors import DataError

OHLCV_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "symbol": pl.String(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "source": pl.String(),
    "batch_id": pl.String(),
}

# source and symbol become directory names: keep them to characters that cannot escape the lake.
_SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_PRICE_COLUMNS = ("open", "high", "low", "close")


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "unbounded"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_timeframe(timeframe: str) -> int:
    if timeframe not in TIMEFRAME_MS:
        raise DataError(f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_MS)}")
    return TIMEFRAME_MS[timeframe]


def _row_checks(bar_ms: int) -> list[tuple[str, str, pl.Expr]]:
    """Return (column, rule, violation expression) in the order they are reported."""
    checks: list[tuple[str, str, pl.Expr]] = []
    for name in ("source", "batch_id"):
        checks.append((name, "must not be null", pl.col(name).is_null()))
    checks.append(("source", f"must match {_SAFE_NAME}", ~pl.col("source").str.contains(_SAFE_NAME)))
    for name in _PRICE_COLUMNS:
        col = pl.col(name)
        # NaN compares greater than every number in polars, so finiteness is checked explicitly.
        checks.append((name, "must be finite and > 0", col.is_null() | ~col.is_finite() | (col <= 0)))
    vol = pl.col("volume")
    checks.append(("volume", "must be finite and >= 0", vol.is_null() | ~vol.is_finite() | (vol < 0)))
    oc_max = pl.max_horizontal("open", "close")
    oc_min = pl.min_horizontal("open", "close")
    checks.append(("high", "must be >= max(open, close)", pl.col("high") < oc_max))
    checks.append(("low", "must be <= min(open, close)", pl.col("low") > oc_min))
    checks.append(("ts", f"must be aligned to {bar_ms} ms", pl.col("ts") % bar_ms != 0))
    previous = pl.col("ts").shift(1).over("source", "symbol")
    checks.append(("ts", "must be strictly increasing per symbol", pl.col("ts") <= previous))
    return checks


def validate_ohlcv(frame: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Validate a frame of bars and return it with the canonical column order.

    Parameters
    ----------
    frame : pl.DataFrame
        Bars with exactly the columns of :data:`OHLCV_SCHEMA` (any order).
    timeframe : str
        Bar length, a key of :data:`TIMEFRAME_MS`.

    Returns
    -------
    pl.DataFrame
        The same rows, columns in canonical order.

    Raises
    ------
    DataError
        On an unknown timeframe, a missing/extra column or wrong dtype (naming the column), a null
        ``ts``/``symbol``, or any row breaking a rule; the message names the symbol, the column, the
        first offending ts and the value.
    """
    bar_ms = _check_timeframe(timeframe)
    missing = [name for name in OHLCV_SCHEMA if name not in frame.columns]
    extra = [name for name in frame.columns if name not in OHLCV_SCHEMA]
    if missing or extra:
        name = (missing + extra)[0]
        kind = "missing" if missing else "unexpected"
        raise DataError(f"OHLCV frame has {kind} column {name!r}; expected {list(OHLCV_SCHEMA)}")
    for name, dtype in OHLCV_SCHEMA.items():
        if frame.schema[name] != dtype:
            raise DataError(f"OHLCV column {name!r} has dtype {frame.schema[name]}, expected {dtype}")
    frame = frame.select(list(OHLCV_SCHEMA))
    for name in ("ts", "symbol"):
        # Without ts and symbol a row cannot even be named in a message.
        nulls = frame[name].null_count()
        if nulls:
            raise DataError(f"OHLCV column {name!r} has {nulls} null values")
    bad_symbols = frame.filter(~pl.col("symbol").str.contains(_SAFE_NAME))
    if bad_symbols.height:
        raise DataError(f"OHLCV column 'symbol' has invalid value {bad_symbols['symbol'][0]!r}")
    checks = _row_checks(bar_ms)
    # One parallel pass tells which rules fail; only a failing rule is then located row by row.
    failed = frame.select(
        check.fill_null(False).any().alias(str(i)) for i, (_, _, check) in enumerate(checks)
    ).row(0)
    for (column, rule, violation), is_failed in zip(checks, failed, strict=True):
        if is_failed:
            row = frame.filter(violation.fill_null(False)).sort("ts", "symbol").row(0, named=True)
            raise DataError(
                f"invalid bar for symbol {row['symbol']!r} (source {row['source']!r}, {timeframe}): "
                f"column {column!r} {rule}; first offending ts={row['ts']} ({_iso(row['ts'])}) "
                f"value={row[column]!r}"
            )
    return frame


def _symbol_dir(root: Path, source: str, timeframe: str, symbol: str) -> Path:
    return root / "ohlcv" / f"source={source}" / f"timeframe={timeframe}" / f"symbol={symbol}"


# Rows per parquet row group. Fixed, and the frame is rechunked first: polars otherwise lays row groups
# out along the frame's memory chunks, so equal rows merged in another order came out as other bytes.
ROW_GROUP_ROWS = 65_536


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        frame.rechunk().write_parquet(tmp, compression="zstd", statistics=True, row_group_size=ROW_GROUP_ROWS)
        os.replace(tmp, path)
    except BaseException:
        # The target is untouched; drop the partial temporary so it does not pile up.
        tmp.unlink(missing_ok=True)
        raise


STALE_TEMPORARY_SECONDS = 86_400.0  # a temporary without a readable writer pid is stale after a day


def _pid_alive(pid: int) -> bool:
    try:
        # Signal 0 only checks; a process of another user refuses it (PermissionError) but is alive.
        with contextlib.suppress(PermissionError):
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stale_reason(path: Path, now: float, max_age_seconds: float) -> str | None:
    """Say why the temporary ``path`` is stale, or None when it may still be written."""
    suffix = path.name.rpartition(".tmp-")[2]
    if suffix.isdigit() and 0 < int(suffix) < 2**31:
        return None if _pid_alive(int(suffix)) else f"writer pid {suffix} is not alive"
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return "unreadable (dangling)"
    return f"no writer pid and {age:,.0f} s old" if age > max_age_seconds else None


def sweep_temporaries(
    root: Path,
    log: Callable[[str], None],
    max_age_seconds: float = STALE_TEMPORARY_SECONDS,
    now: Callable[[], float] = time.time,
) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` files a killed writer left in the lake.

    A temporary whose writer pid is alive (this process included) is never touched; one whose pid is
    not alive is removed. A temporary without a readable pid is removed once older than
    ``max_age_seconds``. Each removal is logged.

    Parameters
    ----------
    root : Path
        Lake root directory (a missing root has nothing to sweep).
    log : callable
        Receives one line per removed file.
    max_age_seconds : float
        Age bound of temporaries without a pid.
    now : callable
        Wall time in seconds (file modification times are wall times).

    Returns
    -------
    list[Path]
        The removed files, sorted.
    """
    removed = []
    for path in sorted((root / "ohlcv").rglob(".*.tmp-*")):
        reason = _stale_reason(path, now(), max_age_seconds)
        if reason is not None:
            path.unlink(missing_ok=True)
            removed.append(path)
            log(f"removed stale lake temporary {path} ({reason})")
    return removed


def _months(frame: pl.DataFrame) -> dict[tuple, pl.DataFrame]:
    opened = pl.from_epoch("ts", time_unit="ms")
    # An integer yyyymm key partitions about twice as fast as a formatted string.
    month = (opened.dt.year().cast(pl.Int32) * 100 + opened.dt.month()).alias("_month")
    return frame.with_columns(month).partition_by("source", "symbol", "_month", as_dict=True)


def _month_path(root: Path, source: str, timeframe: str, symbol: str, yyyymm: int) -> Path:
    return _symbol_dir(root, source, timeframe, symbol) / f"{yyyymm // 100:04d}-{yyyymm % 100:02d}.parquet"


_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


def conflicting_bars(root: Path, frame: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Return the bars of ``frame`` whose (source, symbol, ts) is in the lake with other values.

    Parameters
    ----------
    root : Path
        Lake root directory.
    frame : pl.DataFrame
        Valid bars (see :func:`validate_ohlcv`).
    timeframe : str
        Bar length of every row.

    Returns
    -------
    pl.DataFrame
        ``ts, symbol, source``, then ``old_<column>`` and ``new_<column>`` for open, high, low, close,
        volume and batch_id; sorted by (source, symbol, ts); empty when nothing conflicts.
    """
    frame = validate_ohlcv(frame, timeframe)
    found = []
    for (source, symbol, yyyymm), part in _months(frame).items() if frame.height else ():
        path = _month_path(root, source, timeframe, symbol, yyyymm)
        if not path.is_file():
            continue
        old = pl.read_parquet(path).select("ts", *_VALUE_COLUMNS, "batch_id")
        joined = old.join(part.drop("_month"), on="ts", how="inner", suffix="_new")
        differs = pl.any_horizontal(pl.col(c) != pl.col(f"{c}_new") for c in _VALUE_COLUMNS)
        found.append(
            joined.filter(differs).select(
                "ts", "symbol", "source",
                *(pl.col(c).alias(f"old_{c}") for c in (*_VALUE_COLUMNS, "batch_id")),
                *(pl.col(f"{c}_new").alias(f"new_{c}") for c in (*_VALUE_COLUMNS, "batch_id")),
            )
        )  # fmt: skip
    columns = {"ts": pl.Int64(), "symbol": pl.String(), "source": pl.String()}
    for prefix in ("old_", "new_"):
        columns.update({f"{prefix}{c}": OHLCV_SCHEMA[c] for c in (*_VALUE_COLUMNS, "batch_id")})
    return pl.concat([pl.DataFrame(schema=columns), *found]).sort("source", "symbol", "ts")


def write_ohlcv(root: Path, frame: pl.DataFrame, timeframe: str, supersede: bool = False) -> list[Path]:
    """Validate bars and merge them into the month files of the lake.

    By default existing bars win: a row whose ``ts`` is already in its month file is ignored; new
    ``ts`` are added. With ``supersede=True`` a row replaces the bar at its ``ts`` (callers record
    the old values as revision evidence first, see :func:`conflicting_bars`). A file whose content
    would not change is not rewritten. Every row is validated before any file is written, and each
    file is written to ``.<name>.tmp-<pid>`` next to it and then ``os.replace``-d into place.

    Parameters
    ----------
    root : Path
        Lake root directory.
    frame : pl.DataFrame
        Bars in the canonical columns (see :func:`validate_ohlcv`); may hold several symbols/sources.
    timeframe : str
        Bar length of every row, a key of :data:`TIMEFRAME_MS`.

    Returns
    -------
    list[Path]
        The files written, sorted (empty when nothing changed).

    Raises
    ------
    DataError
        When the frame is invalid; nothing is written then.
    """
    frame = validate_ohlcv(frame, timeframe)
    if frame.is_empty():
        return []
    planned: list[tuple[Path, pl.DataFrame]] = []
    # Merge everything first so that a failure while reading leaves the lake as it was.
    for (source, symbol, yyyymm), part in _months(frame).items():
        path = _month_path(root, source, timeframe, symbol, yyyymm)
        part = part.drop("_month")
        if supersede and path.is_file():
            old = pl.read_parquet(path)
            # A bar equal in value keeps its old batch id: only a real revision replaces a row.
            same = old.join(part, on=["ts", *_VALUE_COLUMNS], how="semi", nulls_equal=False).select("ts")
            part = part.join(same, on="ts", how="anti")
            merged = pl.concat([old.join(part, on="ts", how="anti"), part]).sort("ts")
            if merged.equals(old):
                continue
            part = merged
        elif path.is_file():
            # Reading only ts first keeps the common no-change case cheap.
            new = part.join(pl.read_parquet(path, columns=["ts"]), on="ts", how="anti")
            if new.is_empty():
                continue
            part = pl.concat([pl.read_parquet(path), new]).sort("ts")
        planned.append((path, part))
    for path, part in planned:
        _write_atomic(part, path)
    return sorted(path for path, _ in planned)


def _month_bounds(year: int, month: int) -> tuple[int, int]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def lake_files(
    root: Path,
    source: str,
    timeframe: str,
    symbols: Sequence[str],
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Path]:
    """List the month files holding bars of ``symbols`` in [start_ms, end_ms).

    Parameters
    ----------
    root : Path
        Lake root directory.
    source, timeframe : str
        Partition to look in.
    symbols : Sequence[str]
        Symbols to look for; symbols without files contribute nothing.
    start_ms, end_ms : int or None
        Half-open range of bar open times in UTC ms; None means unbounded.

    Returns
    -------
    list[Path]
        Existing month files overlapping the range, sorted.
    """
    _check_timeframe(timeframe)
    files: list[Path] = []
    for symbol in dict.fromkeys(symbols):
        folder = _symbol_dir(root, source, timeframe, symbol)
        # The pattern skips temporaries (".<name>.tmp-<pid>") and anything else that is not a month file.
        for path in folder.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].parquet"):
            first, after = _month_bounds(int(path.stem[:4]), int(path.stem[5:7]))
            if (end_ms is None or first < end_ms) and (start_ms is None or after > start_ms):
                files.append(path)
    return sorted(files)


def read_ohlcv(
    root: Path,
    source: str,
    timeframe: str,
    symbols: Sequence[str],
    start_ms: int | None = None,
    end_ms: int | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Read bars of ``symbols`` in [start_ms, end_ms) from the lake.

    Parameters
    ----------
    root : Path
        Lake root directory.
    source, timeframe : str
        Partition to read.
    symbols : Sequence[str]
        Symbols to read (at least one).
    start_ms, end_ms : int or None
        Half-open range of bar open times in UTC ms; None means unbounded.
    columns : Sequence[str] or None
        The columns to read (they must include ``ts`` and ``symbol``), in this order; None reads every
        canonical column. Parquet reads only these.

    Returns
    -------
    pl.DataFrame
        Canonical columns (or ``columns``), sorted by (ts, symbol).

    Raises
    ------
    DataError
        On no symbols, an empty range, an unknown timeframe, or a symbol without bars in the range
        (naming the symbol, source and timeframe).
    """
    if not symbols:
        raise DataError("read_ohlcv needs at least one symbol")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise DataError(f"empty range: start_ms={start_ms} must be < end_ms={end_ms}")
    wanted = sorted(set(symbols))
    by_month: dict[str, list[Path]] = {}
    for symbol in wanted:
        for path in lake_files(root, source, timeframe, [symbol], start_ms, end_ms):
            by_month.setdefault(path.name, []).append(path)
    # A bar lives only in its month's files, and those are listed in symbol order with rows in ts order,
    # so a stable sort on ts per month gives global (ts, symbol) order; small per-month sorts run in
    # parallel and beat one sort on (ts, symbol) over all rows.
    scans = []
    for name in sorted(by_month):
        scan = pl.scan_parquet(by_month[name], hive_partitioning=False)
        if columns is not None:
            scan = scan.select(columns)
        if start_ms is not None:
            scan = scan.filter(pl.col("ts") >= start_ms)
        if end_ms is not None:
            scan = scan.filter(pl.col("ts") < end_ms)
        scans.append(scan.sort("ts", maintain_order=True))
    present: set[str] = set()
    frame = pl.DataFrame(schema=OHLCV_SCHEMA if columns is None else {c: OHLCV_SCHEMA[c] for c in columns})
    if scans:
        frame = pl.concat(scans).collect()
        present = set(frame["symbol"].unique().to_list())
    for symbol in wanted:
        if symbol not in present:
            raise DataError(
                f"no bars for symbol {symbol!r} (source {source!r}, timeframe {timeframe!r}) "
                f"in [{_iso(start_ms)}, {_iso(end_ms)})"
            )
    return frame


def snapshot(paths: Sequence[Path], root: Path) -> dict[str, str]:
    """Fingerprint lake files for lineage and replay.

    Parameters
    ----------
    paths : Sequence[Path]
        Files under ``root``.
    root : Path
        Lake root the keys are relative to.

    Returns
    -------
    dict[str, str]
        Relative posix path -> sha256 hex of the file bytes, sorted by key.

    Raises
    ------
    DataError
        When a path is not under ``root``.
    """
    digests: dict[str, str] = {}
    for path in paths:
        if not path.is_relative_to(root):
            raise DataError(f"{path} is not under the lake root {root}")
        with path.open("rb") as handle:
            digests[path.relative_to(root).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return dict(sorted(digests.items()))
