"""Load the real recorded candles of ``shared/data`` (see its SOURCES.md) in the canonical lake columns.

Binance spot candles come from freqtrade feather files spread over four folders that are stitched per
symbol; Kraken's official OHLCVT CSVs give long BTC and ETH hourly history. Gaps stay gaps: no bar is
ever invented, and a bar breaking OHLC sanity raises instead of being dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from backend.data.lake import OHLCV_SCHEMA, validate_ohlcv, write_ohlcv
from backend.errors import DataError

# Folder preference when stitching: values are identical where they overlap, the first folder wins.
BINANCE_FOLDERS = ("roshan7869", "mounik", "genetrader", "harthor")
KRAKEN_OHLCVT_FILES = {"BTC": "XBTUSD_60.csv", "ETH": "ETHUSD_60.csv"}
_PRICE_VOLUME = ("open", "high", "low", "close", "volume")


def default_shared_dir(repo_root: Path | None = None) -> Path | None:
    """Locate the shared data directory.

    Parameters
    ----------
    repo_root : Path or None
        Repository root; None means the repository holding this file.

    Returns
    -------
    Path or None
        ``$ACTS_SHARED_DATA`` if set, else ``<repo_root>/../shared/data`` if it is a directory, else None.
    """
    configured = os.environ.get("ACTS_SHARED_DATA")
    if configured:
        return Path(configured)
    if repo_root is None:
        repo_root = Path(__file__).resolve().parents[2]
    candidate = repo_root.parent / "shared" / "data"
    if candidate.is_dir():
        return candidate
    return None


def _batch_id(paths: Sequence[Path], base: Path) -> str:
    """Return "shared:" + 12 hex of a sha256 over the relative paths and bytes of ``paths``."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(base).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return "shared:" + digest.hexdigest()[:12]


def _read_feather(path: Path) -> pl.DataFrame:
    frame = pl.read_ipc(path)
    expected = {"date": pl.Datetime("ns", "UTC"), **dict.fromkeys(_PRICE_VOLUME, pl.Float64())}
    for name, dtype in expected.items():
        if frame.schema.get(name) != dtype:
            raise DataError(f"{path}: column {name!r} is {frame.schema.get(name)}, expected {dtype}")
    return frame.select(pl.col("date").dt.epoch("ms").alias("ts"), *_PRICE_VOLUME)


def _reconcile_overlaps(symbol: str, combined: pl.DataFrame, paths: Sequence[Path], base: Path) -> None:
    """Refuse a symbol whose recorded folders disagree on a bar both hold (stitching must never choose silently)."""
    overlap = combined.filter(pl.len().over("ts") > 1)
    if overlap.is_empty():
        return
    spread = overlap.group_by("ts").agg(pl.any_horizontal(*(pl.col(c).n_unique() > 1 for c in _PRICE_VOLUME)).alias("differs"))
    differing = spread.filter(pl.col("differs")).sort("ts")
    if differing.height:
        folders = [path.relative_to(base).parent.name for path in paths]
        raise DataError(
            f"shared data for {symbol} does not reconcile: folders {folders} disagree on {differing.height} of "
            f"{spread.height} overlapping bars (first at ts {int(differing['ts'][0])}); values must be identical where they overlap"
        )


