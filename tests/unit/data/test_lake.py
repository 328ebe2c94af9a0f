"""Tests of the parquet OHLCV lake: layout, validation, merging, atomic writes, reads and snapshots."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from backend.data import lake
from backend.data.lake import (
    OHLCV_SCHEMA,
    TIMEFRAME_MS,
    lake_files,
    read_ohlcv,
    snapshot,
    validate_ohlcv,
    write_ohlcv,
)
from backend.errors import DataError

HOUR = TIMEFRAME_MS["1h"]


def ms(text: str) -> int:
    """Return UTC milliseconds of an ISO date-time such as "2024-01-31T23:00"."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def bars(
    symbol: str,
    start: str,
    n: int,
    *,
    bar_ms: int = HOUR,
    source: str = "simulated",
    batch_id: str = "b1",
    price: float = 100.0,
) -> pl.DataFrame:
    """Build ``n`` valid bars starting at ``start``; prices step by 1 per bar from ``price``."""
    first = ms(start)
    opens = [price + i for i in range(n)]
    return pl.DataFrame(
        {
            "ts": [first + i * bar_ms for i in range(n)],
            "symbol": [symbol] * n,
            "open": opens,
            "high": [p + 2.0 for p in opens],
            "low": [p - 1.0 for p in opens],
            "close": [p + 1.0 for p in opens],
            "volume": [10.0] * n,
            "source": [source] * n,
            "batch_id": [batch_id] * n,
        },
        schema=OHLCV_SCHEMA,
    )


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_write_creates_one_file_per_source_symbol_and_utc_month(tmp_path: Path) -> None:
    frame = pl.concat([bars("BTC", "2024-01-31T22:00", 4), bars("ETH", "2024-02-01T00:00", 2)])

    written = write_ohlcv(tmp_path, frame, "1h")

    base = tmp_path / "ohlcv" / "source=simulated" / "timeframe=1h"
    assert written == [
        base / "symbol=BTC" / "2024-01.parquet",
        base / "symbol=BTC" / "2024-02.parquet",
        base / "symbol=ETH" / "2024-02.parquet",
    ]
    assert all_files(tmp_path) == written
    january = pl.read_parquet(written[0])
    assert january["ts"].to_list() == [ms("2024-01-31T22:00"), ms("2024-01-31T23:00")]
    assert january.schema == pl.Schema(OHLCV_SCHEMA)


def test_write_uses_zstd_compression_with_statistics(tmp_path: Path) -> None:
    (path,) = write_ohlcv(tmp_path, bars("BTC", "2024-01-01T00:00", 3), "1h")

    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert column.statistics.min == ms("2024-01-01T00:00")


def test_write_then_read_round_trips_sorted_by_ts_then_symbol(tmp_path: Path) -> None:
    frame = pl.concat([bars("ETH", "2024-03-01T00:00", 30), bars("BTC", "2024-02-28T20:00", 40)])
    write_ohlcv(tmp_path, frame, "1h")

    result = read_ohlcv(tmp_path, "simulated", "1h", ["ETH", "BTC", "ETH"])

    assert result.equals(frame.sort("ts", "symbol"))
    assert result.schema == pl.Schema(OHLCV_SCHEMA)


def test_write_accepts_columns_in_any_order(tmp_path: Path) -> None:
    frame = bars("BTC", "2024-01-01T00:00", 3)
    write_ohlcv(tmp_path, frame.select(reversed(frame.columns)), "1h")

    assert read_ohlcv(tmp_path, "simulated", "1h", ["BTC"]).equals(frame)


def test_write_of_an_empty_frame_writes_nothing(tmp_path: Path) -> None:
    assert write_ohlcv(tmp_path, pl.DataFrame(schema=OHLCV_SCHEMA), "1h") == []
    assert all_files(tmp_path) == []


