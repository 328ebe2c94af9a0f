"""Universe versions: the exclusion rule as code, ranking, and immutable published versions.

The rule (``EXCHANGE_API_FACTS.md`` section 11.1, written down in the historical data spec): a coin
is excluded when its value is pegged, when it is a derivative of another asset (wrapped, bridged,
staked, Kraken balance variants), when it is not a crypto asset, when it is not tradeable on Kraken
spot against USD with status ``online``, or when Kraken restricts it by jurisdiction (reserve list).
A mechanical guard also excludes any candidate whose recent closes all stay within 2 % of 1.00 USD.
The remainder is ranked by ``UNIVERSE_RANKING_SOURCE`` and the first ``size`` are taken.

A new version is built by :func:`build_version` from a dated market-cap snapshot (:func:`load_snapshot`,
a JSON file) and Kraken's public AssetPairs, OHLC (daily closes for the guard) and, when ranking by
volume, Ticker; it returns the YAML text of the version and the excluded coins with their reasons.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Protocol

import yaml
from pydantic import Field, ValidationError, model_validator

from backend.config.errors_format import format_validation_error
from backend.config.schema import Name, Spec, UniverseSpec
from backend.data.normalize import BadPayload, PayloadProblem, parse_kraken_ohlc
from backend.data.providers.kraken_public import KrakenPublic
from backend.data.settings import RankingSource
from backend.errors import ConfigError

PEGGED = frozenset(
    "USDT USDC USDE DAI USDS FDUSD TUSD PYUSD USDD USD1 RLUSD USDG USDP GUSD FRAX FRXUSD LUSD BOLD CRVUSD GHO "
    "USDF USDTB AUSD USD0 USDQ USDT0 USDC.E BSC-USD SUSDE SUSDS SDAI USDY BUIDL OUSG EURC EURT EURE TGBP PAXG "
    "XAUT ZUSD ZEUR ZGBP".split()
)
DERIVATIVES = frozenset(
    "WBTC CBBTC TBTC BTCB LBTC SOLVBTC WETH STETH WSTETH RETH CBETH WBETH WEETH EETH RSETH EZETH METH LSETH "
    "JITOSOL MSOL BSOL JUPSOL BNSOL KHYPE STHYPE WBNB WTRX ETH2 ETH2.S".split()
)
NOT_CRYPTO = frozenset({"KFEE"})
RESTRICTED = frozenset({"XMR"})
_BALANCE_SUFFIXES = (".S", ".M", ".B", ".F", ".T")
PEG_TOLERANCE = 0.02


class Exclusion(str, enum.Enum):
    """Why a candidate is not in the universe."""

    PEGGED = "pegged_value"
    DERIVATIVE = "derivative_of_another_asset"
    NOT_CRYPTO = "not_a_crypto_asset"
    NOT_ON_KRAKEN_USD = "not_tradeable_on_kraken_spot_usd"
    RESTRICTED = "jurisdiction_restricted"
    NEAR_DOLLAR = "closes_within_2pct_of_1_usd"


@dataclass(frozen=True)
class Candidate:
    """A coin considered for a universe version, with what the rule and the ranking need."""

    symbol: str
    market_cap_usd: float
    kraken_usd_volume_24h: float
    kraken_usd_status: str | None  # AssetPairs status of its USD pair; None when Kraken lists none
    aclass_base: str = "currency"
    recent_closes_usd: tuple[float, ...] = ()


def is_near_dollar(closes: Sequence[float], tolerance: float = PEG_TOLERANCE) -> bool:
    """Return True when every close lies within ``tolerance`` of 1.00 USD (an unlabelled stablecoin)."""
    # The epsilon keeps the bound inclusive despite binary rounding (1.02 - 1.0 > 0.02 in floats).
    return bool(closes) and all(abs(close - 1.0) <= tolerance + 1e-12 for close in closes)


def exclusion_reasons(candidate: Candidate) -> list[Exclusion]:
    """Return every reason the rule excludes ``candidate`` (empty: eligible)."""
    symbol = candidate.symbol.upper()
    reasons = []
    if symbol in PEGGED:
        reasons.append(Exclusion.PEGGED)
    if symbol in DERIVATIVES or symbol.endswith(_BALANCE_SUFFIXES):
        reasons.append(Exclusion.DERIVATIVE)
    if symbol in NOT_CRYPTO or candidate.aclass_base != "currency":
        reasons.append(Exclusion.NOT_CRYPTO)
    if candidate.kraken_usd_status != "online":
        reasons.append(Exclusion.NOT_ON_KRAKEN_USD)
    if symbol in RESTRICTED:
        reasons.append(Exclusion.RESTRICTED)
    if is_near_dollar(candidate.recent_closes_usd):
        reasons.append(Exclusion.NEAR_DOLLAR)
    return reasons


def rank_candidates(
    candidates: Sequence[Candidate], ranking: RankingSource, size: int = 30
) -> tuple[list[str], dict[str, list[Exclusion]]]:
    """Apply the rule, rank the rest and keep the first ``size``.

    Returns
    -------
    tuple
        The chosen symbols in rank order (ties broken by symbol), and the excluded ones with reasons.
    """
    excluded = {c.symbol: reasons for c in candidates if (reasons := exclusion_reasons(c))}
    eligible = [c for c in candidates if c.symbol not in excluded]
    key = {
        RankingSource.MARKET_CAP_SNAPSHOT: lambda c: (-c.market_cap_usd, c.symbol),
        RankingSource.KRAKEN_USD_VOLUME: lambda c: (-c.kraken_usd_volume_24h, c.symbol),
    }[ranking]
    return [c.symbol for c in sorted(eligible, key=key)[:size]], dict(sorted(excluded.items()))


def load_universe(path: Path) -> UniverseSpec:
    """Read and validate a universe version file.

    Raises
    ------
    ConfigError
        When the file is missing, not YAML, or breaks the schema (naming the key).
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read universe file {path}: {error}") from None
    try:
        return UniverseSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid universe file {path}:\n{format_validation_error(error)}") from None


