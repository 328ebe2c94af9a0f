"""`acts data backfill|ingest|reconcile|report|universe-new`: fill the lake, keep evidence, report it, build universes."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from backend.clock import WallClock
from backend.config.schema import AssetSpec
from backend.data import lake
from backend.data.ingest import IngestOptions, Ingestor, SeriesReport
from backend.data.lake import TIMEFRAME_MS
from backend.data.providers import Source, open_provider, source_for
from backend.data.providers.base import OhlcvProvider
from backend.data.raw import RawStore
from backend.data.reconcile import compare_sources, record_scan, scan_gaps
from backend.data.settings import load_settings
from backend.data.state import IngestState
from backend.data.universe import KrakenUniverseData, UniverseBuild, build_version, load_snapshot, load_universe, publish_version
from backend.errors import ConfigError, DataError
from backend.home import acts_home

DEFAULT_UNIVERSE = Path(__file__).resolve().parents[2] / "conf" / "universe" / "v1.yaml"
DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "universe"


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="backfill, ingest, reconcile and report market data")
    actions = data.add_subparsers(dest="data_action", required=True)
    for name, text in (("backfill", "fetch the full available history into the lake"),
                       ("ingest", "continue every series from its cursor"),
                       ("reconcile", "scan for gaps, refetch them, compare sources")):  # fmt: skip
        parser = actions.add_parser(name, help=text)
        parser.add_argument("--source", help="coinapi, kraken or kraken_trades (default: from HIST_MARKET_DATA_PROVIDER)")
        parser.add_argument("--timeframe", default="5m", choices=sorted(TIMEFRAME_MS))
        parser.add_argument("--symbols", help="comma-separated universe symbols (default: the whole universe)")
        parser.add_argument("--universe", default=str(DEFAULT_UNIVERSE), help="universe version file")
        parser.add_argument("--rate", type=float, help="at most this many requests per second")
        parser.add_argument("--page-limit", type=int, help="CoinAPI items per page (1..100000)")
        parser.set_defaults(handler=cmd_data)
    for name in ("backfill", "ingest"):
        parser = actions.choices[name]
        parser.add_argument("--start", default="1970-01-01", help="UTC date where a new series starts (default: all history)")
        parser.add_argument("--max-pages", type=int, help="stop each series after this many pages")
    ingest = actions.choices["ingest"]
    ingest.add_argument("--lookback-bars", type=int, default=12, help="re-read this many bars before the cursor")
    ingest.add_argument("--follow", action="store_true", help="keep ingesting as new data appears")
    ingest.add_argument("--interval", type=float, default=60.0, help="seconds between rounds with --follow")
    ingest.add_argument("--rounds", type=int, help="with --follow: stop after this many rounds")
    reconcile = actions.choices["reconcile"]
    reconcile.add_argument("--refetch-gaps", action="store_true", help="ask the provider again for every open gap")
    reconcile.add_argument("--compare-with", help="another lake source to compare closes with")
    reconcile.add_argument("--tolerance-bps", type=float, default=50.0, help="allowed close difference")
    report = actions.add_parser("report", help="print and write the evidence records")
    report.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    report.set_defaults(handler=cmd_data)
    _register_universe_new(actions)


def _register_universe_new(actions: argparse._SubParsersAction) -> None:
    new = actions.add_parser("universe-new", help="build a new universe version from a market-cap snapshot and Kraken")
    new.add_argument("--snapshot", required=True, help="dated market-cap snapshot (JSON)")
    new.add_argument("--version", required=True, help="name of the new version, e.g. v2")
    new.add_argument("--previous", default=str(DEFAULT_UNIVERSE), help="version it follows (clusters carried over)")
    new.add_argument("--out", help="file to write (default: <previous folder>/<version>.yaml); never overwritten")
    new.add_argument("--size", type=int, default=30, help="number of coins (1..100)")
    new.add_argument("--rate", type=float, help="at most this many Kraken requests per second")
    new.add_argument("--publish", action="store_true", help="also publish it into --registry")
    new.add_argument("--registry", default=str(DEFAULT_REGISTRY), help="universe registry folder")
    new.set_defaults(handler=cmd_universe_new)


def _printer(err: TextIO):
    # Not scripts.cli.progress_printer: importing the CLI pulls in the whole training stack.
    def say(message: str) -> None:
        print(f"[acts] {message}", file=err, flush=True)

    return say


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"--{name} must be > 0, was {value}")


def _assets(args: argparse.Namespace) -> list[AssetSpec]:
    universe = load_universe(Path(args.universe))
    by_symbol = {a.symbol: a for a in universe.assets}
    if not args.symbols:
        return sorted(by_symbol.values(), key=lambda a: a.symbol)
    chosen = []
    for symbol in sorted({s.strip().upper() for s in args.symbols.split(",") if s.strip()}):
        if symbol not in by_symbol:
            raise ConfigError(f"unknown symbol {symbol!r}: not in universe {universe.version} ({sorted(by_symbol)})")
        chosen.append(by_symbol[symbol])
    return chosen


def _start_ms(text: str) -> int:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start must be a date YYYY-MM-DD, was {text!r}") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _print_reports(reports: list[SeriesReport], out: TextIO) -> int:
    out.write("source symbol timeframe pages bars files quarantined evidence error\n")
    for r in reports:
        out.write(f"{r.source} {r.symbol} {r.timeframe} {r.pages} {r.bars} {r.files_written} {r.quarantined} "
                  f"{r.evidence} {r.error or '-'}\n")  # fmt: skip
    failed = [r for r in reports if r.error]
    out.write(f"series: {len(reports)}, failed: {len(failed)}, bars: {sum(r.bars for r in reports)}\n")
    return 1 if failed else 0


def cmd_data(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run one ``acts data`` action."""
    root = acts_home()
    state = IngestState(root / "data" / "ingest.sqlite")
    try:
        if args.data_action == "report":
            return _report(state, root, args.json, out)
        return _provider_action(args, root, state, out, err)
    finally:
        state.close()


