"""The live event source: Kraken bars as they close, through incremental features and the promoted model.

:class:`KrakenFeedSource` is what :class:`backend.runtime.paper.PaperRuntime` plays for ``--source
kraken`` (paper, shadow and live modes): it polls :class:`backend.data.live_feed.LiveBarFeed`, hands
each newly closed bar time to :class:`backend.features.incremental.IncrementalFeatures` (only that bar's
rows are computed), predicts those rows with the bundle, and yields one :class:`BarBatch` per bar time,
aligned to the run's symbols. The bars already committed when a session first starts are warm-up
history, not events; a restart continues after the checkpoint's bar time, from the lake.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from backend.data.live_feed import LiveBarFeed, history
from backend.engine.events import BarBatch
from backend.engine.pipeline import PREDICTION_OUTPUTS, Pipeline
from backend.features.incremental import IncrementalFeatures
from backend.models.bundle import ModelBundle
from backend.models.train import predict_bundle

Sleeper = Callable[[float], None]


def batch_of(pipeline: Pipeline, bundle: ModelBundle, rows: pl.DataFrame, index: int, ts: int, num_threads: int) -> BarBatch:
    """Return one bar time's feature rows, predicted, as an engine batch in the run's symbol order."""
    spec = pipeline.spec
    symbols = spec.symbols
    code = {s: i for i, s in enumerate(symbols)}
    rows = rows.filter(pl.col("symbol").is_in(list(symbols)))
    where = np.array([code[s] for s in rows["symbol"].to_list()], dtype=np.int64)
    predictions = predict_bundle(bundle, rows, spec.universe.clusters, num_threads, forward=True,
                                 targets=pipeline.prediction_targets)  # fmt: skip
    has_bar = np.zeros(len(symbols), dtype=bool)
    has_bar[where] = True

    def columns(frame: pl.DataFrame, names: tuple[str, ...] | list[str], at: np.ndarray) -> dict[str, np.ndarray]:
        # One selection for every column (a cast and a null fill each), laid out in the run's symbol order.
        values = frame.select(pl.col(n).cast(pl.Float64).fill_null(np.nan) for n in names).to_numpy()
        out = np.full((len(names), len(symbols)), np.nan)
        out[:, at] = values.T
        return dict(zip(names, out, strict=True))

    bar = columns(rows, ("open", "close", "volume"), where)
    predicted_at = np.array([code[s] for s in predictions["symbol"].to_list()], dtype=np.int64)
    return BarBatch(
        index, ts, bar["open"], bar["close"], has_bar, columns(predictions, PREDICTION_OUTPUTS, predicted_at),
        columns(rows, list(pipeline.feature_names), where), None, bar["volume"],
    )  # fmt: skip


@dataclass
class KrakenFeedSource:
    """Kraken's closing bars as engine events (the runtime's feed for ``--source kraken``).

    ``max_polls`` bounds a session (None: until stopped); ``idle_polls`` ends it after that many polls
    in a row brought no bar (None: never). Between polls it sleeps ``poll_seconds``.
    """

    pipeline: Pipeline
    bundle: ModelBundle
    feed: LiveBarFeed
    poll_seconds: float
    sleep: Sleeper = time.sleep
    max_polls: int | None = None
    idle_polls: int | None = None
    num_threads: int = 1
    polls: int = 0
    timings: list[tuple[int, float]] = field(default_factory=list)  # (bar time, seconds from ready to batch)

    @property
    def identity(self) -> str:
        """What a state folder of this source belongs to: spec, model, lake source and timeframe."""
        return json.dumps({"spec_hash": self.pipeline.spec_hash, "model": self.bundle.version, "source": self.feed.source,
                           "timeframe": self.feed.timeframe}, sort_keys=True)  # fmt: skip

    @property
    def start_ms(self) -> int:
        """The runtime clock's start: the feed's first bar time."""
        return self.feed.options.start_ms

    @property
    def events(self) -> int | None:
        """A live feed has no known end."""
        return None

    def batches(self, start: int, after_ms: int | None = None) -> Iterator[BarBatch]:
        """Yield the events after ``after_ms`` (the checkpoint's bar time), numbered from ``start``."""
        spec = self.pipeline.spec
        features = IncrementalFeatures(spec.features, spec.universe.clusters)
        symbols = list(spec.symbols)
        if after_ms is not None:
            self.feed.ready_after_ms = after_ms
        # Pages a killed session handed on but did not write down reach the lake before the warm-up reads it.
        self.feed.open()
        if after_ms is not None:
            features.seed(history(self.feed.ingestor.lake_root, self.feed.source, self.feed.timeframe, symbols,
                                  after_ms + self.feed.bar_ms, features.history_bars))  # fmt: skip
        index, idle = start, 0
        while self.max_polls is None or self.polls < self.max_polls:
            if self.polls:
                self.sleep(self.poll_seconds)
            poll = self.feed.poll()
            self.polls += 1
            if after_ms is None and features.last_ts is None:
                # The first poll of a new session: what Kraken has committed so far is warm-up history.
                features.seed(poll.bars)
                after_ms = self.feed.ready_after_ms
                continue
            idle = 0 if poll.ready_ts else idle + 1
            if self.idle_polls is not None and idle >= self.idle_polls:
                self.feed.settle()
                return
            for ts, part in poll.bars.group_by("ts", maintain_order=True) if poll.ready_ts else ():
                started = time.perf_counter()
                rows = features.update(part)
                batch = batch_of(self.pipeline, self.bundle, rows, index, int(ts[0]), self.num_threads)
                self.timings.append((int(ts[0]), time.perf_counter() - started))
                yield batch
                index += 1
            # The poll's bars are decided and journaled: now its evidence, lake bars and cursors are written.
            self.feed.settle()
