"""Ingestion benchmarks at the issue's scale (30 symbols x 1 year of 5-minute bars) against the emulators.

Figures (issue 3):
1. normalising CoinAPI OHLCV JSON pages into lake frames, rows per second (target >= 2 M/s);
2. backfill of 30 symbols x 1 year from the CoinAPI emulator, rate limits off (target < 60 s);
3. reading 30 symbols x 1 year from the lake into polars (target < 1 s);
4. incremental ingest of one new 5-minute bar for all 30 symbols (target < 1 s);
5. backfill with the emulator's rate limit on: 429s after the first (target 0) and the printed estimate.

Run: ``.venv/bin/python bench/bench_ingest.py [--days 365] [--limited-days 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import polars as pl

from backend.clock import WallClock
from backend.config.compose import compose_spec
from backend.data import lake
from backend.data.ingest import IngestOptions, Ingestor
from backend.data.normalize import parse_coinapi_ohlcv
from backend.data.providers import Source, open_provider
from backend.data.raw import RawStore
from backend.data.settings import HistDataSettings
from backend.data.simulator import simulate_ohlcv
from backend.data.state import IngestState
from backend.sandbox.coinapi import CoinApiEmulator, iso7
from backend.sandbox.faults import FaultSpec

BAR_MS = 300_000
KEY = "bench-key"


def coinapi_page(frame: pl.DataFrame) -> bytes:
    """Return the exact CoinAPI wire JSON of one symbol's bars (as the emulator writes it)."""
    items = [
        {"time_period_start": iso7(t * 1_000_000), "time_period_end": iso7((t + BAR_MS) * 1_000_000),
         "time_open": iso7(t * 1_000_000), "time_close": iso7((t + BAR_MS - 1000) * 1_000_000),
         "price_open": o, "price_high": h, "price_low": low, "price_close": c, "volume_traded": v, "trades_count": 1}
        for t, o, h, low, c, v in frame.select("ts", "open", "high", "low", "close", "volume").iter_rows()
    ]  # fmt: skip
    return json.dumps(items, separators=(",", ":")).encode()