def test_write_splits_sources_into_their_own_partitions(tmp_path: Path) -> None:
    frame = pl.concat(
        [bars("BTC", "2024-01-01T00:00", 2), bars("BTC", "2024-01-01T00:00", 2, source="kraken")]
    )

    written = write_ohlcv(tmp_path, frame, "1h")

    assert [p.relative_to(tmp_path).parts[1] for p in written] == ["source=kraken", "source=simulated"]
    assert read_ohlcv(tmp_path, "kraken", "1h", ["BTC"])["source"].to_list() == ["kraken", "kraken"]


def test_second_identical_write_changes_no_file(tmp_path: Path) -> None:
    frame = bars("BTC", "2024-01-30T00:00", 72)
    first = write_ohlcv(tmp_path, frame, "1h")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first}

    assert write_ohlcv(tmp_path, frame, "1h") == []
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first} == before


def test_existing_bars_win_and_only_changed_months_are_rewritten(tmp_path: Path) -> None:
    write_ohlcv(tmp_path, bars("BTC", "2024-01-31T22:00", 2, batch_id="old"), "1h")
    write_ohlcv(tmp_path, bars("BTC", "2024-02-01T00:00", 2, batch_id="old"), "1h")
    january = tmp_path / "ohlcv/source=simulated/timeframe=1h/symbol=BTC/2024-01.parquet"
    january_before = (january.stat().st_mtime_ns, january.read_bytes())
    # Overlaps all four existing bars with other prices and adds two new February bars.
    revision = bars("BTC", "2024-01-31T22:00", 6, batch_id="new", price=500.0)

    written = write_ohlcv(tmp_path, revision, "1h")

    assert [p.name for p in written] == ["2024-02.parquet"]
    assert (january.stat().st_mtime_ns, january.read_bytes()) == january_before
    result = read_ohlcv(tmp_path, "simulated", "1h", ["BTC"])
    assert result["batch_id"].to_list() == ["old"] * 4 + ["new"] * 2
    assert result["open"].to_list() == [100.0, 101.0, 100.0, 101.0, 504.0, 505.0]
    assert result["ts"].is_sorted()



def test_the_same_bars_make_the_same_file_bytes_however_they_were_merged(tmp_path: Path) -> None:
    whole = bars("BTC", "2024-01-01T00:00", 600)
    in_pieces = whole.head(300), whole.tail(300)
    write_ohlcv(tmp_path / "whole", whole, "1h")
    for piece in in_pieces:
        write_ohlcv(tmp_path / "pieces", piece, "1h")
    write_ohlcv(tmp_path / "revised", in_pieces[0], "1h")
    write_ohlcv(tmp_path / "revised", whole, "1h", supersede=True)
    # The file writer itself, given a frame of many memory chunks (polars lays row groups out along them).
    chunked = pl.concat([whole.slice(i, 50) for i in range(0, 600, 50)], rechunk=False)
    assert chunked.n_chunks() == 12
    lake._write_atomic(chunked, tmp_path / "chunked.parquet")
    lake._write_atomic(whole, tmp_path / "single.parquet")

    month = "ohlcv/source=simulated/timeframe=1h/symbol=BTC/2024-01.parquet"
    digests = {hashlib.sha256((tmp_path / name / month).read_bytes()).hexdigest() for name in ("whole", "pieces", "revised")}
    assert len(digests) == 1
    assert (tmp_path / "chunked.parquet").read_bytes() == (tmp_path / "single.parquet").read_bytes()
    layout = pq.ParquetFile(tmp_path / "single.parquet").metadata
    assert layout.num_row_groups == 1 and layout.row_group(0).num_rows == 600 <= lake.ROW_GROUP_ROWS

