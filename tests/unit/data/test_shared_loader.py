"""Tests of the loader of recorded candles.

Small files in the exact real formats (freqtrade feather, Kraken OHLCVT CSV) are generated under
tmp_path, in the real folder layout; tests marked ``shared_data`` also check the real ../shared/data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import backend.data.shared_loader as shared_loader
from backend.data.lake import OHLCV_SCHEMA, read_ohlcv
from backend.data.shared_loader import (
    default_shared_dir,
    import_shared,
    load_kraken_ohlcvt,
    load_shared_ohlcv,
)
from backend.errors import DataError

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def write_freqtrade_feather(
    path: Path, ts_ms: list[int], price: float, *, date_type: pa.DataType | None = None
) -> None:
    """Write candles like freqtrade does: `date` timestamp[ns, UTC] (bar open) and float64 OHLCV."""
    opens = [price + i for i in range(len(ts_ms))]
    table = pa.table(
        {
            "date": pa.array([t * 1_000_000 for t in ts_ms], date_type or pa.timestamp("ns", tz="UTC")),
            "open": pa.array(opens, pa.float64()),
            "high": pa.array([p + 2 for p in opens], pa.float64()),
            "low": pa.array([p - 1 for p in opens], pa.float64()),
            "close": pa.array([p + 1 for p in opens], pa.float64()),
            "volume": pa.array([5.0] * len(ts_ms), pa.float64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    feather.write_feather(table, path)


def hours(first: int, last: int) -> list[int]:
    """Return bar open times T0 + first h .. T0 + last h inclusive."""
    return [T0 + h * HOUR for h in range(first, last + 1)]


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A miniature shared/data with the real folder names and formats."""
    root = tmp_path / "shared" / "data"
    ohlcv = root / "ohlcv"
    write_freqtrade_feather(ohlcv / "binance_roshan7869/BTC_USDT-1h.feather", hours(0, 47), 100.0)
    # AAVE: mounik 0..29, genetrader 20..39 (the same values where it overlaps mounik, as in the real
    # recording), a gap 40..49, harthor 50..59.
    write_freqtrade_feather(ohlcv / "binance_mounik/AAVE_USDT-1h.feather", hours(0, 29), 10.0)
    write_freqtrade_feather(ohlcv / "binance_genetrader/AAVE_USDT-1h.feather", hours(20, 39), 30.0)
    write_freqtrade_feather(ohlcv / "binance_harthor/AAVE_USDT-1h.feather", hours(50, 59), 50.0)
    write_freqtrade_feather(
        ohlcv / "binance_harthor/BTC_USDT-5m.feather", [T0 + i * 300_000 for i in range(24)], 200.0
    )
    kraken = ohlcv / "kraken_ohlcvt"
    kraken.mkdir(parents=True)
    # Kraken's official OHLCVT: no header, time in seconds, hours without trades have no row.
    (kraken / "XBTUSD_60.csv").write_text(
        "1381093200,122.0,122.0,122.0,122.0,0.1,1\n"
        "1381176000,123.61,123.61,123.61,123.61,0.1,1\n"
        "1381197600,123.91,123.91,123.9,123.9,1.9916,2\n"
    )
    (kraken / "ETHUSD_60.csv").write_text(
        "1438956000,3.0,3.0,3.0,3.0,81.85727776,2\n1438966800,3.00001,3.00001,3.0,3.0,42.07329055,2\n"
    )
    return root


def test_binance_bars_come_in_lake_columns_with_ts_in_ms(shared: Path) -> None:
    frame, missing = load_shared_ohlcv(shared, ["BTC"], "1h")

    assert missing == []
    assert frame.schema == pl.Schema(OHLCV_SCHEMA)
    assert frame["ts"].to_list() == hours(0, 47)
    assert frame.row(0, named=True) | {"batch_id": None} == {
        "ts": T0,
        "symbol": "BTC",
        "open": 100.0,
        "high": 102.0,
        "low": 99.0,
        "close": 101.0,
        "volume": 5.0,
        "source": "binance",
        "batch_id": None,
    }