def load_shared_ohlcv(
    shared_data: Path, symbols: Sequence[str], timeframe: str
) -> tuple[pl.DataFrame, list[str]]:
    """Load and stitch Binance spot candles for ``symbols``.

    For each symbol every folder of :data:`BINANCE_FOLDERS` holding
    ``ohlcv/binance_<folder>/<SYMBOL>_USDT-<timeframe>.feather`` is read; where two folders hold the
    same bar their values must be identical (reconciliation: a disagreement raises), and the bar is kept
    once. Gaps are kept. ``batch_id`` is per symbol,
    ``"shared:" + sha256(files)[:12]``, so re-importing the same files gives the same lake.

    Parameters
    ----------
    shared_data : Path
        The ``shared/data`` directory.
    symbols : Sequence[str]
        Base assets, e.g. ``["BTC", "ETH"]``.
    timeframe : str
        ``"1h"`` or ``"5m"`` (the timeframes recorded); another known timeframe finds no file.

    Returns
    -------
    tuple[pl.DataFrame, list[str]]
        Canonical bars (source ``"binance"``) sorted by (ts, symbol), and the sorted symbols without any file.

    Raises
    ------
    DataError
        On an unknown timeframe, a file with unexpected columns, folders disagreeing on a bar they both
        hold, or a bar breaking the lake rules.
    """
    frames: list[pl.DataFrame] = []
    missing: list[str] = []
    for symbol in sorted(set(symbols)):
        paths = [
            shared_data / "ohlcv" / f"binance_{folder}" / f"{symbol}_USDT-{timeframe}.feather"
            for folder in BINANCE_FOLDERS
        ]
        paths = [path for path in paths if path.is_file()]
        if not paths:
            missing.append(symbol)
            continue
        parts = [_read_feather(path).with_columns(_rank=pl.lit(rank)) for rank, path in enumerate(paths)]
        combined = pl.concat(parts)
        _reconcile_overlaps(symbol, combined, paths, shared_data)
        stitched = combined.sort("ts", "_rank").unique("ts", keep="first", maintain_order=True)
        batch_id = _batch_id(paths, shared_data)
        frames.append(
            stitched.drop("_rank").with_columns(
                symbol=pl.lit(symbol), source=pl.lit("binance"), batch_id=pl.lit(batch_id)
            )
        )
    frame = pl.concat([pl.DataFrame(schema=OHLCV_SCHEMA), *frames], how="diagonal_relaxed")
    frame = validate_ohlcv(frame.sort("ts", "symbol"), timeframe)
    return frame, missing


def load_kraken_ohlcvt(shared_data: Path) -> pl.DataFrame:
    """Load Kraken's official hourly OHLCVT CSVs for BTC (XBTUSD) and ETH.

    Parameters
    ----------
    shared_data : Path
        The ``shared/data`` directory holding ``ohlcv/kraken_ohlcvt/{XBTUSD,ETHUSD}_60.csv``
        (no header; time in Unix seconds, open, high, low, close, volume, trades).

    Returns
    -------
    pl.DataFrame
        Canonical bars (source ``"kraken"``, timeframe 1h, trade count dropped) sorted by (ts, symbol).

    Raises
    ------
    DataError
        When a file is missing or a bar breaks the lake rules.
    """
    frames = []
    for symbol, name in KRAKEN_OHLCVT_FILES.items():
        path = shared_data / "ohlcv" / "kraken_ohlcvt" / name
        if not path.is_file():
            raise DataError(f"Kraken OHLCVT file for {symbol} not found: {path}")
        raw = pl.read_csv(
            path,
            has_header=False,
            schema={"time": pl.Int64, **dict.fromkeys(_PRICE_VOLUME, pl.Float64), "trades": pl.Int64},
        )
        frames.append(
            raw.select(
                (pl.col("time") * 1000).alias("ts"),
                pl.lit(symbol).alias("symbol"),
                *_PRICE_VOLUME,
                source=pl.lit("kraken"),
                batch_id=pl.lit(_batch_id([path], shared_data)),
            )
        )
    return validate_ohlcv(pl.concat(frames).sort("ts", "symbol"), "1h")


def import_shared(
    shared_data: Path, lake_root: Path, symbols: Sequence[str], timeframe: str
) -> dict[str, list[str] | int]:
    """Load Binance candles for ``symbols`` and merge them into the lake.

    Idempotent: a second call with the same inputs writes no file.

    Parameters
    ----------
    shared_data : Path
        The ``shared/data`` directory.
    lake_root : Path
        Lake root directory.
    symbols : Sequence[str]
        Base assets to import.
    timeframe : str
        ``"1h"`` or ``"5m"``.

    Returns
    -------
    dict
        ``{"symbols": loaded symbols, "missing": symbols without a file, "rows": bars loaded,
        "files": lake files written}``.

    Raises
    ------
    DataError
        When a bar breaks the lake rules (nothing is written then).
    """
    frame, missing = load_shared_ohlcv(shared_data, symbols, timeframe)
    written = write_ohlcv(lake_root, frame, timeframe)
    return {
        "symbols": frame["symbol"].unique().sort().to_list(),
        "missing": missing,
        "rows": frame.height,
        "files": len(written),
    }
