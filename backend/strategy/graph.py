"""Compile a declared strategy graph into tables the engine evaluates on every event."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from backend.config.schema import StrategySpec
from backend.errors import StrategyGraphError
from backend.strategy.guards import CompiledGuard, GuardSyntaxError, compile_guard
from backend.strategy.reasons import Action, StrategyReason


@dataclass(frozen=True)
class CompiledTransition:
    """A transition with its states as indices, its action and reason as enums, its guard compiled."""

    name: str
    source: int
    target: int
    action: Action
    reason: StrategyReason
    priority: int
    guard: CompiledGuard


@dataclass(frozen=True)
class CompiledGraph:
    """A checked graph: states, their hold reasons, and each state's transitions in priority order."""

    name: str
    states: tuple[str, ...]
    hold_reasons: tuple[StrategyReason, ...]
    initial: int
    outgoing: tuple[tuple[CompiledTransition, ...], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Return every dotted name any guard reads, sorted."""
        return tuple(sorted({n for group in self.outgoing for t in group for n in t.guard.names}))


def _reason(value: str, where: str) -> StrategyReason:
    try:
        return StrategyReason(value)
    except ValueError:
        known = ", ".join(r.value for r in StrategyReason)
        raise StrategyGraphError(f"{where}: unknown reason code {value!r} (known: {known})") from None


def compile_graph(spec: StrategySpec, known_names: frozenset[str]) -> CompiledGraph:
    """Check ``spec`` and compile it.

    Refused, each with a message naming the state and transition: duplicate states, an unknown
    state or reason code, a guard outside the guard language (numbers included), an unreachable
    state, a state with no way out, and two transitions from one state with the same priority.
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
        compiled = CompiledTransition(t.name, index[t.source], index[t.target], Action(t.action), _reason(t.reason, where), t.priority, guard)
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
    ordered = tuple(tuple(sorted(group, key=lambda t: t.priority)) for group in outgoing)
    return CompiledGraph(spec.name, states, hold_reasons, index[spec.initial_state], ordered)


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