def ingestor(home: Path, url: str, progress: list[str], rate: float | None = None) -> Ingestor:
    settings = HistDataSettings(hist_market_data_api_key=KEY, hist_market_data_base_url=url)
    clock = WallClock()
    raw = RawStore(home / "raw")
    provider = open_provider(settings, Source.COINAPI, raw, clock, clock.monotonic, time.sleep, rate)
    state = IngestState(home / "data" / "ingest.sqlite")
    return Ingestor(home / "lake", provider, state, clock, progress.append, clock.monotonic)


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--limited-days", type=int, default=30)
    parser.add_argument("--rate", type=float, default=2.0, help="emulator rate limit for the limited run")
    parser.add_argument("--nodelay", action="store_true",
                        help="turn Nagle off in the emulator (it writes headers and body separately: ~40 ms a request)")
    args = parser.parse_args()
    if args.nodelay:
        import backend.sandbox.server as server

        server._Handler.disable_nagle_algorithm = True
    universe = compose_spec([]).universe
    symbols = list(universe.symbols)
    n_bars = args.days * 288
    now = WallClock().now_ms()
    start = (now // 86_400_000 - args.days) * 86_400_000  # history ends today: the estimate has a real span
    results: dict[str, object] = {"symbols": len(symbols), "bars_per_symbol": n_bars, "nodelay": args.nodelay}
    bars = simulate_ohlcv(symbols, universe.clusters, "5m", start, n_bars, seed=11)

    # 1. normalisation of CoinAPI JSON pages (100,000 rows a page, the API's maximum)
    one = bars.filter(pl.col("symbol") == "BTC")
    pages = [coinapi_page(one.slice(i, 100_000)) for i in range(0, one.height, 100_000)]
    # One untimed parse first: the figure is the steady pace of a long ingest, not the one-off start-up of
    # the libraries (arrow builds its compute kernel registry on first use) or the first large allocations.
    started = time.perf_counter()
    parse_coinapi_ohlcv(pages[0], "BTC", "5m", "coinapi", "coinapi:bench")
    results["normalise_first_page_seconds"] = round(time.perf_counter() - started, 3)
    rows = 0
    started = time.perf_counter()
    for _ in range(3):
        for body in pages:
            rows += parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "coinapi:bench").height
    seconds = time.perf_counter() - started
    results["normalise_rows"] = rows
    results["normalise_rows_per_second"] = round(rows / seconds)
    results["normalise_mb_per_second"] = round(sum(map(len, pages)) * 3 / seconds / 1e6, 1)

    with tempfile.TemporaryDirectory(prefix="acts-bench-ingest-") as tmp:
        home = Path(tmp)
        # 2. backfill, rate limits off
        with CoinApiEmulator(bars, api_key=KEY, universe=universe) as emulator:
            progress: list[str] = []
            run = ingestor(home, emulator.base_url, progress)
            started = time.perf_counter()
            reports = run.run(universe.assets, IngestOptions("5m", start))
            results["backfill_seconds"] = round(time.perf_counter() - started, 2)
            results["backfill_requests"] = len(emulator.request_log)
            results["backfill_bars"] = sum(r.bars for r in reports)
            results["backfill_errors"] = [r.error for r in reports if r.error]
            results["backfill_progress_sample"] = progress[len(progress) // 2]

            # 3. lake read
            started = time.perf_counter()
            frame = lake.read_ohlcv(home / "lake", "coinapi", "5m", symbols)
            results["lake_read_seconds"] = round(time.perf_counter() - started, 3)
            results["lake_read_rows"] = frame.height

            # 4. one new bar for every symbol
            new = simulate_ohlcv(symbols, universe.clusters, "5m", start, n_bars + 1, seed=11)
            emulator.append_bars(new.filter(pl.col("ts") == start + n_bars * BAR_MS))
            before = len(emulator.request_log)
            run.clock = WallClock()
            started = time.perf_counter()
            reports = run.run(universe.assets, IngestOptions("5m", start))
            results["incremental_one_bar_seconds"] = round(time.perf_counter() - started, 3)
            results["incremental_requests"] = len(emulator.request_log) - before
            results["incremental_bars"] = sum(r.bars for r in reports)
            started = time.perf_counter()
            run.run(universe.assets, IngestOptions("5m", start, lookback_bars=12))
            results["incremental_lookback12_noop_seconds"] = round(time.perf_counter() - started, 3)

    # 5. rate-limited backfill (a shorter history: the pace, not the volume, is measured)
    limited_bars = bars.filter(pl.col("ts") >= start + (args.days - args.limited_days) * 86_400_000)
    with tempfile.TemporaryDirectory(prefix="acts-bench-limited-") as tmp:
        with CoinApiEmulator(limited_bars, faults=FaultSpec(rate_limit_per_second=args.rate), api_key=KEY,
                             universe=universe) as emulator:  # fmt: skip
            progress = []
            run = ingestor(Path(tmp), emulator.base_url, progress)
            run.provider.page_limit = 2_000  # several pages per symbol, so pacing matters
            started = time.perf_counter()
            reports = run.run(universe.assets, IngestOptions("5m", start))
            statuses = [status for *_, status in emulator.request_log]
    first = statuses.index(429) if 429 in statuses else len(statuses)
    results["limited_rate_per_second"] = args.rate
    results["limited_seconds"] = round(time.perf_counter() - started, 1)
    results["limited_requests"] = len(statuses)
    results["limited_429_total"] = statuses.count(429)
    results["limited_429_after_first"] = statuses[first + 1:].count(429)
    results["limited_errors"] = [r.error for r in reports if r.error]
    results["limited_eta_first_line"] = next((p for p in progress if "rate limited" in p), progress[0])
    results["limited_eta_last_line"] = progress[-1]
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