def test_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_ohlcv(tmp_path, bars("BTC", "2024-01-01T00:00", 800), "1h")
    write_ohlcv(tmp_path, bars("BTC", "2024-01-20T00:00", 800), "1h")

    assert [p for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []
    assert all(p.name.endswith(".parquet") for p in all_files(tmp_path))


def test_failed_replace_removes_the_temporary_and_raises(tmp_path: Path) -> None:
    # A directory squatting on the target name makes os.replace fail after the temporary is written.
    target = tmp_path / "ohlcv/source=simulated/timeframe=1h/symbol=BTC/2024-01.parquet"
    target.mkdir(parents=True)

    with pytest.raises(IsADirectoryError):
        write_ohlcv(tmp_path, bars("BTC", "2024-01-01T00:00", 3), "1h")

    assert list(target.parent.iterdir()) == [target]


def _with(frame: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


VALID = bars("BTC", "2024-01-01T00:00", 5)
TS2 = str(ms("2024-01-01T02:00"))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(VALID.drop("volume"), "missing column 'volume'", id="missing-column"),
        pytest.param(VALID.with_columns(extra=pl.lit(1)), "unexpected column 'extra'", id="extra-column"),
        pytest.param(VALID.with_columns(pl.col("volume").cast(pl.Float32)), "'volume' has dtype", id="dtype"),
        pytest.param(VALID.with_columns(pl.col("ts").cast(pl.Datetime)), "'ts' has dtype", id="ts-dtype"),
        pytest.param(_with(VALID, 2, "ts", None), "'ts' has 1 null", id="null-ts"),
        pytest.param(_with(VALID, 2, "symbol", None), "'symbol' has 1 null", id="null-symbol"),
        pytest.param(_with(VALID, 2, "symbol", "../BTC"), "invalid value '../BTC'", id="unsafe-symbol"),
        pytest.param(_with(VALID, 2, "source", None), "'source' must not be null", id="null-source"),
        pytest.param(_with(VALID, 2, "source", "a/b"), "value='a/b'", id="unsafe-source"),
        pytest.param(_with(VALID, 2, "batch_id", None), "'batch_id' must not be null", id="null-batch"),
        pytest.param(_with(VALID, 2, "open", None), "'open' must be finite and > 0", id="null-open"),
        pytest.param(_with(VALID, 2, "open", float("nan")), "value=nan", id="nan-open"),
        pytest.param(_with(VALID, 2, "close", 0.0), "'close' must be finite and > 0", id="zero-close"),
        pytest.param(_with(VALID, 2, "low", -1.0), "value=-1.0", id="negative-low"),
        pytest.param(_with(VALID, 2, "high", float("inf")), "value=inf", id="inf-high"),
        pytest.param(_with(VALID, 2, "volume", -0.5), "'volume' must be finite and >= 0", id="neg-volume"),
        pytest.param(_with(VALID, 2, "volume", float("nan")), "'volume' must be finite", id="nan-volume"),
        pytest.param(_with(VALID, 2, "high", 102.5), "'high' must be >= max(open, close)", id="high-low"),
        pytest.param(_with(VALID, 2, "low", 102.5), "'low' must be <= min(open, close)", id="low-above-open"),
        pytest.param(_with(VALID, 2, "ts", ms("2024-01-01T02:30")), "must be aligned", id="misaligned"),
        pytest.param(_with(VALID, 2, "ts", ms("2024-01-01T01:00")), "strictly increasing", id="duplicate-ts"),
        pytest.param(VALID.reverse(), "strictly increasing", id="decreasing-ts"),
    ],
)
def test_invalid_frame_raises_and_writes_nothing(tmp_path: Path, frame: pl.DataFrame, expected: str) -> None:
    with pytest.raises(DataError, match=re.escape(expected)):
        write_ohlcv(tmp_path, frame, "1h")

    assert all_files(tmp_path) == []


def test_row_error_names_symbol_column_first_offending_ts_and_value(tmp_path: Path) -> None:
    frame = pl.concat([bars("ETH", "2024-01-01T00:00", 5), VALID])
    frame = _with(frame, 8, "volume", -3.0)  # BTC 03:00
    frame = _with(frame, 7, "volume", -2.0)  # BTC 02:00, the first offending ts

    with pytest.raises(DataError) as error:
        write_ohlcv(tmp_path, frame, "1h")

    message = str(error.value)
    assert "'BTC'" in message
    assert "'volume'" in message
    assert f"ts={TS2} (2024-01-01T02:00:00Z)" in message
    assert "value=-2.0" in message