def publish_version(path: Path, registry_dir: Path) -> Path:
    """Copy a universe version into ``registry_dir/<version>.yaml``, byte for byte, once.

    Publishing the same bytes again changes nothing; different bytes under a published version are
    refused, because a version is never rewritten (a new ranking is a new version).

    Raises
    ------
    ConfigError
        When the file is invalid, or its version is already published with other content.
    """
    spec = load_universe(path)
    target = registry_dir / f"{spec.version}.yaml"
    content = path.read_bytes()
    if target.exists():
        if target.read_bytes() != content:
            raise ConfigError(
                f"universe version {spec.version!r} is already published at {target} with other content; "
                "versions are immutable: publish the change as a new version"
            )
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


# ---------------------------------------------------------------- building a new version
GUARD_CLOSES = 30  # daily closes read per candidate for the near-dollar guard
MAX_MARKET_CAP_USD = 1e15
# Kraken names two bases differently from the market: its USD pair of BTC is XBT/USD, of DOGE XDG/USD.
KRAKEN_BASE_NAMES = {"BTC": "XBT", "DOGE": "XDG"}


class _SnapshotCoin(Spec):
    symbol: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")]
    market_cap_usd: Annotated[float, Field(ge=0.0, le=MAX_MARKET_CAP_USD, allow_inf_nan=False)]
    cluster: Name | None = None


class _SnapshotFile(Spec):
    as_of: date
    source: Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[^\r\n]*$")] | None = None
    coins: Annotated[list[_SnapshotCoin], Field(min_length=1, max_length=10_000)]

    @model_validator(mode="after")
    def _unique_symbols(self) -> _SnapshotFile:
        first: dict[str, int] = {}
        for index, coin in enumerate(self.coins):
            symbol = coin.symbol.upper()
            if symbol in first:
                raise ValueError(f"coins.{index}.symbol {coin.symbol!r} duplicates coins.{first[symbol]}.symbol")
            first[symbol] = index
        return self


@dataclass(frozen=True)
class SnapshotCoin:
    """One coin of a market-cap snapshot (symbol upper-cased; cluster None when the file gives none)."""

    symbol: str
    market_cap_usd: float
    cluster: str | None


@dataclass(frozen=True)
class MarketCapSnapshot:
    """A dated market-cap ranking file, identified by the sha256 of its bytes."""

    as_of: date
    sha256: str
    source: str | None
    coins: tuple[SnapshotCoin, ...]


