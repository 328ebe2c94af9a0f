"""The Kraken-feed kill test's worker: one paper session on the Kraken feed, killed where it is told.

``python kraken_kill_worker.py RUN_DIR ROOT URL CLOCK_FILE POLLS CRASH``: CRASH is an ``EVENT:POINT`` of
the runtime's crash seam, ``settle:N`` (SIGKILL inside a poll's settlement after N series were written
down, once bars have been handed on), or ``none``. The clock lives in CLOCK_FILE, shared with the
emulator of the parent process.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from kraken_helpers import run_model, settings_for
from kraken_kill_clock import FileBarClock

from backend.runtime.live import kraken_feed
from backend.runtime.paper import CRASH_ENV, PaperRuntime, crash_hook


def main() -> None:
    run_dir, root, url, clock_file, polls, crash = sys.argv[1:7]
    pipeline, bundle, bars = run_model(Path(run_dir), Path(root))
    clock = FileBarClock(Path(clock_file))
    source, close = kraken_feed(pipeline, bundle, Path(root) / "home", settings_for(url), clock, int(bars["ts"].min()),
                                sleep=clock.sleep, max_polls=int(polls))  # fmt: skip
    if crash.startswith("settle:"):
        after, apply_page, applied = int(crash.split(":")[1]), source.feed.ingestor.apply_page, []

        def killing_apply(*args: object) -> object:
            done = apply_page(*args)  # type: ignore[arg-type]
            if source.feed.ready_after_ms is not None and source.feed.ready_after_ms >= clock.kill_after_ms:
                applied.append(1)
                if len(applied) == after:
                    os.kill(os.getpid(), signal.SIGKILL)
            return done

        source.feed.ingestor.apply_page = killing_apply  # type: ignore[method-assign]
    hook = crash_hook({CRASH_ENV: crash} if ":" in crash and not crash.startswith("settle:") else {})
    runtime = PaperRuntime(source, Path(root) / "state", crash=hook)
    try:
        runtime.run(0.0)
    finally:
        runtime.close()
        close()


if __name__ == "__main__":
    main()
