"""`acts run --mode paper|shadow|live --source recorded|kraken`: the runtime, one durable event at a time.

``--source recorded --run-dir RUN`` plays a backtest run's bars (paper only), sleeping the bar gap
divided by ``--speed``. ``--source kraken`` polls Kraken's OHLC (``conf/kraken``; ``--base-url`` points at
the emulator) and acts on each bar as Kraken closes it, with the model of ``--run-dir`` (its spec and
bundle; the bundle must be the promoted one unless ``--allow-run-bundle``). Paper simulates fills;
shadow reads the account's cash with the connected key, journals what it would send and sends
nothing, then reports its divergence from a paper run on the same bars; live sends through ccxt and
is refused, naming what is missing, unless ``acts live status`` shows every requirement met.
State lives in ``--state`` (default ``$ACTS_HOME/<mode>/<run name>``): run the same command again to
continue after a stop or a crash. The kill switch (``acts control kill``) is read before every event.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from backend.audit.decisions import write_decisions
from backend.clock import WallClock
from backend.control.live import LiveGate
from backend.control.store import ControlStore, default_db_path
from backend.engine.events import BarBatch
from backend.errors import ActsError
from backend.home import Home, acts_home
from backend.kraken.permissions import KeyMode
from backend.kraken.settings import load_settings
from backend.models.registry import ModelRegistry
from backend.profiles.store import ProfileStore
from backend.profiles.watcher import ProfileWatcher
from backend.runtime.live import (
    account_cash,
    connected_client,
    divergence,
    kraken_feed,
    live_broker,
    record_shadow_session,
    require_live,
    shadow_broker,
)
from backend.runtime.paper import PaperRuntime, crash_hook, load_recorded, load_run_model
from backend.secrets.keychain import Keychain


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the engine in real time: paper, shadow or live")
    run.add_argument("--mode", choices=("paper", "shadow", "live"), required=True,
                     help="paper: simulated fills; shadow: journal only, real balances; live: orders through ccxt")  # fmt: skip
    run.add_argument("--source", choices=("recorded", "kraken"), required=True, help="recorded run bars, or Kraken's live OHLC")
    run.add_argument("--run-dir", type=Path, required=True, help="the recorded run (its bars for --source recorded; its model)")
    run.add_argument("--state", type=Path, default=None, help="state folder (default $ACTS_HOME/<mode>/<run name>)")
    run.add_argument("--speed", type=float, default=1.0, help="recorded: time scale of the bar gaps (0 = as fast as possible)")
    run.add_argument("--max-events", type=int, default=None, help="stop after this many events (resumable)")
    run.add_argument("--allow-run-bundle", action="store_true", help="use the run's own bundle when it is not promoted")
    run.add_argument("--profile-store", type=Path, default=None, help="profile database to pick up activations from")
    run.add_argument("--base-url", default=None, help="kraken: Kraken's base URL (default from conf/kraken)")
    run.add_argument("--max-polls", type=int, default=None, help="kraken: stop after this many polls")
    run.add_argument("--poll-seconds", type=float, default=None, help="kraken: seconds between polls (default from conf/kraken)")
    run.add_argument("--idle-polls", type=int, default=None, help="kraken: stop after this many polls in a row without a bar")
    run.add_argument("--author", default=None, help="shadow and live: who runs the session (logged)")
    run.set_defaults(handler=cmd_run)


class _Recording:
    """Pass a source's batches through, keeping them (shadow's twin paper run replays them)."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.kept: list[BarBatch] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.source, name)

    def batches(self, start: int, after_ms: int | None = None) -> Iterator[BarBatch]:
        for batch in self.source.batches(start, after_ms):  # type: ignore[attr-defined]
            self.kept.append(batch)
            yield batch