def load_snapshot(path: Path) -> MarketCapSnapshot:
    """Read and validate a market-cap snapshot file (JSON).

    The file is ``{"as_of": "YYYY-MM-DD", "source": "optional text", "coins": [{"symbol": "BTC",
    "market_cap_usd": 1.9e12, "cluster": "store_of_value"}, ...]}``; ``cluster`` is optional, symbols
    are compared upper-cased, unknown keys are refused.

    Raises
    ------
    ConfigError
        When the file is missing or not JSON, or breaks a rule: naming the row and field (for example
        ``coins.3.market_cap_usd must be >= 0``, a duplicate symbol, a missing ``as_of``).
    """
    try:
        body = path.read_bytes()
        raw = json.loads(body)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read market-cap snapshot {path}: {error}") from None
    try:
        spec = _SnapshotFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid market-cap snapshot {path}:\n{format_validation_error(error)}") from None
    coins = tuple(SnapshotCoin(c.symbol.upper(), c.market_cap_usd, c.cluster) for c in spec.coins)
    return MarketCapSnapshot(spec.as_of, hashlib.sha256(body).hexdigest(), spec.source, coins)


@dataclass(frozen=True)
class KrakenUsdPair:
    """A Kraken spot pair quoted in USD, as AssetPairs describes it."""

    pair_key: str
    altname: str
    wsname: str
    status: str
    aclass_base: str
    ordermin: Decimal


def usd_pairs(asset_pairs: dict) -> dict[str, KrakenUsdPair]:
    """Return the USD pairs of an AssetPairs result keyed by Kraken base name (``XBT``, ``ETH``).

    Pairs are recognised by ``wsname`` ``<BASE>/USD``; entries without a wsname (dark pools) are skipped.

    Raises
    ------
    BadPayload
        SCHEMA, naming the pair key and field, when a USD pair lacks a field or has a bad ``ordermin``.
    """
    found: dict[str, KrakenUsdPair] = {}
    for key in sorted(asset_pairs):
        info = asset_pairs[key]
        wsname = info.get("wsname") if isinstance(info, dict) else None
        if not (isinstance(wsname, str) and wsname.endswith("/USD")):
            continue
        try:
            ordermin = Decimal(str(info["ordermin"]))
            pair = KrakenUsdPair(key, str(info["altname"]), wsname, str(info["status"]), str(info["aclass_base"]), ordermin)
        except KeyError as error:
            raise BadPayload(PayloadProblem.SCHEMA, f"AssetPairs {key}: field {error.args[0]!r} is missing") from None
        except InvalidOperation:
            raise BadPayload(PayloadProblem.SCHEMA, f"AssetPairs {key}: ordermin {info['ordermin']!r} is not a number") from None
        found.setdefault(wsname.removesuffix("/USD"), pair)
    return found


def ticker_usd_volume(entry: object) -> float:
    """Return the last-24 h USD volume of a Ticker entry: ``v[1]`` (base units) times ``p[1]`` (VWAP).

    Raises
    ------
    BadPayload
        SCHEMA when the entry lacks ``v`` or ``p`` or they are not decimal numbers.
    """
    try:
        return float(entry["v"][1]) * float(entry["p"][1])  # type: ignore[index]
    except (KeyError, IndexError, TypeError, ValueError):
        raise BadPayload(PayloadProblem.SCHEMA, f"Ticker entry needs decimal v[1] and p[1], was {entry!r}") from None


class KrakenView(Protocol):
    """The Kraken public data a universe build reads."""

    def usd_pairs(self) -> dict[str, KrakenUsdPair]:
        """Return the USD pairs keyed by Kraken base name."""
        ...

    def usd_volumes(self, pairs: Sequence[KrakenUsdPair]) -> dict[str, float]:
        """Return the last-24 h USD volume by pair key."""
        ...

    def daily_closes(self, pair: KrakenUsdPair, symbol: str) -> tuple[float, ...]:
        """Return the most recent committed daily closes, oldest first."""
        ...


