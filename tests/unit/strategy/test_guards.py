"""Guard expressions: a small vectorised language over named values, with numbers refused."""

from __future__ import annotations

import numpy as np
import pytest

from backend.strategy.guards import NAMESPACES, CompiledGuard, GuardSyntaxError, compile_guard, env_key

NAN = float("nan")
KNOWN = frozenset(
    {
        "pred.p_up", "pred.expected_return", "feat.ret_1", "feat.vol_48", "pos.unrealized_return",
        "portfolio.drawdown", "profile.entry_min_p_up", "profile.exit_max_p_up", "profile.max_drawdown_pct",
    }
)  # fmt: skip
P_UP = np.array([0.40, 0.50, 0.60, 0.70, NAN])
RET = np.array([0.01, -0.01, 0.02, -0.02, 0.03])
VOL = np.array([0.01, 0.02, 0.01, 0.04, 0.01])


def env(**values: object) -> dict[str, object]:
    base = {
        "pred.p_up": P_UP,
        "pred.expected_return": RET,
        "feat.vol_48": VOL,
        "feat.ret_1": np.array([0.001, 0.002, -0.001, 0.0, NAN]),
        "pos.unrealized_return": np.array([0.0, 0.05, -0.05, 0.1, 0.0]),
        "portfolio.drawdown": 0.1,
        "profile.entry_min_p_up": 0.55,
        "profile.exit_max_p_up": 0.45,
        "profile.max_drawdown_pct": 0.2,
    }
    base.update({k.replace("__", "."): v for k, v in values.items()})
    return {env_key(k): v for k, v in base.items()}


def evaluate(text: str, **values: object) -> list[bool]:
    return compile_guard(text, KNOWN).evaluate(env(**values)).tolist()


def test_env_key_turns_a_dotted_name_into_a_variable_name() -> None:
    assert env_key("pred.p_up") == "pred__p_up"
    assert NAMESPACES == ("pred", "feat", "pos", "portfolio", "profile")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pred.p_up >= profile.entry_min_p_up", [False, False, True, True, False]),
        ("pred.p_up < profile.entry_min_p_up", [True, True, False, False, False]),
        ("pred.p_up <= profile.exit_max_p_up", [True, False, False, False, False]),
        ("pred.p_up > profile.exit_max_p_up", [False, True, True, True, False]),
        # and / or / not, elementwise
        (
            "pred.p_up >= profile.entry_min_p_up and pred.expected_return > feat.vol_48",
            [False, False, True, False, False],
        ),
        (
            "pred.p_up <= profile.exit_max_p_up or pred.expected_return < pos.unrealized_return",
            [True, True, False, True, False],
        ),
        # not inverts the comparison, but a missing (NaN) input never passes a guard
        ("not pred.p_up >= profile.entry_min_p_up", [True, True, False, False, False]),
        (
            "pred.p_up >= profile.entry_min_p_up and pred.expected_return > feat.vol_48 or pred.p_up < profile.exit_max_p_up",
            [True, False, True, False, False],
        ),
        # chained comparisons are a conjunction of their links
        ("profile.exit_max_p_up < pred.p_up < profile.entry_min_p_up", [False, True, False, False, False]),
        ("profile.exit_max_p_up <= pred.p_up <= profile.entry_min_p_up >= profile.exit_max_p_up", [False, True, False, False, False]),
        # arithmetic, including unary minus
        ("pred.expected_return - feat.vol_48 > pos.unrealized_return", [False, False, True, False, True]),
        ("pred.expected_return + feat.vol_48 > profile.max_drawdown_pct * feat.vol_48", [True, True, True, True, True]),
        ("pred.expected_return / feat.vol_48 >= profile.exit_max_p_up", [True, False, True, False, True]),
        ("-pred.expected_return > feat.ret_1", [False, True, False, True, False]),
        # scalars broadcast against arrays
        ("portfolio.drawdown < profile.max_drawdown_pct", [True]),
    ],
)
def test_guard_evaluates_elementwise_over_arrays(text: str, expected: list[bool]) -> None:
    result = compile_guard(text, KNOWN).evaluate(env())
    assert result.dtype == np.bool_
    assert np.atleast_1d(result).tolist() == expected


def test_scalar_guard_gives_a_zero_dimension_bool_array() -> None:
    result = compile_guard("portfolio.drawdown >= profile.max_drawdown_pct", KNOWN).evaluate(env(portfolio__drawdown=0.3))
    assert result.shape == ()
    assert bool(result) is True


def test_nan_compares_false_in_every_direction() -> None:
    nan = np.array([NAN, NAN])
    for op in ("<", "<=", ">", ">="):
        assert evaluate(f"pred.p_up {op} profile.entry_min_p_up", pred__p_up=nan) == [False, False]


def test_a_missing_scalar_input_fails_the_guard_for_every_symbol() -> None:
    assert evaluate("not pred.p_up >= profile.entry_min_p_up", profile__entry_min_p_up=NAN) == [False] * 5


