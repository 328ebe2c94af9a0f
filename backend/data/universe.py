"""Universe versions: the exclusion rule as code, ranking, and immutable published versions.

The rule (``EXCHANGE_API_FACTS.md`` section 11.1, written down in the historical data spec): a coin
is excluded when its value is pegged, when it is a derivative of another asset (wrapped, bridged,
staked, Kraken balance variants), when it is not a crypto asset, when it is not tradeable on Kraken
spot against USD with status ``online``, or when Kraken restricts it by jurisdiction (reserve list).
A mechanical guard also excludes any candidate whose recent closes all stay within 2 % of 1.00 USD.
The remainder is ranked by ``UNIVERSE_RANKING_SOURCE`` and the first ``size`` are taken.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from backend.config.errors_format import format_validation_error
from backend.config.schema import UniverseSpec
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
