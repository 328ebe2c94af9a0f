"""The SIGKILL drill's worker: load a recorded run once, then fork one live session per command.

Reads one JSON command a line on stdin ({"url", "key", "secret", "state", "crash"}); each child runs
the live runtime (recorded bars, the Kraken broker against the emulator at ``url``) and, when
``crash`` is "EVENT:POINT", is SIGKILLed by the crash seam at that point. Answers one JSON line per
command: {"signal": N} for a killed child, {"exit": N} otherwise. Forking from one loaded process
keeps each trial to a fraction of a second (a fresh interpreter takes seconds to import).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from backend.engine.events import MarketMatrix
from backend.kraken.client import Credentials, NonceSource, make_client
from backend.models.registry import ModelRegistry
from backend.runtime.live import live_broker
from backend.runtime.paper import CRASH_ENV, PaperRuntime, crash_hook, load_recorded


def sliced(matrix: MarketMatrix, first: int, last: int) -> MarketMatrix:
    cut = slice(first, last)
    return MarketMatrix(matrix.ts_ms[cut], matrix.symbols, matrix.open[cut], matrix.close[cut], matrix.has_bar[cut],
                        {k: v[cut] for k, v in matrix.pred.items()}, {k: v[cut] for k, v in matrix.feat.items()},
                        None if matrix.volume is None else matrix.volume[cut])  # fmt: skip


def session(feed: object, command: dict) -> None:
    client = make_client(command["url"], Credentials(command["key"], command["secret"]),
                         NonceSource(lambda: time.time_ns() // 1_000_000), 2000, rate_limit=False)  # fmt: skip
    crash = crash_hook({CRASH_ENV: command["crash"]} if command["crash"] else {})
    runtime = PaperRuntime(feed, Path(command["state"]), crash=crash, broker_factory=live_broker(client, feed.pipeline,  # type: ignore[attr-defined]
                                                                                               sleep=lambda s: None))  # fmt: skip
    runtime.run(0.0)
    runtime.close()


def main() -> None:
    run_dir, first, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    full = load_recorded(run_dir, ModelRegistry(Path(sys.argv[4])), allow_run_bundle=True)
    feed = replace(full, matrix=sliced(full.matrix, first, last))
    print(json.dumps({"ready": len(feed.matrix.ts_ms)}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: one session, then leave without running the parent's cleanup
            try:
                session(feed, command)
                os._exit(0)
            except BaseException as error:  # noqa: BLE001 - reported to the drill as a failed child
                sys.stderr.write(f"child failed: {error!r}\n")
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        answer = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
