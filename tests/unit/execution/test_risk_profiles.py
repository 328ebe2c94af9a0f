"""The shipped risk profiles and the profile rules issue 5 added: every field set, coherent bars, refusals by name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from backend.config.compose import compose_spec
from backend.config.schema import RiskProfileSpec

FIELDS = {
    "name", "kill_switch", "max_concurrent_positions", "max_total_exposure", "max_cluster_exposure", "position_size_pct",
    "min_order_usd", "max_drawdown_pct", "drawdown_resume_pct", "drawdown_reanchor_hours", "max_total_drawdown_pct", "entry_min_p_up",
    "entry_min_expected_return", "exit_max_p_up", "exit_max_expected_return", "scale_out_max_p_up", "scale_out_fraction",
    "take_profit_pct", "reentry_min_p_up", "reentry_min_expected_return", "severe_loss_pct", "recovery_exit_max_p",
    "recovery_reduce_max_p", "entry_edge_margin", "exit_edge_margin",
}  # fmt: skip


@pytest.fixture(scope="module")
def profiles() -> dict[str, RiskProfileSpec]:
    return {name: compose_spec([f"risk={name}"]).risk for name in ("conservative", "balanced", "aggressive")}


def test_each_shipped_profile_sets_every_field_in_pct_of_pv_mode(profiles: dict[str, RiskProfileSpec]) -> None:
    for name, profile in profiles.items():
        assert set(profile.model_dump()) == FIELDS and profile.name == name
        assert not profile.kill_switch
        assert profile.max_total_exposure.mode == profile.max_cluster_exposure.mode == "pct_of_pv"


@pytest.mark.parametrize(
    "key",
    ["max_concurrent_positions", "position_size_pct", "max_drawdown_pct", "severe_loss_pct", "take_profit_pct"],
)
def test_profiles_order_from_cautious_to_bold(key: str, profiles: dict[str, RiskProfileSpec]) -> None:
    values = [getattr(profiles[n], key) for n in ("conservative", "balanced", "aggressive")]
    assert values == sorted(values) and len(set(values)) == 3


def test_profiles_order_bars_from_demanding_to_lenient(profiles: dict[str, RiskProfileSpec]) -> None:
    for key in ("entry_min_p_up", "reentry_min_p_up", "min_order_usd", "drawdown_reanchor_hours"):
        values = [getattr(profiles[n], key) for n in ("conservative", "balanced", "aggressive")]
        assert values == sorted(values, reverse=True), key


def _refusal(base: RiskProfileSpec, **changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        RiskProfileSpec.model_validate({**base.model_dump(), **changes})
    return str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale_out_max_p_up": 0.44}, "'scale_out_max_p_up' must be >= exit_max_p_up (0.45) and < reentry_min_p_up (0.57), was 0.44"),
        ({"scale_out_max_p_up": 0.57}, "'scale_out_max_p_up' must be >= exit_max_p_up (0.45) and < reentry_min_p_up (0.57), was 0.57"),
        ({"recovery_exit_max_p": 0.6}, "'recovery_exit_max_p' must be <= recovery_reduce_max_p (0.5), was 0.6"),
        ({"scale_out_fraction": 1.0}, "scale_out_fraction"),
        ({"severe_loss_pct": 0.0}, "severe_loss_pct"),
        ({"drawdown_reanchor_hours": -1.0}, "drawdown_reanchor_hours"),
        ({"min_order_usd": 2e6}, "min_order_usd"),
    ],
    ids=["scale-out-below-exit", "scale-out-at-reentry", "recovery-exit-above-reduce", "fraction-whole", "no-severe-loss",
         "negative-wait", "order-floor-too-high"],
)
def test_an_incoherent_or_out_of_bound_profile_is_refused_naming_the_field(
    changes: dict[str, Any], message: str, profiles: dict[str, RiskProfileSpec]
) -> None:
    assert message in _refusal(profiles["balanced"], **changes)


def test_the_bars_may_touch_where_the_rules_allow(profiles: dict[str, RiskProfileSpec]) -> None:
    base = profiles["balanced"].model_dump()
    edge = RiskProfileSpec.model_validate({**base, "scale_out_max_p_up": 0.45, "recovery_exit_max_p": 0.5})
    assert (edge.scale_out_max_p_up, edge.recovery_exit_max_p) == (edge.exit_max_p_up, edge.recovery_reduce_max_p)