def test_invalid_rows_of_one_symbol_block_the_valid_symbols_too(tmp_path: Path) -> None:
    frame = pl.concat([bars("ETH", "2024-01-01T00:00", 5), _with(VALID, 0, "open", -1.0)])

    with pytest.raises(DataError, match="'BTC'"):
        write_ohlcv(tmp_path, frame, "1h")

    assert all_files(tmp_path) == []


def test_unknown_timeframe_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown timeframe '2h'"):
        write_ohlcv(tmp_path, VALID, "2h")
    with pytest.raises(DataError, match="unknown timeframe '2h'"):
        read_ohlcv(tmp_path, "simulated", "2h", ["BTC"])


def test_validate_returns_canonical_column_order() -> None:
    shuffled = VALID.select(sorted(VALID.columns))

    assert validate_ohlcv(shuffled, "1h").columns == list(OHLCV_SCHEMA)


def test_same_ts_in_two_symbols_is_not_a_duplicate() -> None:
    frame = pl.concat([bars("BTC", "2024-01-01T00:00", 3), bars("ETH", "2024-01-01T00:00", 3)]).sort("ts")

    assert validate_ohlcv(frame, "1h").height == 6


@pytest.fixture
def two_symbol_lake(tmp_path: Path) -> Path:
    """BTC and ETH hourly bars from 2023-12-31 00:00 to 2024-03-01 23:00 (four month files each)."""
    n = 24 * (1 + 31 + 29 + 1)
    frame = pl.concat([bars("BTC", "2023-12-31T00:00", n), bars("ETH", "2023-12-31T00:00", n)])
    write_ohlcv(tmp_path, frame, "1h")
    return tmp_path


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (None, None, ["2023-12", "2024-01", "2024-02", "2024-03"]),
        ("2024-01-01T00:00", None, ["2024-01", "2024-02", "2024-03"]),
        ("2023-12-31T23:00", "2024-01-01T00:00", ["2023-12"]),
        (None, "2024-02-01T00:00", ["2023-12", "2024-01"]),
        (None, "2024-02-01T01:00", ["2023-12", "2024-01", "2024-02"]),
        ("2024-02-29T23:00", "2024-03-01T01:00", ["2024-02", "2024-03"]),
    ],
)
def test_lake_files_lists_only_months_overlapping_the_half_open_range(
    two_symbol_lake: Path, start: str | None, end: str | None, months: list[str]
) -> None:
    files = lake_files(
        two_symbol_lake, "simulated", "1h", ["ETH", "BTC"], start and ms(start), end and ms(end)
    )

    assert [f"{p.parent.name}/{p.stem}" for p in files] == [f"symbol=BTC/{m}" for m in months] + [
        f"symbol=ETH/{m}" for m in months
    ]


def test_lake_files_ignores_temporaries_and_other_files(two_symbol_lake: Path) -> None:
    folder = two_symbol_lake / "ohlcv/source=simulated/timeframe=1h/symbol=BTC"
    (folder / ".2024-01.parquet.tmp-123").write_bytes(b"torn")
    (folder / "notes.parquet").write_bytes(b"not a month")

    assert len(lake_files(two_symbol_lake, "simulated", "1h", ["BTC"])) == 4
    assert read_ohlcv(two_symbol_lake, "simulated", "1h", ["BTC"]).height == 24 * 62


