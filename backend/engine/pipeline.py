"""``compile_pipeline(spec)``: a validated RunSpec becomes the pipeline every mode runs."""

from __future__ import annotations

from dataclasses import dataclass

from backend.config.canonical import content_hash
from backend.config.schema import RunSpec
from backend.features.registry import validate_feature_set
from backend.strategy.graph import CompiledGraph, compile_graph

# Every decision row records these two, so they are always computed.
LOGGED_OUTPUTS = ("p_up", "expected_return")
PREDICTION_OUTPUTS = ("p_up", "expected_return", "p_recovery")
POSITION_FIELDS = ("unrealized_return", "exposure_pct")
PORTFOLIO_FIELDS = ("drawdown", "exposure_pct", "open_positions")


@dataclass(frozen=True)
class Pipeline:
    """A compiled run: the spec, its hash, the profile version and the compiled strategy graph."""

    spec: RunSpec
    spec_hash: str
    profile_version: str
    graph: CompiledGraph

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.spec.features.features)

    @property
    def prediction_targets(self) -> tuple[str, ...]:
        """Return the model outputs to compute: the two every decision records, plus any the graph reads."""
        read = set(self.graph.names)
        return tuple(t for t in PREDICTION_OUTPUTS if t in LOGGED_OUTPUTS or f"pred.{t}" in read)


def guard_names(spec: RunSpec) -> frozenset[str]:
    """Return every name a guard may read under ``spec``."""
    names = {f"pred.{n}" for n in PREDICTION_OUTPUTS}
    names |= {f"feat.{f.name}" for f in spec.features.features}
    names |= {f"pos.{n}" for n in POSITION_FIELDS}
    names |= {f"portfolio.{n}" for n in PORTFOLIO_FIELDS}
    names |= {f"profile.{n}" for n in spec.risk.parameters()}
    return frozenset(names)


def profile_version(spec: RunSpec) -> str:
    """Return the risk profile's version: its name and the hash of its canonical content."""
    return f"{spec.risk.name}@{content_hash(spec.risk)[:12]}"


def compile_pipeline(spec: RunSpec) -> Pipeline:
    """Check what schemas alone cannot (feature builders, the strategy graph) and compile.

    Raises
    ------
    ConfigError
        For an unknown feature builder or missing builder parameter.
    StrategyGraphError
        For a graph that does not compile, naming the state and transition.
    """
    validate_feature_set(spec.features)
    graph = compile_graph(spec.strategy, guard_names(spec))
    return Pipeline(spec, content_hash(spec), profile_version(spec), graph)