def test_folders_are_stitched_earlier_folder_first_and_gaps_are_kept(shared: Path) -> None:
    frame, _ = load_shared_ohlcv(shared, ["AAVE"], "1h")

    assert frame["ts"].to_list() == hours(0, 39) + hours(50, 59)
    opens = dict(zip(frame["ts"].to_list(), frame["open"].to_list(), strict=True))
    assert opens[T0 + 29 * HOUR] == 39.0  # both folders hold it, with the same values: kept once
    assert opens[T0 + 30 * HOUR] == 40.0  # genetrader fills after mounik ends
    assert opens[T0 + 50 * HOUR] == 50.0  # harthor after the gap


def test_folders_disagreeing_on_a_bar_they_both_hold_do_not_reconcile_and_nothing_is_loaded(shared: Path, tmp_path: Path) -> None:
    write_freqtrade_feather(shared / "ohlcv/binance_genetrader/AAVE_USDT-1h.feather", hours(20, 39), 1000.0)

    with pytest.raises(DataError, match=(
        r"shared data for AAVE does not reconcile: folders \['binance_mounik', 'binance_genetrader', 'binance_harthor'\] "
        rf"disagree on 10 of 10 overlapping bars \(first at ts {T0 + 20 * HOUR}\); values must be identical where they overlap"
    )):
        import_shared(shared, tmp_path / "lake", ["BTC", "AAVE"], "1h")
    assert not (tmp_path / "lake").exists()


def test_several_symbols_are_sorted_by_ts_then_symbol_and_missing_ones_reported(shared: Path) -> None:
    frame, missing = load_shared_ohlcv(shared, ["NOPE", "BTC", "AAVE", "ABC"], "1h")

    assert missing == ["ABC", "NOPE"]
    assert frame.equals(frame.sort("ts", "symbol"))
    assert frame.group_by("symbol").len().sort("symbol").rows() == [("AAVE", 50), ("BTC", 48)]


def test_batch_id_is_a_short_sha_of_the_symbols_input_files(shared: Path) -> None:
    frame, _ = load_shared_ohlcv(shared, ["AAVE", "BTC"], "1h")
    ids = dict(frame.select("symbol", "batch_id").unique().rows())

    assert all(re.fullmatch(r"shared:[0-9a-f]{12}", value) for value in ids.values())
    assert ids["AAVE"] != ids["BTC"]
    alone, _ = load_shared_ohlcv(shared, ["BTC"], "1h")
    assert alone["batch_id"].unique().to_list() == [ids["BTC"]]
    write_freqtrade_feather(shared / "ohlcv/binance_roshan7869/BTC_USDT-1h.feather", hours(0, 47), 101.0)
    changed, _ = load_shared_ohlcv(shared, ["BTC"], "1h")
    assert changed["batch_id"].unique().to_list() != [ids["BTC"]]


def test_five_minute_files_are_loaded_for_the_5m_timeframe(shared: Path) -> None:
    frame, missing = load_shared_ohlcv(shared, ["BTC", "AAVE"], "5m")

    assert missing == ["AAVE"]
    assert frame.height == 24
    assert frame["ts"].diff().drop_nulls().unique().to_list() == [300_000]


def test_no_symbols_give_an_empty_lake_frame(shared: Path) -> None:
    frame, missing = load_shared_ohlcv(shared, [], "1h")

    assert frame.schema == pl.Schema(OHLCV_SCHEMA)
    assert frame.is_empty()
    assert missing == []


def test_unknown_timeframe_is_rejected(shared: Path) -> None:
    with pytest.raises(DataError, match="unknown timeframe '2h'"):
        load_shared_ohlcv(shared, ["BTC"], "2h")


@pytest.mark.parametrize(
    ("date_type", "message"),
    [
        (pa.timestamp("ns"), "column 'date' is Datetime"),  # naive, not UTC
        (pa.int64(), "column 'date' is Int64"),
    ],
)
def test_feather_with_an_unexpected_date_column_is_rejected(
    shared: Path, date_type: pa.DataType, message: str
) -> None:
    path = shared / "ohlcv/binance_roshan7869/ETH_USDT-1h.feather"
    write_freqtrade_feather(path, hours(0, 3), 10.0, date_type=date_type)

    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        load_shared_ohlcv(shared, ["ETH"], "1h")


