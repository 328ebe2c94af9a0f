"""Backfill, incremental ingest, reconcile and report against the loopback CoinAPI and Kraken emulators."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import BAR_MS, CANARY, CANARY_SECRET, START_MS, files_containing, lake_rows, run_cli, seeded_bars, universe, use_coinapi

from backend.data.lake import lake_files, snapshot
from backend.data.raw import RawStore
from backend.data.state import EvidenceKind, IngestState, Resolution
from backend.sandbox.coinapi import CoinApiEmulator
from backend.sandbox.kraken import KrakenEmulator
from tests.stubs import small_overrides

SYMBOLS = ["BTC", "ETH"]


@pytest.fixture
def coinapi(monkeypatch: pytest.MonkeyPatch):
    emulator = CoinApiEmulator(seeded_bars(SYMBOLS, 1500), api_key=CANARY, universe=universe())
    use_coinapi(monkeypatch, emulator.start())
    yield emulator
    emulator.stop()


def lake_snapshot(home: Path, source: str = "coinapi") -> dict[str, str]:
    return snapshot(lake_files(home / "lake", source, "5m", SYMBOLS), home / "lake")


def test_a_backfill_from_empty_fills_the_lake_with_exactly_the_provider_bars(coinapi, acts_home: Path) -> None:
    code, out, err = run_cli("data", "backfill", "--symbols", "BTC,ETH", "--page-limit", "400")

    assert code == 0, out + err
    expected = seeded_bars(SYMBOLS, 1500).select("ts", "symbol", "open", "high", "low", "close", "volume")
    assert lake_rows(acts_home, "coinapi", SYMBOLS).equals(expected)
    assert "coinapi BTC 5m 4 1500" in out and "ETA" in err
    state = IngestState(acts_home / "data" / "ingest.sqlite")
    assert [c.next_ms for *_, c in state.cursors()] == [START_MS + 1500 * BAR_MS] * 2
    assert {b["status"] for b in state.batches()} == {"committed"}
    assert state.evidence() == []
    state.close()


def test_raw_bodies_are_kept_byte_for_byte_before_parsing(coinapi, acts_home: Path) -> None:
    run_cli("data", "backfill", "--symbols", "BTC", "--page-limit", "1000")

    raw = RawStore(acts_home / "raw")
    symbols, *records = raw.records()
    assert (symbols.endpoint, symbols.params) == ("/v1/symbols", '{"filter_symbol_id":"KRAKEN_SPOT_BTC_USD"}')
    assert [r.status for r in records] == [200, 200]
    first = raw.read(records[0])
    assert first.startswith(b'[{"time_period_start":"2025-01-01T00:00:00.0000000Z"')
    assert first.count(b"time_period_start") == 1000
    assert "X-CoinAPI-Key" not in records[0].params and '"limit":"1000"' in records[0].params
    raw.close()


def test_rerunning_backfill_or_ingest_changes_nothing(coinapi, acts_home: Path) -> None:
    run_cli("data", "backfill", "--symbols", "BTC,ETH", "--page-limit", "700")
    before = lake_snapshot(acts_home)
    mtimes = {p: p.stat().st_mtime_ns for p in (acts_home / "lake").rglob("*.parquet")}

    assert run_cli("data", "backfill", "--symbols", "BTC,ETH", "--page-limit", "700")[0] == 0
    assert run_cli("data", "ingest", "--symbols", "BTC,ETH", "--lookback-bars", "50")[0] == 0

    assert lake_snapshot(acts_home) == before
    assert {p: p.stat().st_mtime_ns for p in (acts_home / "lake").rglob("*.parquet")} == mtimes


def test_incremental_ingest_fetches_only_the_new_bars(coinapi, acts_home: Path) -> None:
    run_cli("data", "backfill", "--symbols", "BTC,ETH")
    requests_before = len(coinapi.request_log)
    new_bar = seeded_bars(SYMBOLS, 1501).filter(pl.col("ts") == START_MS + 1500 * BAR_MS)
    coinapi.append_bars(new_bar)

    code, out, _ = run_cli("data", "ingest", "--symbols", "BTC,ETH", "--lookback-bars", "0")

    assert code == 0
    assert len(coinapi.request_log) - requests_before == 2  # one request per series
    assert lake_rows(acts_home, "coinapi", SYMBOLS).height == 2 * 1501
    assert "coinapi BTC 5m 1 1 1 0 0 -" in out


def test_follow_keeps_ingesting_round_after_round(coinapi, acts_home: Path) -> None:
    run_cli("data", "backfill", "--symbols", "BTC")

    code, out, _ = run_cli("data", "ingest", "--symbols", "BTC", "--follow", "--rounds", "3", "--interval", "0")

    assert code == 0
    assert out.count("coinapi BTC 5m") == 3


def test_the_canary_secret_appears_in_no_file_and_no_output(coinapi, acts_home: Path) -> None:
    outputs = []
    for argv in (
        ("data", "backfill", "--symbols", "BTC,ETH", "--page-limit", "500"),
        ("data", "ingest", "--symbols", "BTC,ETH"),
        ("data", "reconcile", "--symbols", "BTC,ETH", "--refetch-gaps", "--compare-with", "coinapi"),
        ("data", "report"),
        ("data", "report", "--json"),
    ):
        code, out, err = run_cli(*argv)
        assert code == 0, out + err
        outputs.append(out + err)

    assert files_containing(acts_home, CANARY.encode()) == []
    assert files_containing(acts_home, CANARY_SECRET.encode()) == []
    assert not any(CANARY in text or CANARY_SECRET in text for text in outputs)
    assert (acts_home / "data" / "reports" / "evidence.jsonl").is_file()


def test_another_provider_is_refused_naming_the_field_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, acts_home: Path
) -> None:
    monkeypatch.setenv("HIST_MARKET_DATA_PROVIDER", "OTHER")

    code, out, err = run_cli("data", "backfill")

    assert code == 2
    assert "HIST_MARKET_DATA_PROVIDER must be one of 'COINAPI' or 'KRAKEN_PUBLIC', was 'OTHER'" in err
    assert not (acts_home / "lake").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--symbols", "BTC,USDT"), "unknown symbol 'USDT': not in universe v1"),
        (("--rate", "0"), "--rate must be > 0, was 0.0"),
        (("--start", "2025-13-01"), "--start must be a date YYYY-MM-DD, was '2025-13-01'"),
        (("--source", "binance"), "source must be one of ['coinapi', 'kraken', 'kraken_trades'], was 'binance'"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(coinapi, argv: tuple, message: str) -> None:
    code, _, err = run_cli("data", "backfill", *argv)

    assert code == 2 and message in err
    assert coinapi.request_log == []


def test_coinapi_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIST_MARKET_DATA_PROVIDER", "COINAPI")
    monkeypatch.delenv("HIST_MARKET_DATA_API_KEY", raising=False)

    code, _, err = run_cli("data", "backfill", "--symbols", "BTC")

    assert code == 2 and "HIST_MARKET_DATA_API_KEY is required" in err


def kraken_trades(bars: pl.DataFrame) -> pl.DataFrame:
    """Four trades per bar (open, high, low, close), so rebuilt bars equal the bars."""
    frame = bars.sort("symbol", "ts")
    parts = []
    for offset, column in enumerate(("open", "high", "low", "close")):
        parts.append(frame.select(ts_ms=pl.col("ts") + 1000 + offset * 60_000, symbol="symbol", price=column,
                                  volume=pl.col("volume") / 4, k=pl.lit(offset)))  # fmt: skip
    trades = pl.concat(parts).sort("symbol", "ts_ms")
    return trades.with_columns(side=pl.lit("b"), ordertype=pl.lit("l"), trade_id=pl.int_range(pl.len()).cast(pl.Int64) + 1).drop("k")


def test_kraken_ohlc_and_trades_fill_their_sources_and_disagreement_is_flagged(
    coinapi, monkeypatch: pytest.MonkeyPatch, acts_home: Path
) -> None:
    bars = seeded_bars(SYMBOLS, 1500)
    shifted = bars.with_columns(
        close=pl.when((pl.col("ts") == START_MS + 1400 * BAR_MS) & (pl.col("symbol") == "ETH"))
        .then(pl.col("close") * 1.02).otherwise(pl.col("close"))
    ).with_columns(high=pl.max_horizontal("high", "close"))
    with KrakenEmulator(shifted, universe=universe(), trades=kraken_trades(bars.filter(pl.col("ts") >= START_MS + 1300 * BAR_MS))) as kraken:
        monkeypatch.setenv("KRAKEN_PUBLIC_BASE_URL", kraken.base_url)
        assert run_cli("data", "backfill", "--symbols", "BTC,ETH")[0] == 0
        code, out, err = run_cli("data", "backfill", "--source", "kraken", "--symbols", "BTC,ETH")
        assert code == 0, out + err
        code, out, err = run_cli("data", "backfill", "--source", "kraken_trades", "--symbols", "BTC,ETH")
        assert code == 0, out + err

    kraken_rows = lake_rows(acts_home, "kraken", SYMBOLS)
    assert kraken_rows.height == 2 * 720  # the 720 committed bars; the provisional newest one is left out
    assert kraken_rows["ts"].max() == START_MS + 1498 * BAR_MS
    rebuilt = lake_rows(acts_home, "kraken_trades", SYMBOLS)
    expected = bars.filter(pl.col("ts") >= START_MS + 1300 * BAR_MS).select(rebuilt.columns).sort("ts", "symbol")
    assert rebuilt.select("ts", "symbol", "open", "high", "low", "close").equals(expected.drop("volume"))

    code, out, _ = run_cli("data", "reconcile", "--symbols", "BTC,ETH", "--compare-with", "kraken", "--tolerance-bps", "10")
    assert code == 0 and "1 new evidence records" in out
    state = IngestState(acts_home / "data" / "ingest.sqlite")
    (flag,) = state.evidence(EvidenceKind.CROSS_SOURCE)
    assert (flag.symbol, flag.ts_start, flag.resolution) == ("ETH", START_MS + 1400 * BAR_MS, Resolution.FLAGGED)
    assert 195 < flag.detail["max_diff_bps"] < 201
    state.close()


def test_the_spine_backtest_runs_on_the_backfilled_lake(monkeypatch: pytest.MonkeyPatch, acts_home: Path, tmp_path: Path) -> None:
    symbols = ["BTC", "DOGE", "ETH", "SOL"]
    with CoinApiEmulator(seeded_bars(symbols, 10 * 288), api_key=CANARY, universe=universe()) as emulator:
        use_coinapi(monkeypatch, emulator.base_url)
        assert run_cli("data", "backfill", "--symbols", ",".join(symbols))[0] == 0

    code, out, err = run_cli(
        "backtest", *small_overrides("data=lake", "data.source=coinapi", "data.timeframe=5m", "data.start=2025-01-01",
                                     "training.num_threads=1", f"hydra.run.dir={tmp_path / 'run'}"),
    )  # fmt: skip

    assert code == 0, err
    assert "ledger_reconciles" in out and "True" in out


def test_reconcile_and_report_show_a_gap_through_the_command_line(monkeypatch: pytest.MonkeyPatch, acts_home: Path) -> None:
    from backend.sandbox.faults import FaultSpec

    hidden = (START_MS + 10 * BAR_MS,)
    with CoinApiEmulator(seeded_bars(["BTC"], 50), faults=FaultSpec(hidden_bars=hidden), api_key=CANARY,
                         universe=universe()) as emulator:  # fmt: skip
        use_coinapi(monkeypatch, emulator.base_url)
        code, out, _ = run_cli("data", "backfill", "--symbols", "BTC", "--page-limit", "20", "--max-pages", "1")
        assert code == 0 and "coinapi BTC 5m 1 20" in out  # stopped after one page as asked
        assert run_cli("data", "backfill", "--symbols", "BTC")[0] == 0

    code, out, _ = run_cli("data", "reconcile", "--symbols", "BTC")
    assert code == 0 and "reconcile coinapi 5m: 1 findings, 0 new evidence records" in out  # ingest already recorded it
    code, out, _ = run_cli("data", "reconcile", "--symbols", "BTC", "--compare-with", "kraken")
    assert code == 0 and "1 findings" in out  # nothing to compare: kraken holds no BTC bars

    code, out, _ = run_cli("data", "report")
    assert code == 0
    assert f"1 gap coinapi BTC 5m {START_MS + 10 * BAR_MS} {START_MS + 11 * BAR_MS} open coinapi:" in out
    assert "  gap open: 1" in out
    lines = (acts_home / "data" / "reports" / "evidence.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"kind":"gap"' in lines[0]


def test_an_interrupted_ingest_continued_later_writes_the_uninterrupted_month_files_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bars = seeded_bars(SYMBOLS, 300)
    early, late = bars.filter(pl.col("ts") < START_MS + 150 * BAR_MS), bars.filter(pl.col("ts") >= START_MS + 150 * BAR_MS)
    with CoinApiEmulator(early, api_key=CANARY, universe=universe()) as emulator:
        use_coinapi(monkeypatch, emulator.base_url)
        for home in ("stopped", "whole"):
            monkeypatch.setenv("ACTS_HOME", str(tmp_path / home))
            assert run_cli("data", "backfill", "--symbols", "BTC,ETH", "--page-limit", "40")[0] == 0
        emulator.append_bars(late)
        ingest = ("data", "ingest", "--symbols", "BTC,ETH", "--page-limit", "40", "--lookback-bars", "12")
        monkeypatch.setenv("ACTS_HOME", str(tmp_path / "whole"))
        assert run_cli(*ingest)[0] == 0
        monkeypatch.setenv("ACTS_HOME", str(tmp_path / "stopped"))
        assert run_cli(*ingest, "--max-pages", "2")[0] == 0  # stopped half way, as a killed run is
        state = IngestState(tmp_path / "stopped" / "data" / "ingest.sqlite")
        # The next page of the stopped run: 12 bars of lookback before bar 150, then two pages of 40.
        assert state.resume_point("coinapi", "BTC", "5m") == START_MS + (150 - 12 + 80) * BAR_MS
        assert run_cli(*ingest)[0] == 0  # continued: the same requests as the uninterrupted run
        assert state.resume_point("coinapi", "BTC", "5m") is None  # finished: the next run starts afresh
        state.close()

    assert lake_rows(tmp_path / "stopped", "coinapi", SYMBOLS).equals(lake_rows(tmp_path / "whole", "coinapi", SYMBOLS))
    assert lake_snapshot(tmp_path / "stopped") == lake_snapshot(tmp_path / "whole")  # batch ids included
