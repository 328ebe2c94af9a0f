"""Universe versions: the exclusion rule, the near-dollar guard, ranking and immutable publishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config.compose import compose_spec
from backend.data.settings import RankingSource
from backend.data.universe import Candidate, Exclusion, exclusion_reasons, is_near_dollar, load_universe, publish_version, rank_candidates
from backend.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def coin(symbol: str, cap: float = 1e9, volume: float = 1e6, status: str | None = "online", **kw) -> Candidate:
    return Candidate(symbol, cap, volume, status, **kw)


@pytest.mark.parametrize(
    ("candidate", "reasons"),
    [
        (coin("BTC"), []),
        (coin("USDT"), [Exclusion.PEGGED]),
        (coin("PAXG"), [Exclusion.PEGGED]),
        (coin("WBTC"), [Exclusion.DERIVATIVE]),
        (coin("ETH2.S"), [Exclusion.DERIVATIVE]),
        (coin("SOL.S"), [Exclusion.DERIVATIVE]),
        (coin("KFEE"), [Exclusion.NOT_CRYPTO]),
        (coin("AAPLX", aclass_base="tokenized_asset"), [Exclusion.NOT_CRYPTO]),
        (coin("LEO", status=None), [Exclusion.NOT_ON_KRAKEN_USD]),
        (coin("ABC", status="cancel_only"), [Exclusion.NOT_ON_KRAKEN_USD]),
        (coin("XMR"), [Exclusion.RESTRICTED]),
        (coin("NEWUSD", recent_closes_usd=(0.99, 1.0, 1.015)), [Exclusion.NEAR_DOLLAR]),
        (coin("usdc", status=None), [Exclusion.PEGGED, Exclusion.NOT_ON_KRAKEN_USD]),
    ],
)
def test_the_exclusion_rule_names_every_reason(candidate: Candidate, reasons: list[Exclusion]) -> None:
    assert exclusion_reasons(candidate) == reasons


@pytest.mark.parametrize(
    ("closes", "flagged"),
    [((1.0,) * 90, True), ((0.98, 1.02), True), ((0.97, 1.0), False), ((1.0, 1.021), False), ((), False), ((60000.0,), False)],
)
def test_the_guard_flags_closes_that_all_stay_within_2_percent_of_one_dollar(closes: tuple, flagged: bool) -> None:
    assert is_near_dollar(closes) is flagged


def test_ranking_by_market_cap_or_kraken_volume_keeps_the_first_n_eligible() -> None:
    candidates = [coin("BTC", 100, 5), coin("USDT", 90, 9), coin("ETH", 50, 7), coin("SOL", 50, 1), coin("XRP", 10, 8)]

    by_cap, excluded = rank_candidates(candidates, RankingSource.MARKET_CAP_SNAPSHOT, size=3)
    by_volume, _ = rank_candidates(candidates, RankingSource.KRAKEN_USD_VOLUME, size=2)

    assert by_cap == ["BTC", "ETH", "SOL"]  # ETH and SOL tie on cap: by symbol
    assert by_volume == ["XRP", "ETH"]
    assert excluded == {"USDT": [Exclusion.PEGGED]}


def test_universe_v1_passes_the_rule_and_its_registry_copy_is_byte_identical() -> None:
    conf = REPO / "conf" / "universe" / "v1.yaml"
    spec = load_universe(conf)

    assert spec == compose_spec([]).universe
    assert len(spec.assets) == 30
    for asset in spec.assets:
        assert exclusion_reasons(coin(asset.symbol)) == [], asset.symbol
    assert (REPO / "registry" / "universe" / "v1.yaml").read_bytes() == conf.read_bytes()


def test_publishing_is_idempotent_and_a_changed_version_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "v1.yaml"
    source.write_bytes((REPO / "conf" / "universe" / "v1.yaml").read_bytes())
    registry = tmp_path / "registry" / "universe"

    target = publish_version(source, registry)
    assert publish_version(source, registry) == target
    source.write_text(source.read_text().replace("ordermin: 0.00005", "ordermin: 0.0001"))

    with pytest.raises(ConfigError, match="'v1' is already published .* versions are immutable"):
        publish_version(source, registry)
    assert target.read_bytes() == (REPO / "conf" / "universe" / "v1.yaml").read_bytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "cannot read universe file"), ("a: [", "cannot read universe file"),
     ("version: v9\nquote: EUR\n", "invalid universe file")],
)  # fmt: skip
def test_a_bad_universe_file_is_refused(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "u.yaml"
    if text is not None:
        path.write_text(text)

    with pytest.raises(ConfigError, match=message):
        load_universe(path)
