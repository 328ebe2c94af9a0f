"""`acts run --mode paper --source recorded --run-dir RUN`: the paper runtime on a recorded run.

The recorded run's bars are played event by event (sleeping the bar gap divided by ``--speed``;
0 = as fast as possible) through the engine and the journalled simulated broker. State lives in
``--state`` (default ``$ACTS_HOME/paper/<run name>``): run the same command again to continue
after a stop or a crash. The decision log so far is written to ``<state>/decisions.parquet`` at every
stop (the journal's ``paper_decisions`` table is the durable copy). The kill switch (``acts control kill``) is read before every event.
The model must be the promoted one; ``--allow-run-bundle`` accepts the recorded run's own bundle.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TextIO

from backend.audit.decisions import write_decisions
from backend.clock import WallClock
from backend.control.store import ControlStore, default_db_path
from backend.home import Home, acts_home
from backend.models.registry import ModelRegistry
from backend.profiles.store import ProfileStore
from backend.profiles.watcher import ProfileWatcher
from backend.runtime.paper import PaperRuntime, crash_hook, load_recorded


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the engine in real time: paper trading on a recorded run")
    run.add_argument("--mode", choices=("paper",), required=True, help="paper: simulated broker, durable state")
    run.add_argument("--source", choices=("recorded",), required=True, help="recorded: a backtest run folder's bars")
    run.add_argument("--run-dir", type=Path, required=True, help="the recorded run folder")
    run.add_argument("--state", type=Path, default=None, help="state folder (default $ACTS_HOME/paper/<run name>)")
    run.add_argument("--speed", type=float, default=1.0, help="time scale of the bar gaps (0 = as fast as possible)")
    run.add_argument("--max-events", type=int, default=None, help="stop after this many events (resumable)")
    run.add_argument("--allow-run-bundle", action="store_true", help="use the run's own bundle when it is not promoted")
    run.add_argument("--profile-store", type=Path, default=None, help="profile database to pick up activations from")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run (or continue) a paper session and print where it stopped as JSON."""
    home = Home(acts_home())
    feed = load_recorded(args.run_dir, ModelRegistry.of_home(home), args.allow_run_bundle)
    state = args.state if args.state is not None else home.root / "paper" / feed.pipeline.spec.name
    store = ProfileStore(args.profile_store, WallClock()) if args.profile_store is not None else None
    watcher = ProfileWatcher(store) if store is not None else None
    with ControlStore(default_db_path()) as control:
        runtime = PaperRuntime(feed, state, control, watcher, crash_hook(os.environ))
        err.write(f"paper run of {args.run_dir}: continuing at event {runtime.next_index} of {len(feed.matrix.ts_ms)}\n")
        try:
            result = runtime.run(args.speed, args.max_events)
            write_decisions(runtime.decisions(), state / "decisions.parquet")
        finally:
            runtime.close()
            if store is not None:
                store.close()
    out.write(json.dumps({**result.as_dict(), "state": str(state)}, indent=1, sort_keys=True) + "\n")
    return 0