class KrakenUniverseData(KrakenPublic):
    """Kraken AssetPairs, Ticker and daily OHLC for a universe build; every body kept raw by the fetcher."""

    def usd_pairs(self) -> dict[str, KrakenUsdPair]:
        """Return every USD pair Kraken lists (``/0/public/AssetPairs`` without a pair filter)."""
        return usd_pairs(self._result("/0/public/AssetPairs", {}))

    def usd_volumes(self, pairs: Sequence[KrakenUsdPair]) -> dict[str, float]:
        """Return the last-24 h USD volume of ``pairs`` from one ``/0/public/Ticker`` request (0 when unlisted)."""
        result = self._result("/0/public/Ticker", {"pair": ",".join(p.altname for p in pairs)})
        return {p.pair_key: ticker_usd_volume(result[p.pair_key]) for p in pairs if p.pair_key in result}

    def daily_closes(self, pair: KrakenUsdPair, symbol: str) -> tuple[float, ...]:
        """Return the last :data:`GUARD_CLOSES` committed daily closes (``/0/public/OHLC``, interval 1440)."""
        fetched = self.fetcher.get("/0/public/OHLC", {"pair": pair.altname, "interval": 1440})
        page = parse_kraken_ohlc(fetched.body, pair.pair_key, symbol, "1d", "kraken", "universe")
        return tuple(page.bars["close"].tail(GUARD_CLOSES).to_list())


@dataclass(frozen=True)
class UniverseBuild:
    """A new version's YAML text, its assets in rank order, and the excluded coins with reasons."""

    version: str
    text: str
    chosen: tuple[str, ...]
    excluded: dict[str, list[Exclusion]]
    ranking_source: str


def _ranking_text(snapshot: MarketCapSnapshot, ranking: RankingSource, ranking_date: date) -> str:
    cap = f"market-cap snapshot as_of {snapshot.as_of.isoformat()} sha256 {snapshot.sha256}"
    if ranking is RankingSource.KRAKEN_USD_VOLUME:
        return f"KRAKEN_USD_VOLUME: Kraken Ticker 24h USD volume of {ranking_date.isoformat()}; candidates from {cap}"
    return f"MARKET_CAP_SNAPSHOT: {cap}; Kraken USD pairs from AssetPairs"


def _rank_with_guard(
    candidates: dict[str, Candidate], pairs: dict[str, KrakenUsdPair], kraken: KrakenView, ranking: RankingSource,
    size: int,
) -> tuple[list[str], dict[str, list[Exclusion]]]:  # fmt: skip
    """Rank, reading daily closes for the near-dollar guard down the ranking until ``size`` coins pass it."""
    checked: set[str] = set()
    while True:
        chosen, excluded = rank_candidates(list(candidates.values()), ranking, size)
        unchecked = [s for s in chosen if s not in checked]
        if not unchecked:
            return chosen, excluded
        for symbol in unchecked:
            closes = kraken.daily_closes(pairs[symbol], symbol)
            candidates[symbol] = replace(candidates[symbol], recent_closes_usd=closes)
            checked.add(symbol)


def _asset_line(symbol: str, cluster: str, pair: KrakenUsdPair) -> str:
    q = json.dumps
    kraken = f"{{pair_key: {q(pair.pair_key)}, altname: {q(pair.altname)}, wsname: {q(pair.wsname)}}}"
    ordermin = format(pair.ordermin.normalize(), "f")
    ordermin = ordermin if "." in ordermin else f"{ordermin}.0"
    return (f"  - {{symbol: {q(symbol)}, cluster: {q(cluster)}, kraken: {kraken}, "
            f"coinapi_symbol_id: {q(f'KRAKEN_SPOT_{symbol}_USD')}, ordermin: {ordermin}}}")  # fmt: skip