class _Replay:
    """The batches a shadow session saw, as a source for its twin paper run."""

    def __init__(self, source: object, batches: list[BarBatch]) -> None:
        self.source = source
        self.kept = batches

    def __getattr__(self, name: str) -> object:
        return getattr(self.source, name)

    def batches(self, start: int, after_ms: int | None = None) -> Iterator[BarBatch]:
        for offset, batch in enumerate(b for b in self.kept if after_ms is None or b.ts_ms > after_ms):
            yield BarBatch(start + offset, batch.ts_ms, batch.open, batch.close, batch.has_bar, batch.pred, batch.feat,
                           None, batch.volume)  # fmt: skip


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--max-events", args.max_events), ("--max-polls", args.max_polls), ("--idle-polls", args.idle_polls)):
        if value is not None and not 1 <= value <= 10**9:
            raise ActsError(f"'{flag}' must be in [1, 1000000000], was {value}")
    if args.mode != "paper" and args.source != "kraken":
        raise ActsError(f"'--mode {args.mode}' runs only on '--source kraken', was --source {args.source}")
    if args.mode != "paper" and not (args.author or "").strip():
        raise ActsError(f"'--author' is required with --mode {args.mode} (the session is logged)")


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run (or continue) a session and print where it stopped as JSON."""
    _check(args)
    home = Home(acts_home())
    registry = ModelRegistry.of_home(home)
    wall = WallClock()
    store = ProfileStore(args.profile_store, wall) if args.profile_store is not None else None
    watcher = ProfileWatcher(store) if store is not None else None
    closers = [] if store is None else [store.close]
    report: dict[str, object] = {}
    try:
        with ControlStore(default_db_path()) as control, LiveGate(default_db_path()) as gate:
            if args.source == "recorded":
                feed = load_recorded(args.run_dir, registry, args.allow_run_bundle)
                factory, cash = None, None
            else:
                settings = load_settings(base_url=args.base_url, poll_seconds=args.poll_seconds)
                if args.mode == "live":
                    require_live(gate, settings)
                pipeline, bundle = load_run_model(args.run_dir, registry, args.allow_run_bundle)
                factory, cash, client = None, None, None
                if args.mode != "paper":
                    connected = gate.connected()
                    key_mode = KeyMode.LIVE if args.mode == "live" else KeyMode(connected.detail["mode"] if connected else "shadow")
                    client = connected_client(settings, key_mode, gate, Keychain(), wall)
                    cash = account_cash(client)
                    factory = live_broker(client, pipeline) if args.mode == "live" else shadow_broker(pipeline)
                # Kraken serves its newest 720 bars whatever the start: what it has committed is the warm-up.
                source, close = kraken_feed(pipeline, bundle, home.root, settings, wall, 0,
                                            max_polls=args.max_polls, idle_polls=args.idle_polls)  # fmt: skip
                closers.append(close)
                feed = _Recording(source) if args.mode == "shadow" else source
            state = args.state if args.state is not None else home.root / args.mode / feed.pipeline.spec.name
            runtime = PaperRuntime(feed, state, control, watcher, crash_hook(os.environ), factory, cash)  # type: ignore[arg-type]
            err.write(f"{args.mode} run of {args.run_dir} ({args.source}): continuing at event {runtime.next_index}\n")
            first_ms = runtime.last_ts
            try:
                result = runtime.run(args.speed if args.source == "recorded" else 0.0, args.max_events)
                write_decisions(runtime.decisions(), state / "decisions.parquet")
            finally:
                runtime.close()
            if args.mode == "shadow":
                report["divergence"] = _shadow_report(args, feed, state, gate, wall, first_ms, runtime, result.processed)
    finally:
        for close in closers:
            close()
    out.write(json.dumps({**result.as_dict(), "state": str(state), **report}, indent=1, sort_keys=True) + "\n")
    return 0


def _shadow_report(args: argparse.Namespace, feed: _Recording, state: Path, gate: LiveGate, wall: WallClock,
                   first_ms: int | None, shadow: PaperRuntime, processed: int) -> dict[str, object]:  # fmt: skip
    """Log the session towards live enablement and compare it with a paper run on the same bars."""
    kept = feed.kept
    connected = gate.connected()
    if connected is not None and kept:
        start = first_ms if first_ms is not None else kept[0].ts_ms
        record_shadow_session(gate, args.author, connected.key_fingerprint, start, kept[-1].ts_ms, processed, wall)
    twin = PaperRuntime(_Replay(feed.source, kept), state / "paper_twin")  # type: ignore[arg-type]
    try:
        twin.run(0.0)
        found = divergence(shadow.log.frame(), twin.decisions())
    finally:
        twin.close()
    (state / "divergence.json").write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return found