def test_feather_without_a_volume_column_is_rejected(shared: Path) -> None:
    path = shared / "ohlcv/binance_mounik/ETH_USDT-1h.feather"
    write_freqtrade_feather(path, hours(0, 3), 10.0)
    feather.write_feather(feather.read_table(path).drop_columns(["volume"]), path)

    with pytest.raises(DataError, match="column 'volume' is None"):
        load_shared_ohlcv(shared, ["ETH"], "1h")


def test_kraken_ohlcvt_maps_xbt_to_btc_and_seconds_to_ms(shared: Path) -> None:
    frame = load_kraken_ohlcvt(shared)

    assert frame.schema == pl.Schema(OHLCV_SCHEMA)
    assert frame.select("ts", "symbol").rows() == [
        (1_381_093_200_000, "BTC"),
        (1_381_176_000_000, "BTC"),
        (1_381_197_600_000, "BTC"),
        (1_438_956_000_000, "ETH"),
        (1_438_966_800_000, "ETH"),
    ]
    assert frame["source"].unique().to_list() == ["kraken"]
    assert frame.row(2, named=True)["low"] == 123.9
    assert frame.row(2, named=True)["volume"] == 1.9916


def test_kraken_ohlcvt_missing_file_is_an_error(shared: Path) -> None:
    (shared / "ohlcv/kraken_ohlcvt/ETHUSD_60.csv").unlink()

    with pytest.raises(DataError, match="Kraken OHLCVT file for ETH not found"):
        load_kraken_ohlcvt(shared)


def test_kraken_ohlcvt_bad_bar_is_an_error_not_a_dropped_row(shared: Path) -> None:
    (shared / "ohlcv/kraken_ohlcvt/XBTUSD_60.csv").write_text("1381093200,122.0,121.0,120.0,122.0,0.1,1\n")

    with pytest.raises(DataError, match="'BTC'.*'high' must be >= max"):
        load_kraken_ohlcvt(shared)