def _provider_action(args: argparse.Namespace, root: Path, state: IngestState, out: TextIO, err: TextIO) -> int:
    _positive("rate", args.rate)
    settings = load_settings()
    source = source_for(settings, args.source)
    assets = _assets(args)
    clock = WallClock()
    if args.data_action == "reconcile" and not args.refetch_gaps:
        return _reconcile_local(args, root, state, source, assets, clock, out)
    raw = RawStore(root / "raw")
    try:
        provider = open_provider(settings, source, raw, clock, clock.monotonic, time.sleep, args.rate,
                                 page_limit=args.page_limit)  # fmt: skip
        try:
            return _run_provider(args, root, state, source, assets, clock, provider, out, err)
        finally:
            provider.fetcher.close()
    finally:
        raw.close()


def _run_provider(
    args: argparse.Namespace, root: Path, state: IngestState, source: Source, assets: list[AssetSpec], clock: WallClock,
    provider: OhlcvProvider, out: TextIO, err: TextIO,
) -> int:  # fmt: skip
    ingestor = Ingestor(root / "lake", provider, state, clock, _printer(err), clock.monotonic)
    if args.data_action == "reconcile":
        reports = ingestor.refetch_gaps(assets, IngestOptions(args.timeframe, 0))
        code = _print_reports(reports, out)
        return max(code, _reconcile_local(args, root, state, source, assets, clock, out))
    options = IngestOptions(args.timeframe, _start_ms(args.start), max_pages=args.max_pages,
                            lookback_bars=args.lookback_bars if args.data_action == "ingest" else 0)  # fmt: skip
    if args.data_action == "ingest" and args.follow:
        rounds = args.rounds
        reports = ingestor.follow(assets, options, lambda done: rounds is not None and done >= rounds,
                                  time.sleep, args.interval)  # fmt: skip
    else:
        reports = ingestor.run(assets, options)
    return _print_reports(reports, out)


