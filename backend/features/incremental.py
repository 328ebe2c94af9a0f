"""Incremental features: when a bar closes, compute only that bar's rows, from a bounded history.

:class:`IncrementalFeatures` keeps, per symbol, the last :func:`lookback_bars` bars the feature set
can read, appends each new bar, and evaluates the same builders (:func:`build_features`) over that
history, returning only the new bar's rows: the work per bar is bounded by the longest window, not
by the length of the run. Window features read exactly the bars they would in a batch recompute;
recursive ones (EMAs) start far enough back (16 spans) that the part of the history left out weighs
less than 1e-12. ``tests/unit/features/test_incremental.py`` proves the rows equal a batch recompute
over the whole history to float rounding (1e-9) for every builder, gaps included.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.errors import DataError
from backend.features.build import build_features

# Builders whose value at t reads further back than `window` bars.
_EMA_SPANS = {"ema_distance": 1, "macd": 2, "macd_histogram": 2}  # longest EMA span, in windows
_WINDOW_MULTIPLE = {"vol_ratio": 4}
EMA_SETTLE_SPANS = 16


def feature_lookback(feature: FeatureSpec) -> int:
    """Return how many bars (the current one included) ``feature`` reads."""
    window = int(feature.window or 1)
    if feature.builder in _EMA_SPANS:
        return EMA_SETTLE_SPANS * _EMA_SPANS[feature.builder] * window + 2
    return _WINDOW_MULTIPLE.get(feature.builder, 1) * window + 4  # a diff, %D's 3-bar mean, a previous close


def lookback_bars(features: FeatureSetSpec) -> int:
    """Return the history a feature set needs per symbol."""
    return max(feature_lookback(f) for f in features.features)


class IncrementalFeatures:
    """Per-symbol bounded history and the feature rows of each new bar.

    Parameters
    ----------
    features : FeatureSetSpec
        The feature set (the run's).
    clusters : Mapping[str, str]
        Symbol -> cluster (cluster features).
    history_bars : int or None
        Bars kept per symbol; default :func:`lookback_bars` of the set.
    """

    def __init__(self, features: FeatureSetSpec, clusters: Mapping[str, str], history_bars: int | None = None) -> None:
        self.features = features
        self.clusters = dict(clusters)
        self.history_bars = history_bars if history_bars is not None else lookback_bars(features)
        self.bar_columns: list[str] | None = None
        self._history = pl.DataFrame()
        self.last_ts: int | None = None

    def seed(self, bars: pl.DataFrame) -> None:
        """Start from ``bars`` (history before the first live bar; only the newest needed are kept)."""
        self._history = pl.DataFrame()
        self.last_ts = None
        if bars.height:
            self.bar_columns = list(bars.columns)
            self._append(bars)

    def _append(self, bars: pl.DataFrame) -> None:
        merged = bars if self._history.height == 0 else pl.concat([self._history, bars.select(self._history.columns)])
        times = merged["ts"].unique().sort()
        keep_from = times[max(0, times.len() - self.history_bars)]
        self._history = merged.filter(pl.col("ts") >= keep_from).sort("ts", "symbol")
        self.last_ts = int(times[-1])

    def update(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Add the bars of one new bar time and return their feature rows (sorted by symbol).

        Raises
        ------
        DataError
            When the bars span several times, or are not newer than the history.
        """
        times = bars["ts"].unique()
        if times.len() != 1:
            raise DataError(f"an update holds the bars of exactly one bar time, got {times.len()}")
        ts = int(times[0])
        if self.last_ts is not None and ts <= self.last_ts:
            raise DataError(f"bar time {ts} is not after the last one {self.last_ts}: bars arrive in order")
        if self.bar_columns is None:
            self.bar_columns = list(bars.columns)
        self._append(bars.select(self.bar_columns))
        rows = build_features(self._history, self.features, self.clusters)
        return rows.filter(pl.col("ts") == ts).sort("symbol")