def build_version(
    snapshot: MarketCapSnapshot,
    kraken: KrakenView,
    version: str,
    ranking: RankingSource,
    previous: UniverseSpec | None = None,
    size: int = 30,
    fetched_on: date | None = None,
) -> UniverseBuild:
    """Build universe ``version`` from a market-cap snapshot and Kraken's public data.

    Every snapshot coin becomes a :class:`Candidate` (its Kraken USD pair's status and asset class,
    24 h USD volume when ranking by volume, daily closes for the near-dollar guard, read down the
    ranking until ``size`` coins pass); :func:`rank_candidates` keeps the first ``size``. A chosen
    coin's cluster comes from the snapshot, else from ``previous``. The text is deterministic: the
    same snapshot and Kraken answers give the same bytes.

    Parameters
    ----------
    snapshot : MarketCapSnapshot
        Candidates and market caps (see :func:`load_snapshot`).
    kraken : KrakenView
        Kraken's USD pairs, volumes and daily closes.
    version : str
        Name of the new version; must differ from ``previous.version``.
    ranking : RankingSource
        ``UNIVERSE_RANKING_SOURCE``.
    previous : UniverseSpec or None
        The version this one follows (clusters carried over).
    size : int
        How many coins to keep (1..100).
    fetched_on : date or None
        Day of the Kraken data: the ranking date when ranking by volume (default: the snapshot's as_of).

    Raises
    ------
    ConfigError
        On a bad size, a reused version name, no eligible coin, a chosen coin without a cluster (named),
        or a result that breaks ``UniverseSpec`` (naming the key).
    BadPayload
        When a Kraken answer cannot be read.
    """
    if not 1 <= size <= 100:
        raise ConfigError(f"universe size must be in 1..100, was {size}")
    if previous is not None and version == previous.version:
        raise ConfigError(f"version {version!r} is the previous version's name; a new ranking is a new version")
    on_kraken = kraken.usd_pairs()
    pairs = {c.symbol: p for c in snapshot.coins if (p := on_kraken.get(KRAKEN_BASE_NAMES.get(c.symbol, c.symbol)))}
    volumes: dict[str, float] = {}
    if ranking is RankingSource.KRAKEN_USD_VOLUME and pairs:
        volumes = kraken.usd_volumes(sorted(pairs.values(), key=lambda p: p.pair_key))
    candidates = {}
    for coin in snapshot.coins:
        pair = pairs.get(coin.symbol)
        status, aclass, volume = (pair.status, pair.aclass_base, volumes.get(pair.pair_key, 0.0)) if pair else (None, "currency", 0.0)
        candidates[coin.symbol] = Candidate(coin.symbol, coin.market_cap_usd, volume, status, aclass)
    chosen, excluded = _rank_with_guard(candidates, pairs, kraken, ranking, size)
    if not chosen:
        raise ConfigError(f"no coin of the snapshot (as_of {snapshot.as_of}) is eligible; excluded: {_reasons(excluded)}")
    clusters = {a.symbol: a.cluster for a in previous.assets} if previous is not None else {}
    clusters.update({c.symbol: c.cluster for c in snapshot.coins if c.cluster is not None})
    missing = [s for s in chosen if s not in clusters]
    if missing:
        raise ConfigError(f"chosen coin(s) {missing} have no cluster: give one in the snapshot or the previous version")
    ranking_date = snapshot.as_of if ranking is RankingSource.MARKET_CAP_SNAPSHOT else (fetched_on or snapshot.as_of)
    source_text = _ranking_text(snapshot, ranking, ranking_date)
    lines = [
        f"# Universe {version}: top {size} by {ranking.value} of the coins passing the exclusion rule",
        "# (docs/specs/HISTORICAL_DATA_PROVIDER_AND_CONTINUOUS_TRAINING_SPEC.md), built by `acts data universe-new`.",
        f"# Snapshot source: {snapshot.source or 'not stated'}. Versions are immutable: a new ranking is a new file.",
        *(f"# excluded {symbol}: {', '.join(r.value for r in reasons)}" for symbol, reasons in excluded.items()),
        f"version: {json.dumps(version)}",
        "quote: USD",
        f"ranking_source: {json.dumps(source_text)}",
        f"ranking_date: {ranking_date.isoformat()}",
        "assets:",
        *(_asset_line(s, clusters[s], pairs[s]) for s in chosen),
    ]
    text = "\n".join(lines) + "\n"
    try:
        UniverseSpec.model_validate(yaml.safe_load(text))
    except ValidationError as error:
        raise ConfigError(f"universe {version} would be invalid:\n{format_validation_error(error)}") from None
    return UniverseBuild(version, text, tuple(chosen), excluded, source_text)


def _reasons(excluded: dict[str, list[Exclusion]]) -> str:
    return "; ".join(f"{s} ({', '.join(r.value for r in reasons)})" for s, reasons in excluded.items())
