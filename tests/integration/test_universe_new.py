"""Building a new universe version from a market-cap snapshot and the loopback Kraken emulator."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml
from ingest_helpers import run_cli

from backend.clock import WallClock
from backend.config.schema import AssetSpec, UniverseSpec
from backend.data.providers import Source, open_provider
from backend.data.raw import RawStore
from backend.data.settings import HistDataSettings, RankingSource
from backend.data.simulator import simulate_ohlcv
from backend.data.universe import Exclusion, KrakenUniverseData, build_version, load_snapshot, load_universe
from backend.errors import ConfigError
from backend.sandbox.kraken import KrakenEmulator

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
START_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z
V1 = load_universe(REPO / "conf" / "universe" / "v1.yaml")


def listed(symbol: str, cluster: str = "l1_alt", ordermin: float = 1.0) -> AssetSpec:
    return AssetSpec(symbol=symbol, cluster=cluster, coinapi_symbol_id=f"KRAKEN_SPOT_{symbol}_USD", ordermin=ordermin,
                     kraken={"pair_key": f"{symbol}USD", "altname": f"{symbol}USD", "wsname": f"{symbol}/USD"})  # fmt: skip


# Kraken lists these USD pairs; STBL is an unlabelled stablecoin, WBTC a derivative, XMR restricted, NEWC is new.
KRAKEN_ASSETS = [a for a in V1.assets if a.symbol in {"BTC", "ETH", "XRP", "SOL", "DOGE"}] + [
    listed("STBL"), listed("WBTC"), listed("XMR"), listed("NEWC", ordermin=16.0), listed("QUIET", ordermin=0.5),
]
SNAPSHOT = {
    "as_of": "2026-11-20",
    "source": "test ranking",
    "coins": [
        {"symbol": "BTC", "market_cap_usd": 1.9e12},
        {"symbol": "ETH", "market_cap_usd": 4e11},
        {"symbol": "USDT", "market_cap_usd": 1.5e11},
        {"symbol": "XRP", "market_cap_usd": 1.2e11},
        {"symbol": "SOL", "market_cap_usd": 9e10},
        {"symbol": "WBTC", "market_cap_usd": 8e10},
        {"symbol": "STBL", "market_cap_usd": 7e10},
        {"symbol": "DOGE", "market_cap_usd": 3e10},
        {"symbol": "LEO", "market_cap_usd": 2e10},
        {"symbol": "NEWC", "market_cap_usd": 1e10, "cluster": "l1_alt"},
        {"symbol": "XMR", "market_cap_usd": 5e9},
    ],
}


def kraken_bars() -> pl.DataFrame:
    symbols = [a.symbol for a in KRAKEN_ASSETS if a.symbol != "QUIET"]  # QUIET is listed but has never traded
    bars = simulate_ohlcv(symbols, {s: "c" for s in symbols}, "1d", START_MS, 40, seed=11)
    pegged = pl.col("symbol") == "STBL"
    wobble = 1.0 + (pl.col("ts") // DAY_MS % 3 - 1) * 0.004
    return bars.with_columns(
        *(pl.when(pegged).then(wobble).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))
    )


@pytest.fixture
def kraken(monkeypatch: pytest.MonkeyPatch):
    universe = UniverseSpec(version="kraken", quote="USD", ranking_source="test", ranking_date=date(2026, 11, 20),
                            assets=tuple(KRAKEN_ASSETS))  # fmt: skip
    with KrakenEmulator(kraken_bars(), timeframe="1d", universe=universe) as emulator:
        monkeypatch.setenv("KRAKEN_PUBLIC_BASE_URL", emulator.base_url)
        yield emulator


@pytest.fixture
def view(kraken: KrakenEmulator, acts_home: Path):
    raw = RawStore(acts_home / "raw")
    clock = WallClock()
    settings = HistDataSettings(kraken_public_base_url=kraken.base_url)
    provider = open_provider(settings, Source.KRAKEN, raw, clock, clock.monotonic, time.sleep)
    yield KrakenUniverseData(provider.fetcher)
    provider.fetcher.close()
    raw.close()


def snapshot_file(tmp_path: Path, payload: dict = SNAPSHOT, name: str = "snapshot.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path


def with_coins(coins: list[dict]) -> dict:
    return {**SNAPSHOT, "coins": coins}


EXPECTED_EXCLUDED = {
    "LEO": [Exclusion.NOT_ON_KRAKEN_USD],
    "STBL": [Exclusion.NEAR_DOLLAR],
    "USDT": [Exclusion.PEGGED, Exclusion.NOT_ON_KRAKEN_USD],
    "WBTC": [Exclusion.DERIVATIVE],
    "XMR": [Exclusion.RESTRICTED],
}


def test_a_market_cap_build_takes_the_first_eligible_coins_and_reports_every_exclusion(view, kraken, tmp_path: Path) -> None:
    snapshot = load_snapshot(snapshot_file(tmp_path))

    build = build_version(snapshot, view, "v2", RankingSource.MARKET_CAP_SNAPSHOT, V1, size=6)

    assert build.chosen == ("BTC", "ETH", "XRP", "SOL", "DOGE", "NEWC")
    assert build.excluded == EXPECTED_EXCLUDED
    spec = UniverseSpec.model_validate(yaml.safe_load(build.text))
    assert spec.version == "v2" and spec.ranking_date == date(2026, 11, 20)
    assert spec.ranking_source == (f"MARKET_CAP_SNAPSHOT: market-cap snapshot as_of 2026-11-20 sha256 {snapshot.sha256}; "
                                   "Kraken USD pairs from AssetPairs")  # fmt: skip
    by_symbol = {a.symbol: a for a in spec.assets}
    v1 = {a.symbol: a for a in V1.assets}
    for symbol in ("BTC", "ETH", "XRP", "SOL", "DOGE"):  # Kraken names and clusters carried over unchanged
        assert by_symbol[symbol] == v1[symbol]
    assert by_symbol["NEWC"] == listed("NEWC", ordermin=16.0)
    assert "# excluded USDT: pegged_value, not_tradeable_on_kraken_spot_usd\n" in build.text
    # The guard read daily closes down the ranking only: the first six (STBL among them), then NEWC.
    ohlc = [target for _, target, _ in kraken.request_log if target.startswith("/0/public/OHLC")]
    assert len(ohlc) == 7 and all("interval=1440" in target for target in ohlc)
    assert not any(target.startswith("/0/public/Ticker") for _, target, _ in kraken.request_log)


def test_the_same_snapshot_and_kraken_data_give_the_same_bytes(view, tmp_path: Path) -> None:
    snapshot = load_snapshot(snapshot_file(tmp_path))

    first = build_version(snapshot, view, "v2", RankingSource.MARKET_CAP_SNAPSHOT, V1, size=6)
    second = build_version(snapshot, view, "v2", RankingSource.MARKET_CAP_SNAPSHOT, V1, size=6)

    assert first.text == second.text


def test_a_volume_build_ranks_by_kraken_24h_usd_volume_and_dates_the_ranking_by_the_fetch(view, tmp_path: Path) -> None:
    snapshot = load_snapshot(snapshot_file(tmp_path, with_coins(SNAPSHOT["coins"] + [{"symbol": "QUIET", "market_cap_usd": 9e12}])))
    pairs = view.usd_pairs()
    volumes = view.usd_volumes([pairs[name] for name in ("XBT", "ETH", "XRP", "SOL", "XDG", "NEWC", "QUIET")])

    build = build_version(snapshot, view, "v2", RankingSource.KRAKEN_USD_VOLUME, V1, size=3, fetched_on=date(2026, 11, 27))

    assert "QUIETUSD" not in volumes  # listed but without a trade: no ticker, volume 0
    by_symbol = {"BTC": "XXBTZUSD", "ETH": "XETHZUSD", "XRP": "XXRPZUSD", "SOL": "SOLUSD", "DOGE": "XDGUSD", "NEWC": "NEWCUSD"}
    expected = sorted(by_symbol, key=lambda s: (-volumes[by_symbol[s]], s))[:3]
    assert list(build.chosen) == expected
    spec = UniverseSpec.model_validate(yaml.safe_load(build.text))
    assert spec.ranking_date == date(2026, 11, 27)
    assert spec.ranking_source.startswith("KRAKEN_USD_VOLUME: Kraken Ticker 24h USD volume of 2026-11-27; candidates from")


def test_without_a_previous_version_every_cluster_comes_from_the_snapshot(view, tmp_path: Path) -> None:
    coins = [{"symbol": "SOL", "market_cap_usd": 2.0, "cluster": "l1_major"}, {"symbol": "NEWC", "market_cap_usd": 1.0, "cluster": "new"}]
    build = build_version(load_snapshot(snapshot_file(tmp_path, with_coins(coins))), view, "v1", RankingSource.MARKET_CAP_SNAPSHOT)

    assert build.chosen == ("SOL", "NEWC") and build.excluded == {}
    assert UniverseSpec.model_validate(yaml.safe_load(build.text)).clusters == {"NEWC": "new", "SOL": "l1_major"}


@pytest.mark.parametrize(
    ("coins", "kwargs", "message"),
    [
        (SNAPSHOT["coins"], {"size": 0}, "universe size must be in 1..100, was 0"),
        (SNAPSHOT["coins"], {"size": 101}, "universe size must be in 1..100, was 101"),
        (SNAPSHOT["coins"], {"version": "v1"}, "version 'v1' is the previous version's name"),
        ([{"symbol": "USDT", "market_cap_usd": 1}, {"symbol": "LEO", "market_cap_usd": 1}], {},
         r"no coin of the snapshot \(as_of 2026-11-20\) is eligible; excluded: LEO \(not_tradeable_on_kraken_spot_usd\); "
         r"USDT \(pegged_value, not_tradeable_on_kraken_spot_usd\)"),
        ([{"symbol": "LEO", "market_cap_usd": 1}], {"ranking": RankingSource.KRAKEN_USD_VOLUME}, "no coin of the snapshot"),
        ([{"symbol": "STBL", "market_cap_usd": 1}], {}, r"excluded: STBL \(closes_within_2pct_of_1_usd\)"),
        ([{"symbol": "BTC", "market_cap_usd": 2}, {"symbol": "NEWC", "market_cap_usd": 1}], {},
         r"chosen coin\(s\) \['NEWC'\] have no cluster"),
        (SNAPSHOT["coins"], {"version": "v 2"}, "universe v 2 would be invalid:\n'version' string should match pattern"),
    ],
)
def test_a_build_that_cannot_give_a_valid_version_is_refused(view, tmp_path: Path, coins: list, kwargs: dict, message: str) -> None:
    snapshot = load_snapshot(snapshot_file(tmp_path, with_coins(coins)))
    arguments = {"version": "v2", "ranking": RankingSource.MARKET_CAP_SNAPSHOT, "previous": V1, "size": 6, **kwargs}

    with pytest.raises(ConfigError, match=message):
        build_version(snapshot, view, **arguments)


# ------------------------------------------------------------------ the command
def previous_copy(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "v1.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes((REPO / "conf" / "universe" / "v1.yaml").read_bytes())
    return path


def test_the_command_writes_the_version_next_to_the_previous_one_reports_exclusions_and_keeps_raw_bodies(
    kraken, tmp_path: Path, acts_home: Path
) -> None:
    previous = previous_copy(tmp_path)

    code, out, err = run_cli("data", "universe-new", "--snapshot", str(snapshot_file(tmp_path)), "--version", "v2",
                             "--previous", str(previous), "--size", "6")  # fmt: skip

    assert code == 0, out + err
    target = previous.parent / "v2.yaml"
    assert load_universe(target).symbols == ("BTC", "DOGE", "ETH", "NEWC", "SOL", "XRP")
    assert "chosen: BTC ETH XRP SOL DOGE NEWC\n" in out
    assert "excluded: 5\n  LEO not_tradeable_on_kraken_spot_usd\n  STBL closes_within_2pct_of_1_usd\n" in out
    assert "  USDT pegged_value,not_tradeable_on_kraken_spot_usd\n  WBTC derivative_of_another_asset\n  XMR jurisdiction_restricted\n" in out
    assert f"written {target}\n" in out and "published" not in out
    raw = RawStore(acts_home / "raw")
    endpoints = [r.endpoint for r in raw.records()]
    raw.close()
    assert endpoints[0] == "/0/public/AssetPairs" and endpoints.count("/0/public/OHLC") == 7


def test_the_command_is_deterministic_and_publishes_into_the_registry(kraken, tmp_path: Path) -> None:
    snapshot = str(snapshot_file(tmp_path))
    registry = tmp_path / "registry"
    outputs = [tmp_path / "a" / "v2.yaml", tmp_path / "b" / "v2.yaml"]

    for target in outputs:
        code, out, err = run_cli("data", "universe-new", "--snapshot", snapshot, "--version", "v2", "--out", str(target),
                                 "--publish", "--registry", str(registry), "--rate", "50")  # fmt: skip
        assert code == 0, out + err
        assert f"published {registry / 'v2.yaml'}\n" in out

    assert outputs[0].read_bytes() == outputs[1].read_bytes() == (registry / "v2.yaml").read_bytes()


def test_the_command_never_rewrites_an_existing_version_file(kraken, tmp_path: Path) -> None:
    target = tmp_path / "v2.yaml"
    target.write_text("version: v2\n")

    code, _, err = run_cli("data", "universe-new", "--snapshot", str(snapshot_file(tmp_path)), "--version", "v2",
                           "--out", str(target))  # fmt: skip

    assert code == 2
    assert f"{target} already exists: a universe version is never rewritten" in err
    assert target.read_text() == "version: v2\n"
    assert kraken.request_log == []  # refused before asking Kraken anything


def test_publishing_a_different_version_under_a_published_name_is_refused(kraken, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "v2.yaml").write_bytes((REPO / "conf" / "universe" / "v1.yaml").read_bytes().replace(b"version: v1", b"version: v2"))

    code, out, err = run_cli("data", "universe-new", "--snapshot", str(snapshot_file(tmp_path)), "--version", "v2",
                             "--out", str(tmp_path / "v2.yaml"), "--publish", "--registry", str(registry))  # fmt: skip

    assert code == 2 and "versions are immutable" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "0"], "--rate must be > 0, was 0.0"),
        (["--size", "0"], "universe size must be in 1..100, was 0"),
        (["--snapshot", "missing.json"], "cannot read market-cap snapshot missing.json"),
    ],
)
def test_the_command_refuses_bad_arguments(kraken, tmp_path: Path, extra: list[str], message: str) -> None:
    code, _, err = run_cli("data", "universe-new", "--snapshot", str(snapshot_file(tmp_path)), "--version", "v2",
                           "--out", str(tmp_path / "v2.yaml"), *extra)  # fmt: skip

    assert code == 2 and message in err
    assert not (tmp_path / "v2.yaml").exists()


def test_the_ranking_source_setting_chooses_the_ranking(kraken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIVERSE_RANKING_SOURCE", "KRAKEN_USD_VOLUME")

    code, out, err = run_cli("data", "universe-new", "--snapshot", str(snapshot_file(tmp_path)), "--version", "v2",
                             "--out", str(tmp_path / "v2.yaml"))  # fmt: skip

    assert code == 0, out + err
    assert "ranking_source: KRAKEN_USD_VOLUME: Kraken Ticker 24h USD volume of" in out
    assert any(target.startswith("/0/public/Ticker") for _, target, _ in kraken.request_log)