@pytest.mark.parametrize(
    ("start", "end", "first", "last"),
    [
        ("2024-01-15T05:00", "2024-02-10T00:00", "2024-01-15T05:00", "2024-02-09T23:00"),
        ("2024-02-29T12:00", None, "2024-02-29T12:00", "2024-03-01T23:00"),
        (None, "2024-01-01T00:00", "2023-12-31T00:00", "2023-12-31T23:00"),
    ],
)
def test_read_filters_bars_to_the_half_open_range(
    two_symbol_lake: Path, start: str | None, end: str | None, first: str, last: str
) -> None:
    result = read_ohlcv(
        two_symbol_lake, "simulated", "1h", ["BTC", "ETH"], start and ms(start), end and ms(end)
    )

    assert result["ts"].min() == ms(first)
    assert result["ts"].max() == ms(last)
    expected_bars = (ms(last) - ms(first)) // HOUR + 1
    assert result.height == 2 * expected_bars
    assert result["symbol"].to_list()[:4] == ["BTC", "ETH", "BTC", "ETH"]


def test_reading_some_columns_gives_those_columns_of_the_full_read(two_symbol_lake: Path) -> None:
    columns = ("ts", "symbol", "close", "open")
    start, end = ms("2024-01-15T05:00"), ms("2024-02-10T00:00")

    some = read_ohlcv(two_symbol_lake, "simulated", "1h", ["BTC", "ETH"], start, end, columns)

    assert some.columns == list(columns)
    assert some.equals(read_ohlcv(two_symbol_lake, "simulated", "1h", ["BTC", "ETH"], start, end).select(columns))


@pytest.mark.parametrize("symbols", [["BTC", "SOL"], ["SOL"]])
def test_read_raises_for_a_symbol_without_files(two_symbol_lake: Path, symbols: list[str]) -> None:
    with pytest.raises(DataError, match="'SOL'.*source 'simulated'.*timeframe '1h'"):
        read_ohlcv(two_symbol_lake, "simulated", "1h", symbols)


def test_read_raises_for_a_symbol_without_bars_in_the_range(tmp_path: Path) -> None:
    frame = pl.concat([bars("BTC", "2024-01-01T00:00", 100), bars("ETH", "2024-01-01T00:00", 10)])
    write_ohlcv(tmp_path, frame, "1h")

    with pytest.raises(DataError, match="no bars for symbol 'ETH'"):
        read_ohlcv(
            tmp_path, "simulated", "1h", ["BTC", "ETH"], ms("2024-01-03T00:00"), ms("2024-01-04T00:00")
        )


def test_read_raises_for_no_symbols(two_symbol_lake: Path) -> None:
    with pytest.raises(DataError, match="at least one symbol"):
        read_ohlcv(two_symbol_lake, "simulated", "1h", [])


@pytest.mark.parametrize("end", ["2024-01-01T00:00", "2023-12-31T00:00"])
def test_read_raises_for_an_empty_range(two_symbol_lake: Path, end: str) -> None:
    with pytest.raises(DataError, match="empty range"):
        read_ohlcv(two_symbol_lake, "simulated", "1h", ["BTC"], ms("2024-01-01T00:00"), ms(end))


def test_snapshot_hashes_files_by_relative_posix_path(two_symbol_lake: Path) -> None:
    files = lake_files(two_symbol_lake, "simulated", "1h", ["BTC", "ETH"])

    digests = snapshot(list(reversed(files)), two_symbol_lake)

    assert list(digests) == sorted(digests)
    assert list(digests)[0] == "ohlcv/source=simulated/timeframe=1h/symbol=BTC/2023-12.parquet"
    assert digests == {
        p.relative_to(two_symbol_lake).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def test_snapshot_changes_when_a_file_changes(two_symbol_lake: Path) -> None:
    files = lake_files(two_symbol_lake, "simulated", "1h", ["BTC"])
    before = snapshot(files, two_symbol_lake)

    write_ohlcv(two_symbol_lake, bars("BTC", "2024-03-02T00:00", 1), "1h")

    after = snapshot(files, two_symbol_lake)
    assert [key for key in before if before[key] != after[key]] == [
        "ohlcv/source=simulated/timeframe=1h/symbol=BTC/2024-03.parquet"
    ]


def test_snapshot_rejects_a_path_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(b"x")

    with pytest.raises(DataError, match="not under the lake root"):
        snapshot([outside], tmp_path / "lake")
