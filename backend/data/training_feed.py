"""The training data policy (governance 7D) where training reads the lake.

``FORCE_LOCAL_DATA_FOR_TRAINING`` (default) keeps training on the lake as it is: no provider is
opened. ``ALLOW_PROVIDER_CALLS_DURING_TRAINING`` lets a run whose lake source a provider fills top it
up first, with the same incremental ingest as ``acts data ingest`` (raw bodies kept, cursors, evidence).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.clock import WallClock
from backend.config.schema import AssetSpec, LakeDataSpec
from backend.data.ingest import IngestOptions, Ingestor, SeriesReport
from backend.data.providers import Purpose, Source, open_provider
from backend.data.raw import RawStore
from backend.data.settings import HistDataSettings, TrainingDataSource, load_settings, training_data_policy
from backend.data.state import IngestState
from backend.errors import DataError

# Lake sources a provider fills, by name: only these can be topped up before training.
PROVIDER_SOURCES = {s.value: s for s in Source}
# Bars re-read before each series' cursor when training tops the lake up (as ``acts data ingest``).
TOP_UP_LOOKBACK_BARS = 12


def prepare_lake_source(
    data: LakeDataSpec, assets: Sequence[AssetSpec], home_root: Path, progress: Callable[[str], None]
) -> list[SeriesReport]:
    """Apply the training data policy to a lake run's ``assets`` before their bars are read.

    Under ``LAKE_ONLY`` (the default) no provider is opened. Under ``LAKE_AFTER_INGEST`` a lake
    source a provider fills is topped up by an incremental ingest first; any other source (shared
    imports, ``sim-*``) is read as is. Progress says which of the three happened.

    Returns
    -------
    list of SeriesReport
        One per ingested series; empty when the lake is read as is.

    Raises
    ------
    ConfigError
        When the settings are invalid (both training flags true), before anything is written.
    DataError
        When the top-up of a series fails (see :func:`top_up_lake`).
    """
    settings = load_settings()
    policy = training_data_policy(settings)
    if policy.source is TrainingDataSource.LAKE_ONLY:
        progress(
            f"training data policy {policy.source.value} (ALLOW_PROVIDER_CALLS_DURING_TRAINING=false): "
            f"reading lake source {data.source!r} as is, no provider call"
        )
        return []
    source = PROVIDER_SOURCES.get(data.source)
    if source is None:
        progress(
            f"training data policy {policy.source.value}, but lake source {data.source!r} is not filled by a "
            f"provider (only {sorted(PROVIDER_SOURCES)} are): reading the lake as is, no provider call"
        )
        return []
    return top_up_lake(data, assets, source, settings, home_root, progress)


def top_up_lake(
    data: LakeDataSpec,
    assets: Sequence[AssetSpec],
    source: Source,
    settings: HistDataSettings,
    home_root: Path,
    progress: Callable[[str], None],
) -> list[SeriesReport]:
    """Run an incremental ingest of ``assets`` at the run's timeframe from ``source`` into the lake.

    Each series continues from its cursor (re-reading ``TOP_UP_LOOKBACK_BARS``), or from the run's
    window start when it has none, up to now. Raw bodies go to ``<home>/raw``, cursors and evidence
    to ``<home>/data/ingest.sqlite``, as with ``acts data ingest``.

    Raises
    ------
    ProviderCallRefused
        When the settings forbid provider calls during training.
    ConfigError
        When the provider lacks a setting it needs (the CoinAPI key).
    DataError
        Naming every series whose ingest failed, and why.
    """
    clock = WallClock()
    raw = RawStore(home_root / "raw")
    state = IngestState(home_root / "data" / "ingest.sqlite")
    try:
        provider = open_provider(settings, source, raw, clock, clock.monotonic, time.sleep, purpose=Purpose.TRAINING)
        try:
            ingestor = Ingestor(home_root / "lake", provider, state, clock, progress, clock.monotonic)
            options = IngestOptions(data.timeframe, data.start_ms, lookback_bars=TOP_UP_LOOKBACK_BARS)
            reports = ingestor.run(list(assets), options)
        finally:
            provider.fetcher.close()
    finally:
        state.close()
        raw.close()
    failed = [f"{r.symbol}: {r.error}" for r in reports if r.error]
    if failed:
        raise DataError(f"topping up lake source {source.value!r} before training failed for {'; '.join(failed)}")
    progress(
        f"lake topped up from {source.value} before training (training data policy lake_after_ingest): "
        f"{sum(r.pages for r in reports)} pages, {sum(r.bars for r in reports)} bars received "
        f"over {len(reports)} series"
    )
    return reports
