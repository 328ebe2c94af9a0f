"""`acts sandbox kraken|coinapi`: serve a local emulator of the API on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

import polars as pl

from backend.config.compose import compose_spec
from backend.data.lake import TIMEFRAME_MS
from backend.data.simulator import simulate_ohlcv
from backend.errors import DataError, SandboxError
from backend.sandbox import CoinApiEmulator, FaultSpec, KrakenEmulator, load_fault_spec
from backend.sandbox.server import Emulator
from scripts.argtypes import finite_float

_POLL_SECONDS = 0.02


def register(sub: argparse._SubParsersAction) -> None:
    sandbox = sub.add_parser("sandbox", help="serve a local Kraken or CoinAPI emulator on 127.0.0.1")
    sandbox.add_argument("api", choices=("kraken", "coinapi"))
    source = sandbox.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a lake root (ohlcv/...) or a folder with bars.parquet [trades.parquet]")
    source.add_argument("--simulate-days", type=int, help="serve simulated bars of every universe symbol instead")
    sandbox.add_argument("--timeframe", default="5m", choices=sorted(TIMEFRAME_MS, key=TIMEFRAME_MS.get))
    sandbox.add_argument("--lake-source", help="lake source to serve (needed when the lake holds several)")
    sandbox.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first simulated day")
    sandbox.add_argument("--seed", type=int, default=7, help="simulator seed")
    sandbox.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    sandbox.add_argument("--faults", type=Path, help="YAML file of a FaultSpec")
    sandbox.add_argument("--api-key", default="sandbox-key", help="the key the CoinAPI emulator accepts")
    sandbox.add_argument("--max-seconds", type=finite_float, help="stop after this many seconds")
    sandbox.add_argument("--serve-requests", type=int, help="stop after this many requests")
    sandbox.set_defaults(handler=cmd_sandbox)


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise DataError(f"cannot read {path}: {error}") from error


def load_folder(folder: Path, timeframe: str, lake_source: str | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Return (bars, trades) from a lake root or from ``bars.parquet`` and optional ``trades.parquet``.

    Raises
    ------
    DataError
        When the folder holds neither, a lake holds no bars of ``timeframe`` or several sources
        and none was chosen, or a file cannot be read.
    """
    lake = folder / "ohlcv"
    if lake.is_dir():
        sources = sorted(p.name.removeprefix("source=") for p in lake.glob("source=*") if (p / f"timeframe={timeframe}").is_dir())
        if lake_source is None and len(sources) != 1:
            raise DataError(f"lake {folder} has {len(sources)} sources with {timeframe} bars {sources}; choose one with --lake-source")
        chosen = lake_source or sources[0]
        files = sorted((lake / f"source={chosen}" / f"timeframe={timeframe}").glob("symbol=*/*.parquet"))
        if not files:
            raise DataError(f"lake {folder} has no {timeframe} bars of source {chosen!r}")
        return pl.concat([_read_parquet(p) for p in files]), None
    bars_path = folder / "bars.parquet"
    if not bars_path.is_file():
        raise DataError(f"{folder} holds neither a lake (ohlcv/) nor bars.parquet")
    trades_path = folder / "trades.parquet"
    return _read_parquet(bars_path), _read_parquet(trades_path) if trades_path.is_file() else None


def cmd_sandbox(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Build the emulator, print its base URL, serve until interrupted or a bound is reached."""
    for flag, value, low, high in (
        ("--simulate-days", args.simulate_days, 1, 5000),
        ("--port", args.port, 0, 65535),
        ("--max-seconds", args.max_seconds, 0, 10**9),
        ("--serve-requests", args.serve_requests, 1, 10**9),
    ):
        if value is not None and not low <= value <= high:
            raise SandboxError(f"'{flag}' must be in [{low}, {high}], was {value}")
    faults = load_fault_spec(args.faults) if args.faults else FaultSpec()
    universe = compose_spec([]).universe
    if args.data is not None:
        bars, trades = load_folder(args.data, args.timeframe, args.lake_source)
    else:
        bar_ms = TIMEFRAME_MS[args.timeframe]
        start_ms = int(datetime(args.start.year, args.start.month, args.start.day, tzinfo=UTC).timestamp() * 1000)
        n_bars = max(2, args.simulate_days * 86_400_000 // bar_ms)
        bars, trades = simulate_ohlcv(universe.symbols, universe.clusters, args.timeframe, start_ms, n_bars, args.seed), None
    emulator: Emulator
    if args.api == "kraken":
        emulator = KrakenEmulator(bars, args.timeframe, faults, trades, universe, port=args.port)
    else:
        emulator = CoinApiEmulator(bars, args.timeframe, faults, trades, universe, api_key=args.api_key, port=args.port)
    stop = threading.Event()
    with emulator:
        out.write(f"{args.api} emulator listening on {emulator.base_url} ({bars['symbol'].n_unique()} symbols, {args.timeframe} bars)\n")
        out.flush()
        started = time.monotonic()
        try:
            while not stop.wait(_POLL_SECONDS):
                if args.max_seconds is not None and time.monotonic() - started >= args.max_seconds:
                    stop.set()
                if args.serve_requests is not None and len(emulator.request_log) >= args.serve_requests:
                    stop.set()
        except KeyboardInterrupt:
            err.write("[acts] sandbox interrupted\n")
    out.write(f"served {len(emulator.request_log)} requests\n")
    return 0