def _reconcile_local(
    args: argparse.Namespace, root: Path, state: IngestState, source: Source, assets: list[AssetSpec], clock: WallClock,
    out: TextIO,
) -> int:  # fmt: skip
    """Scan the lake for gaps and, when asked, compare two sources; record what is new."""
    found = []
    for asset in assets:
        found.extend(scan_gaps(root / "lake", source.value, args.timeframe, asset.symbol))
    if args.compare_with:
        symbols = [a.symbol for a in assets]
        for symbol in symbols:
            try:
                left = lake.read_ohlcv(root / "lake", source.value, args.timeframe, [symbol])
                right = lake.read_ohlcv(root / "lake", args.compare_with, args.timeframe, [symbol])
            except DataError:
                continue  # a symbol missing from either source has nothing to compare
            found.extend(compare_sources(left, right, args.tolerance_bps, args.timeframe))
    new = record_scan(state, found, clock.now_ms())
    out.write(f"reconcile {source.value} {args.timeframe}: {len(found)} findings, {new} new evidence records\n")
    return 0


def _report(state: IngestState, root: Path, as_json: bool, out: TextIO) -> int:
    rows = state.evidence()
    folder = root / "data" / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "evidence.jsonl"
    tmp = folder / f".evidence.jsonl.tmp-{os.getpid()}"
    lines = [json.dumps(r.as_dict(), sort_keys=True, separators=(",", ":")) for r in rows]
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, target)
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[(r.kind.value, r.resolution.value)] = counts.get((r.kind.value, r.resolution.value), 0) + 1
    if as_json:
        out.writelines(line + "\n" for line in lines)
    else:
        out.write("id kind source symbol timeframe ts_start ts_end resolution batch\n")
        for r in rows:
            out.write(f"{r.id} {r.kind.value} {r.source} {r.symbol} {r.timeframe} {r.ts_start} {r.ts_end} "
                      f"{r.resolution.value} {r.batch_id or '-'}\n")  # fmt: skip
        for (kind, resolution), n in sorted(counts.items()):
            out.write(f"  {kind} {resolution}: {n}\n")
    out.write(f"{len(rows)} evidence records written to {target}\n")
    return 0


def cmd_universe_new(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Build (and optionally publish) a new universe version; print the chosen and excluded coins.

    Raises
    ------
    ConfigError
        When the target file exists (a version is never rewritten), or the snapshot, previous version,
        settings or result are invalid.
    """
    _positive("rate", args.rate)
    settings = load_settings()
    snapshot = load_snapshot(Path(args.snapshot))
    previous = load_universe(Path(args.previous))
    target = Path(args.out) if args.out else Path(args.previous).parent / f"{args.version}.yaml"
    if target.exists():
        raise ConfigError(f"{target} already exists: a universe version is never rewritten; choose a new version name")
    clock = WallClock()
    raw = RawStore(acts_home() / "raw")
    try:
        provider = open_provider(settings, Source.KRAKEN, raw, clock, clock.monotonic, time.sleep, args.rate)
        try:
            fetched_on = datetime.fromtimestamp(clock.now_ms() / 1000, tz=UTC).date()
            build = build_version(snapshot, KrakenUniverseData(provider.fetcher), args.version,
                                  settings.universe_ranking_source, previous, args.size, fetched_on)  # fmt: skip
        finally:
            provider.fetcher.close()
    finally:
        raw.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("x", encoding="utf-8") as handle:  # exclusive: never replaces a file created meanwhile
        handle.write(build.text)
    _print_build(build, out)
    out.write(f"written {target}\n")
    if args.publish:
        out.write(f"published {publish_version(target, Path(args.registry))}\n")
    return 0


def _print_build(build: UniverseBuild, out: TextIO) -> None:
    out.write(f"universe {build.version}: {len(build.chosen)} assets; ranking_source: {build.ranking_source}\n")
    out.write(f"chosen: {' '.join(build.chosen)}\n")
    out.write(f"excluded: {len(build.excluded)}\n")
    for symbol, reasons in build.excluded.items():
        out.write(f"  {symbol} {','.join(r.value for r in reasons)}\n")