def test_import_writes_the_lake_and_reports_what_it_did(shared: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"

    report = import_shared(shared, lake, ["BTC", "AAVE", "NOPE"], "1h")

    assert report == {"symbols": ["AAVE", "BTC"], "missing": ["NOPE"], "rows": 98, "files": 2}
    stored = read_ohlcv(lake, "binance", "1h", ["AAVE", "BTC"])
    assert stored.equals(load_shared_ohlcv(shared, ["AAVE", "BTC"], "1h")[0])


def test_import_is_idempotent(shared: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    import_shared(shared, lake, ["BTC", "AAVE"], "1h")
    files = sorted(lake.rglob("*.parquet"))
    before = [(p.stat().st_mtime_ns, p.read_bytes()) for p in files]

    report = import_shared(shared, lake, ["BTC", "AAVE"], "1h")

    assert report["files"] == 0
    assert sorted(lake.rglob("*.parquet")) == files
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in files] == before


def test_import_of_a_bar_breaking_ohlc_sanity_raises_and_writes_nothing(shared: Path, tmp_path: Path) -> None:
    path = shared / "ohlcv/binance_genetrader/ETH_USDT-1h.feather"
    write_freqtrade_feather(path, hours(0, 3), 10.0)
    table = feather.read_table(path)
    low = pa.array([9.0, 9.0, 13.5, 12.0], pa.float64())  # bar 2 has low 13.5 above open 12 / close 13
    feather.write_feather(table.set_column(table.schema.get_field_index("low"), "low", low), path)
    lake = tmp_path / "lake"

    with pytest.raises(DataError, match=f"'ETH'.*'low'.*ts={T0 + 2 * HOUR}.*value=13.5"):
        import_shared(shared, lake, ["BTC", "ETH"], "1h")

    assert not lake.exists()


def test_default_shared_dir_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACTS_SHARED_DATA", str(tmp_path / "elsewhere"))

    assert default_shared_dir() == tmp_path / "elsewhere"


def test_default_shared_dir_is_the_sibling_shared_data_of_the_repo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ACTS_SHARED_DATA", raising=False)
    repo = tmp_path / "main"
    repo.mkdir()

    assert default_shared_dir(repo) is None
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_shared_dir(repo) == tmp_path / "shared" / "data"


def test_default_shared_dir_without_arguments_looks_next_to_this_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACTS_SHARED_DATA", raising=False)
    repo = Path(shared_loader.__file__).resolve().parents[2]
    expected = repo.parent / "shared" / "data"

    assert default_shared_dir() == (expected if expected.is_dir() else None)


# --- against the real recorded files (SOURCES.md) --------------------------------------------------


@pytest.fixture(scope="module")
def real_shared() -> Path:
    found = default_shared_dir()
    if found is None or not (found / "ohlcv").is_dir():
        pytest.skip("../shared/data is not available")
    return found


@pytest.mark.shared_data
def test_real_binance_btc_eth_1h_match_sources_md(real_shared: Path) -> None:
    frame, missing = load_shared_ohlcv(real_shared, ["BTC", "ETH"], "1h")

    assert missing == []
    for symbol in ("BTC", "ETH"):
        ts = frame.filter(symbol=symbol)["ts"]
        # SOURCES.md: first bar 2018-01-01 00:00; the copies here are cut at 2025-07-01 00:00 (73,265 rows
        # in the uncut originals, 65,590 before the cut).
        assert ts[0] == ms("2018-01-01T00:00")
        assert ts[-1] == ms("2025-06-30T23:00")
        assert ts.len() == 65_590
        # The largest gap: 34 h after the 2018-02-08 00:00 bar (a Binance outage shared by all symbols).
        steps = frame.filter(symbol=symbol).select("ts", step=pl.col("ts").diff().shift(-1))
        widest = steps.sort("step", descending=True, nulls_last=True).row(0)
        assert widest == (ms("2018-02-08T00:00"), 34 * HOUR)
    assert ((frame["high"] >= frame["open"]) & (frame["high"] >= frame["close"])).all()
    assert ((frame["low"] <= frame["open"]) & (frame["low"] <= frame["close"])).all()


@pytest.mark.shared_data
def test_real_binance_stitching_keeps_the_bnb_hole(real_shared: Path) -> None:
    frame, _ = load_shared_ohlcv(real_shared, ["BNB"], "1h")
    ts = frame["ts"]

    # SOURCES.md: BNB is Mounik (2020-05-11 -> 2024-05-08 06:00) + Harthor (from 2024-09-14), nothing between.
    assert ts[0] == ms("2020-05-11T00:00")
    assert ts.filter((ts > ms("2024-05-08T06:00")) & (ts < ms("2024-09-14T00:00"))).is_empty()
    assert ms("2024-09-14T00:00") in ts.to_list()


@pytest.mark.shared_data
def test_real_binance_5m_starts_at_the_harthor_first_bar(real_shared: Path) -> None:
    frame, missing = load_shared_ohlcv(real_shared, ["BTC", "SOL"], "5m")

    assert missing == []
    assert frame.group_by("symbol").agg(pl.col("ts").min()).sort("symbol").rows() == [
        ("BTC", ms("2024-12-31T00:00")),
        ("SOL", ms("2024-12-31T00:00")),
    ]


@pytest.mark.shared_data
def test_real_kraken_ohlcvt_matches_sources_md(real_shared: Path) -> None:
    frame = load_kraken_ohlcvt(real_shared)
    summary = frame.group_by("symbol").agg(
        pl.len(), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")
    )

    assert summary.sort("symbol").rows() == [
        ("BTC", 70_253, ms("2013-10-06T21:00"), ms("2023-01-07T09:00")),
        ("ETH", 63_568, ms("2015-08-07T14:00"), ms("2023-03-31T23:00")),
    ]


@pytest.mark.shared_data
def test_real_import_is_idempotent(real_shared: Path, tmp_path: Path) -> None:
    first = import_shared(real_shared, tmp_path, ["ETH", "ZEC", "NOT_A_COIN"], "1h")
    second = import_shared(real_shared, tmp_path, ["ETH", "ZEC", "NOT_A_COIN"], "1h")

    assert first["missing"] == second["missing"] == ["NOT_A_COIN"]
    assert first["files"] > 0
    assert second["files"] == 0
    assert read_ohlcv(tmp_path, "binance", "1h", ["ETH", "ZEC"]).height == first["rows"]

