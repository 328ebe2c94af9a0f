"""`acts run --mode paper|shadow|live --source recorded|kraken`: the runtime, one durable event at a time.

``--source recorded --run-dir RUN`` plays a backtest run's bars (paper only) at ``--speed`` times real
time (10 or 10x: ten times faster, a 5-minute bar every 30 s; 0.5: half speed; max: no waiting).
``--source kraken`` polls Kraken's OHLC (``conf/kraken``; ``--base-url`` points at the emulator) and acts
on each bar as Kraken closes it, with the model of ``--run-dir`` (its spec and bundle). Paper simulates
fills; shadow reads the account's cash with the connected key, journals what it would send and sends
nothing, then reports its divergence from a paper run on the same bars; live sends through ccxt and is
refused, naming what is missing, unless ``acts live status`` shows every requirement met. Shadow and
live sessions are logged with ``--author`` (required, no login-name default).

The model must be the promoted one or the home's active installed bundle; ``--allow-run-bundle`` accepts
the recorded run's own bundle. State lives in ``--state`` (default ``$ACTS_HOME/<mode>/<run name>``): run
the same command again to continue after a stop or a crash. The decision log so far is written to
``<state>/decisions.parquet`` at every stop (the journal's ``paper_decisions`` table is the durable copy).
The kill switch (``acts control kill``) is read before every event. Every argument is checked, and the
run's spec and model read, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from backend.audit.decisions import write_decisions
from backend.bundles.compat import running
from backend.bundles.store import BundleStore
from backend.clock import WallClock
from backend.config.text import AUTHOR_MAX_CHARS, checked_text
from backend.control.live import LiveGate, readiness_at
from backend.control.store import ControlStore, default_db_path
from backend.engine.events import BarBatch
from backend.engine.pipeline import Pipeline
from backend.errors import ActsError
from backend.home import Home, acts_home
from backend.kraken.permissions import KeyMode
from backend.kraken.settings import KrakenSettings, load_settings
from backend.models.bundle import ModelBundle
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
    refuse_unready,
    shadow_broker,
)
from backend.runtime.paper import BrokerFactory, EventSource, PaperRuntime, PaperRuntimeError, crash_hook, load_recorded, load_run_model
from backend.secrets.keychain import Keychain
from scripts.argtypes import SPEED_HELP, bounded_int, positive_float, speed


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="run the engine in real time: paper, shadow or live",
        epilog="examples: --speed 1 (real time), --speed 10x (ten times faster), --speed 0.5 (half speed), --speed max",
    )  # fmt: skip
    run.add_argument("--mode", choices=("paper", "shadow", "live"), required=True,
                     help="paper: simulated fills; shadow: journal only, real balances; live: orders through ccxt")  # fmt: skip
    run.add_argument("--source", choices=("recorded", "kraken"), required=True, help="recorded run bars, or Kraken's live OHLC")
    run.add_argument("--run-dir", type=Path, required=True, help="the recorded run (its bars for --source recorded; its model)")
    run.add_argument("--state", type=Path, default=None, help="state folder (default $ACTS_HOME/<mode>/<run name>)")
    run.add_argument("--speed", type=speed, default=1.0, help="recorded: " + SPEED_HELP)
    run.add_argument("--max-events", type=bounded_int(1, 10**12), default=None, help="stop after this many events (resumable)")
    run.add_argument("--allow-run-bundle", action="store_true", help="use the run's own bundle when it is not promoted")
    run.add_argument("--profile-store", type=Path, default=None, help="profile database to pick up activations from")
    run.add_argument("--base-url", default=None, help="kraken: Kraken's base URL (default from conf/kraken)")
    run.add_argument("--max-polls", type=bounded_int(1, 10**9), default=None, help="kraken: stop after this many polls")
    run.add_argument("--poll-seconds", type=positive_float, default=None,
                     help="kraken: seconds between polls (default from conf/kraken)")  # fmt: skip
    run.add_argument("--idle-polls", type=bounded_int(1, 10**9), default=None,
                     help="kraken: stop after this many polls in a row without a bar")  # fmt: skip
    run.add_argument("--author", default=None, help="shadow and live: who runs the session (logged; required, no default)")
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


@dataclass(frozen=True)
class _Plan:
    """Everything a session needs that could be checked without writing anything."""

    state: Path
    author: str | None
    kraken: tuple[KrakenSettings, Pipeline, ModelBundle] | None  # --source kraken
    feed: EventSource | None  # --source recorded


def _plan(args: argparse.Namespace, home: Home, err: TextIO) -> _Plan:
    """Check every argument, read the run's spec and model and the live readiness; write nothing."""
    if args.mode != "paper" and args.source != "kraken":
        raise ActsError(f"'--mode {args.mode}' runs only on '--source kraken', was --source {args.source}")
    author = None
    if args.mode != "paper":
        if args.author is None:
            raise ActsError(f"'--author' is required with --mode {args.mode} (the session is logged; no default)")
        author = checked_text("author", args.author, AUTHOR_MAX_CHARS)
    if args.profile_store is not None and not args.profile_store.is_file():
        raise PaperRuntimeError(f"--profile-store {args.profile_store} does not exist (a profile database, e.g. $ACTS_HOME/acts.db)")
    active = BundleStore.of_home(home).active(running())
    installed = active.manifest.model_version if active is not None else None
    registry = ModelRegistry.of_home(home)
    kraken, feed = None, None
    if args.source == "recorded":
        feed = load_recorded(args.run_dir, registry, args.allow_run_bundle, installed=installed)
        pipeline, bundle = feed.pipeline, feed.bundle
    else:
        settings = load_settings(base_url=args.base_url, poll_seconds=args.poll_seconds)
        if args.mode == "live":
            refuse_unready(readiness_at(default_db_path(), settings.min_shadow_ms))
        pipeline, bundle = load_run_model(args.run_dir, registry, args.allow_run_bundle, installed)
        kraken = (settings, pipeline, bundle)
    if installed is not None and bundle.version == installed and active is not None:
        err.write(f"using the installed bundle {active.manifest.key} (model {installed})\n")
    state = args.state if args.state is not None else home.root / args.mode / pipeline.spec.name
    if state.exists() and not state.is_dir():
        raise PaperRuntimeError(f"--state {state} is not a folder")
    return _Plan(state, author, kraken, feed)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run (or continue) a session and print where it stopped as JSON."""
    home = Home(acts_home())
    plan = _plan(args, home, err)
    wall = WallClock()
    store = ProfileStore(args.profile_store, wall) if args.profile_store is not None else None
    watcher = ProfileWatcher(store) if store is not None else None
    closers = [] if store is None else [store.close]
    report: dict[str, object] = {}
    try:
        with ControlStore(default_db_path()) as control, LiveGate(default_db_path()) as gate:
            factory: BrokerFactory | None = None
            cash: float | None = None
            if plan.kraken is None:
                feed: EventSource = plan.feed  # type: ignore[assignment]
            else:
                settings, pipeline, bundle = plan.kraken
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
                feed = _Recording(source) if args.mode == "shadow" else source  # type: ignore[assignment]
            runtime = PaperRuntime(feed, plan.state, control, watcher, crash_hook(os.environ), factory, cash)
            total = "" if feed.events is None else f" of {feed.events}"
            err.write(f"{args.mode} run of {args.run_dir} ({args.source}): continuing at event {runtime.next_index}{total}\n")
            first_ms = runtime.last_ts
            try:
                result = runtime.run(args.speed if args.source == "recorded" else 0.0, args.max_events)
                write_decisions(runtime.decisions(), plan.state / "decisions.parquet")
            finally:
                runtime.close()
            if args.mode == "shadow":
                report["divergence"] = _shadow_report(plan, feed, gate, wall, first_ms, runtime, result.processed)  # type: ignore[arg-type]
    finally:
        for close in closers:
            close()
    out.write(json.dumps({**result.as_dict(), "state": str(plan.state), **report}, indent=1, sort_keys=True) + "\n")
    return 0


def _shadow_report(plan: _Plan, feed: _Recording, gate: LiveGate, wall: WallClock,
                   first_ms: int | None, shadow: PaperRuntime, processed: int) -> dict[str, object]:  # fmt: skip
    """Log the session towards live enablement and compare it with a paper run on the same bars."""
    kept = feed.kept
    connected = gate.connected()
    if connected is not None and kept:
        start = first_ms if first_ms is not None else kept[0].ts_ms
        record_shadow_session(gate, plan.author or "", connected.key_fingerprint, start, kept[-1].ts_ms, processed, wall)
    twin = PaperRuntime(_Replay(feed.source, kept), plan.state / "paper_twin")  # type: ignore[arg-type]
    try:
        twin.run(0.0)
        found = divergence(shadow.log.frame(), twin.decisions())
    finally:
        twin.close()
    (plan.state / "divergence.json").write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return found
