"""Compile a declared strategy graph into tables the engine evaluates on every event."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from backend.config.schema import StrategySpec, TransitionSpec
from backend.errors import StrategyGraphError
from backend.strategy.guards import CompiledGuard, GuardSyntaxError, compile_guard
from backend.strategy.reasons import BUYS, SELLS, Action, SizingRule, StrategyReason

# Names that measure only loss or time in a position: a guard reading nothing else (besides
# profile values) may not lead to an exit (governance 5: no loss-only, no timer-only liquidation).
LOSS_OR_TIME_NAMES = frozenset({"pos.unrealized_return", "pos.bars_held"})


@dataclass(frozen=True)
class CompiledTransition:
    """A transition with its states as indices, its action and reason as enums, its guard compiled.

    ``parameter`` is the profile parameter an ``enter``/``reenter`` sizes from (with ``sizing``) or
    the fraction a ``scale_out`` sells; None for ``exit`` and ``none``.
    """

    name: str
    source: int
    target: int
    action: Action
    reason: StrategyReason
    priority: int
    guard: CompiledGuard
    sizing: SizingRule | None = None
    parameter: str | None = None


@dataclass(frozen=True)
class CompiledGraph:
    """A checked graph: states, their hold reasons, whether each is inside a campaign, transitions in priority order."""

    name: str
    states: tuple[str, ...]
    hold_reasons: tuple[StrategyReason, ...]
    initial: int
    outgoing: tuple[tuple[CompiledTransition, ...], ...]
    in_campaign: tuple[bool, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Return every dotted name any guard reads, sorted."""
        return tuple(sorted({n for group in self.outgoing for t in group for n in t.guard.names}))

    @property
    def transitions(self) -> tuple[CompiledTransition, ...]:
        """Return every transition, state by state, in priority order."""
        return tuple(t for group in self.outgoing for t in group)


def _reason(value: str, where: str) -> StrategyReason:
    try:
        return StrategyReason(value)
    except ValueError:
        known = ", ".join(r.value for r in StrategyReason)
        raise StrategyGraphError(f"{where}: unknown reason code {value!r} (known: {known})") from None


def _parameter(t: TransitionSpec, action: Action, known_names: frozenset[str], where: str) -> tuple[SizingRule | None, str | None]:
    """Check the sizing/fraction a transition's action needs, and nothing it does not."""
    wanted = "sizing" if action in BUYS else "fraction" if action is Action.SCALE_OUT else None
    for key in ("sizing", "fraction"):
        if key != wanted and getattr(t, key) is not None:
            raise StrategyGraphError(f"{where}: action {action.value} takes no {key!r}")
    if wanted is None:
        return None, None
    declared = getattr(t, wanted)
    if declared is None:
        example = "{rule: fraction_of_pv, parameter: position_size_pct}" if wanted == "sizing" else "{parameter: scale_out_fraction}"
        raise StrategyGraphError(f"{where}: action {action.value} needs {wanted!r}, e.g. {wanted}: {example}")
    if f"profile.{declared.parameter}" not in known_names:
        raise StrategyGraphError(f"{where}: {wanted} parameter {declared.parameter!r} is not a profile parameter")
    return (SizingRule(declared.rule) if wanted == "sizing" else None), declared.parameter


def _check_not_loss_or_time_only(guard: CompiledGuard, action: Action, where: str) -> None:
    if action is not Action.EXIT:
        return
    reads = [n for n in guard.names if not n.startswith("profile.")]
    if reads and set(reads) <= LOSS_OR_TIME_NAMES:
        raise StrategyGraphError(
            f"{where}: an exit on {', '.join(reads)} alone is a loss- or time-only liquidation (governance 5); "
            "let a prediction (pred.*) decide, e.g. through a severe-loss state and pred.p_recovery"
        )