def test_division_by_zero_gives_inf_or_nan_without_warnings() -> None:
    zero = np.zeros(3)
    ret = np.array([0.01, -0.01, 0.0])
    with np.errstate(all="raise"):
        result = evaluate("pred.expected_return / feat.vol_48 > profile.entry_min_p_up", pred__expected_return=ret, feat__vol_48=zero)
    assert result == [True, False, False]


def test_guard_records_the_sorted_names_it_reads() -> None:
    guard = compile_guard("pred.p_up >= profile.entry_min_p_up and pred.p_up > feat.vol_48", KNOWN)
    assert isinstance(guard, CompiledGuard)
    assert guard.names == ("feat.vol_48", "pred.p_up", "profile.entry_min_p_up")
    assert guard.text == "pred.p_up >= profile.entry_min_p_up and pred.p_up > feat.vol_48"


@pytest.mark.parametrize(
    ("text", "dependent"),
    [
        ("pred.p_up >= profile.entry_min_p_up", False),
        ("feat.ret_1 > feat.vol_48", False),
        ("pos.unrealized_return < profile.exit_max_p_up", True),
        ("pred.p_up > profile.entry_min_p_up or portfolio.drawdown > profile.max_drawdown_pct", True),
    ],
)
def test_guard_reading_position_or_portfolio_is_state_dependent(text: str, dependent: bool) -> None:
    assert compile_guard(text, KNOWN).is_state_dependent is dependent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pred.p_up >= 0.55", "bare value 0.55 in a guard: thresholds must be profile parameters (profile.<name>)"),
        ("pred.p_up > -1", "bare value 1 in a guard: thresholds must be profile parameters (profile.<name>)"),
        ("True", "bare value True in a guard: thresholds must be profile parameters (profile.<name>)"),
        ("pred.p_up > 'x'", "bare value 'x' in a guard: thresholds must be profile parameters (profile.<name>)"),
        ("p_up > profile.entry_min_p_up", "bare name 'p_up': use <namespace>.<name>"),
        ("model.p_up > profile.entry_min_p_up", "names must be <namespace>.<name> with namespace one of pred, feat, pos, portfolio, profile"),
        ("pred.p_up.real > profile.entry_min_p_up", "names must be <namespace>.<name> with namespace one of pred, feat, pos, portfolio, profile"),
        ("pred.confidence > profile.entry_min_p_up", "unknown name 'pred.confidence'"),
        ("profile.leverage > pred.p_up", "unknown name 'profile.leverage'"),
        ("abs(pred.expected_return) > feat.vol_48", "Call is not allowed in a guard"),
        ("pred.p_up == profile.entry_min_p_up", "comparison Eq is not allowed in a guard (use <, <=, >, >=)"),
        ("pred.p_up != profile.entry_min_p_up", "comparison NotEq is not allowed in a guard (use <, <=, >, >=)"),
        ("pred.p_up < feat.vol_48 is pos.unrealized_return", "comparison Is is not allowed in a guard (use <, <=, >, >=)"),
        ("pred.p_up ** feat.vol_48 > profile.entry_min_p_up", "operator Pow is not allowed in a guard"),
        ("pred.p_up % feat.vol_48 > profile.entry_min_p_up", "operator Mod is not allowed in a guard"),
        ("pred.p_up // feat.vol_48 > profile.entry_min_p_up", "operator FloorDiv is not allowed in a guard"),
        ("pred.p_up & feat.vol_48", "operator BitAnd is not allowed in a guard"),
        ("~pred.p_up", "operator Invert is not allowed in a guard"),
        ("+pred.p_up > feat.vol_48", "operator UAdd is not allowed in a guard"),
        ("pred.p_up if feat.vol_48 else pos.unrealized_return", "IfExp is not allowed in a guard"),
        ("pred['p_up'] > feat.vol_48", "Subscript is not allowed in a guard"),
        ("lambda: pred.p_up", "Lambda is not allowed in a guard"),
        ("pred.p_up >=", "not a valid expression: invalid syntax"),
        ("pred.p_up > profile.entry_min_p_up; pred.p_up", "not a valid expression: invalid syntax"),
        ("", "not a valid expression: invalid syntax"),
    ],
)
def test_guard_outside_the_language_is_refused_saying_what_was_found(text: str, message: str) -> None:
    with pytest.raises(GuardSyntaxError) as caught:
        compile_guard(text, KNOWN)
    assert str(caught.value) == message


def test_refusal_is_a_value_error() -> None:
    assert issubclass(GuardSyntaxError, ValueError)


def test_evaluating_without_every_name_bound_raises_name_error() -> None:
    guard = compile_guard("pred.p_up > profile.entry_min_p_up", KNOWN)
    with pytest.raises(NameError, match="profile__entry_min_p_up"):
        guard.evaluate({"pred__p_up": np.array([0.6])})