def compile_graph(spec: StrategySpec, known_names: frozenset[str]) -> CompiledGraph:
    """Check ``spec`` and compile it.

    Refused, each with a message naming the state and transition: duplicate states, an unknown
    state or reason code, a guard outside the guard language (numbers included), an unreachable
    state, a state with no way out, two transitions from one state with the same priority, an
    action without the sizing or fraction it needs (or with one it does not take), an exit whose
    guard reads only loss or time, and an action that does not fit the campaign phase of its
    source state (enter only outside a campaign; scale_out, reenter and exit only inside one).
    """
    states = tuple(s.name for s in spec.states)
    if len(set(states)) != len(states):
        raise StrategyGraphError(f"graph {spec.name}: state names must be unique, got {list(states)}")
    index = {name: i for i, name in enumerate(states)}
    if spec.initial_state not in index:
        raise StrategyGraphError(f"graph {spec.name}: initial state {spec.initial_state!r} is not declared")
    hold_reasons = tuple(_reason(s.hold_reason, f"graph {spec.name}, state {s.name}") for s in spec.states)
    outgoing: list[list[CompiledTransition]] = [[] for _ in states]
    for t in spec.transitions:
        where = f"graph {spec.name}, transition {t.name!r} ({t.source} -> {t.target})"
        for end in (t.source, t.target):
            if end not in index:
                raise StrategyGraphError(f"{where}: unknown state {end!r}")
        try:
            guard = compile_guard(t.guard, known_names)
        except GuardSyntaxError as error:
            raise StrategyGraphError(f"{where}: guard {t.guard!r}: {error}") from error
        action = Action(t.action)
        sizing, parameter = _parameter(t, action, known_names, where)
        _check_not_loss_or_time_only(guard, action, where)
        compiled = CompiledTransition(
            t.name, index[t.source], index[t.target], action, _reason(t.reason, where), t.priority, guard, sizing, parameter
        )
        for other in outgoing[compiled.source]:
            if other.priority == compiled.priority:
                raise StrategyGraphError(
                    f"{where}: transitions {other.name!r} and {t.name!r} leave state {t.source} with the same "
                    f"priority {t.priority}; give each a distinct priority"
                )
        outgoing[compiled.source].append(compiled)
    _check_reachable(spec.name, states, index[spec.initial_state], outgoing)
    for i, name in enumerate(states):
        if not outgoing[i]:
            raise StrategyGraphError(f"graph {spec.name}, state {name}: no transition leaves it (a state with no way out)")
    phases = _campaign_phases(spec.name, states, index[spec.initial_state], outgoing)
    ordered = tuple(tuple(sorted(group, key=lambda t: t.priority)) for group in outgoing)
    return CompiledGraph(spec.name, states, hold_reasons, index[spec.initial_state], ordered, phases)


def _check_reachable(name: str, states: tuple[str, ...], initial: int, outgoing: list[list[CompiledTransition]]) -> None:
    seen = {initial}
    queue = deque([initial])
    while queue:
        for transition in outgoing[queue.popleft()]:
            if transition.target not in seen:
                seen.add(transition.target)
                queue.append(transition.target)
    unreachable = [states[i] for i in range(len(states)) if i not in seen]
    if unreachable:
        raise StrategyGraphError(f"graph {name}, state {unreachable[0]}: unreachable from the initial state {states[initial]}")


def _campaign_phases(
    name: str, states: tuple[str, ...], initial: int, outgoing: list[list[CompiledTransition]]
) -> tuple[bool, ...]:
    """Give every state one phase (inside a campaign or not), walking from the flat initial state.

    ``enter`` opens a campaign, ``exit`` closes it, every other action keeps the phase. A state
    reached in both phases, or an action that does not fit its source's phase, is refused.
    """
    phase: dict[int, bool] = {initial: False}
    queue = deque([initial])
    while queue:
        source = queue.popleft()
        inside = phase[source]
        for t in outgoing[source]:
            where = f"graph {name}, transition {t.name!r} ({states[t.source]} -> {states[t.target]})"
            if t.action is Action.ENTER and inside:
                raise StrategyGraphError(f"{where}: enter from state {states[source]}, which is already inside a campaign (use reenter)")
            if (t.action in SELLS or t.action is Action.REENTER) and not inside:
                raise StrategyGraphError(f"{where}: {t.action.value} from state {states[source]}, which holds no campaign")
            after = _PHASE_AFTER.get(t.action, inside)
            if t.target not in phase:
                phase[t.target] = after
                queue.append(t.target)
            elif phase[t.target] != after:
                raise StrategyGraphError(
                    f"graph {name}, state {states[t.target]}: reached both inside and outside a campaign "
                    f"(transition {t.name!r} from {states[source]})"
                )
    return tuple(phase[i] for i in range(len(states)))


_PHASE_AFTER: Mapping[Action, bool] = {Action.ENTER: True, Action.EXIT: False}
