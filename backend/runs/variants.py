"""The pure part of ``acts sweep``: variants from Hydra sweep overrides, their grouping, and the comparison table.

Overrides use Hydra's sweep syntax (``risk=aggressive,balanced``, ``seed=range(1,4)``,
``risk.entry_min_p_up=choice(0.55,0.6)``): their cartesian product is the list of variants, in
Hydra's ``-m`` order. ``sweep.<key>=...`` arguments set the sweep itself (conf/sweep.yaml, SweepSpec).

Variants whose bars, features and models are the same (they differ in risk profile, strategy
thresholds or execution settings that do not enter the labels) form one group: the group's bars
are loaded once, its model trained once, its features and predictions built once into a market
matrix that is put once in Ray's object store; each variant's engine loop is a Ray task over it (or
a call in this process with ``sweep.ray.enabled=false``). Each variant's run folder is what
``acts backtest`` with that variant's overrides writes, decision log included; ``comparison.csv``
and ``comparison.parquet`` hold one row per variant.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from backend.config.canonical import canonical_json, sha256_hex
from backend.config.compose import CONF_DIR
from backend.config.errors_format import format_validation_error
from backend.config.schema import SweepSpec
from backend.engine.pipeline import Pipeline
from backend.errors import ConfigError

PREFIX = "sweep."
# The comparison table's columns, in order; the printed table shows PRINTED.
COLUMNS = (
    "variant",
    "label",
    "return_pct",
    "max_drawdown_pct",
    "sharpe",
    "fees_paid",
    "turnover",
    "orders",
    "fills",
    "decisions",
    "final_equity",
    "decision_log_sha256",
    "run_dir",
)
PRINTED = ("variant", "return_pct", "max_drawdown_pct", "sharpe", "fees_paid", "turnover", "orders", "label")
_UNSAFE = re.compile(r"[^A-Za-z0-9=._-]+")
_YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: its place, its whole override list and the swept ``key=value`` pairs of it."""

    index: int
    overrides: tuple[str, ...]
    swept: tuple[str, ...]

    @property
    def label(self) -> str:
        """The swept values, space separated (``base`` when nothing is swept)."""
        return " ".join(self.swept) or "base"

    @property
    def folder(self) -> str:
        """The variant's run folder name: its place and its swept values, safe for a file name."""
        slug = _UNSAFE.sub("-", "_".join(self.swept)).strip("-")[:80] or "base"
        return f"{self.index:03d}-{slug}"


def split_tokens(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split the command line into the sweep's own settings (``sweep.`` stripped) and the run overrides."""
    own = [t.removeprefix(PREFIX) for t in tokens if t.startswith(PREFIX)]
    return own, [t for t in tokens if not t.startswith(PREFIX)]


def sweep_settings(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> SweepSpec:
    """Compose ``conf/sweep.yaml`` with ``overrides`` and validate it.

    Raises
    ------
    ConfigError
        Naming ``sweep.<key>``, the bound and the value, or the override Hydra could not apply.
    """
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            raw = OmegaConf.to_container(compose("sweep", overrides=list(overrides)), resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"cannot compose the sweep settings with {[PREFIX + o for o in overrides]}: {error}") from error
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("invalid sweep settings:\n" + format_validation_error(error, prefix=PREFIX)) from error


def expand_variants(overrides: Sequence[str], limit: int) -> list[Variant]:
    """Return the variants of ``overrides`` (Hydra sweep syntax), in Hydra's ``-m`` order.

    As Hydra's basic sweeper does, a key given twice keeps its first place and its last value, and
    the variants are the cartesian product of every key's values in key order.

    Raises
    ------
    ConfigError
        When an override does not parse, sweeps an interval, or when there are more than ``limit`` variants.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(f"cannot parse the sweep overrides {list(overrides)}: {error}") from error
    values: dict[str, list[str]] = {}
    swept: set[str] = set()
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise ConfigError(f"'{key}' sweeps an interval, which has no list of values: use a,b,c, choice() or range()")
        if override.is_sweep_override():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            swept.add(key)
        else:
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
            swept.discard(key)
    count = math.prod(len(v) for v in values.values())
    if count > limit:
        raise ConfigError(f"'sweep.max_variants' must be >= the number of variants; the overrides expand to {count}, the bound is {limit}")
    places = [i for i, key in enumerate(values) if key in swept]
    return [Variant(n, combo, tuple(combo[i] for i in places)) for n, combo in enumerate(itertools.product(*values.values()))]


def market_key(pipeline: Pipeline, model_inputs: str) -> str:
    """Return what a variant's bars, model, features and predictions depend on: variants with equal keys share them.

    ``model_inputs`` is the canonical JSON of the training settings that shape the models (the
    runner's ``model_training_json``) and the label cost.
    """
    spec = pipeline.spec
    return sha256_hex(
        canonical_json(
            {
                "seed": spec.seed,
                "mode": spec.mode.value,
                "universe": spec.universe.model_dump(mode="json"),
                "data": spec.data.model_dump(mode="json"),
                "features": spec.features.model_dump(mode="json"),
                "model": spec.model.model_dump(mode="json"),
                "training": model_inputs,
                "targets": list(pipeline.prediction_targets),
            }
        )
    )


def group_variants(keys: Sequence[str]) -> list[list[int]]:
    """Group variant indices by key, groups in order of first appearance, indices ascending."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def sharpe_ratio(equity: np.ndarray, initial: float, bar_ms: int) -> float | None:
    """Annualised Sharpe ratio of the bar returns of ``equity`` (the first from ``initial``); None for a flat curve.

    The definition of ``summary.json``'s ``sharpe`` (issue 11): risk-free rate 0, population
    standard deviation, ``sqrt(365 days / bar length)`` bars a year.
    """
    returns = equity / np.concatenate([[initial], equity[:-1]]) - 1.0
    deviation = float(returns.std())
    if deviation == 0.0:
        return None
    return round(float(returns.mean()) / deviation * math.sqrt(_YEAR_MS / bar_ms), 4)


def turnover(traded_notional: float, equity: np.ndarray) -> float:
    """Traded notional (buys and sells) over the mean equity: how many times the book was traded (issue 11's definition)."""
    return round(traded_notional / float(equity.mean()), 4)


def run_figures(summary: dict[str, Any], equity: np.ndarray, bar_ms: int, traded_notional: float) -> dict[str, float | None]:
    """Return a variant's ``sharpe`` and ``turnover``: its summary's own where it has them, else computed here.

    Both are computed by the definitions the summary uses, so the table reads the same either way.
    """
    computed = {
        "sharpe": sharpe_ratio(equity, float(summary["initial_equity"]), bar_ms),
        "turnover": turnover(traded_notional, equity),
    }
    return {key: summary[key] if key in summary else value for key, value in computed.items()}


def comparison_row(variant: Variant, summary: dict[str, Any], figures: dict[str, float | None]) -> dict[str, Any]:
    """Return a variant's row of the comparison table from its run summary and its :func:`run_figures`."""
    return {
        "variant": variant.folder,
        "label": variant.label,
        "return_pct": summary["return_pct"],
        "max_drawdown_pct": summary["max_drawdown_pct"],
        "sharpe": figures["sharpe"],
        "fees_paid": float(summary["fees_paid"]),
        "turnover": figures["turnover"],
        "orders": summary["orders"],
        "fills": summary["fills"],
        "decisions": summary["decisions"],
        "final_equity": summary["final_equity"],
        "decision_log_sha256": summary["decision_log_sha256"],
        "run_dir": summary["run_dir"],
    }


def comparison_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Return the comparison table: one row per variant, in variant order, with the fixed columns."""
    schema = {
        "variant": pl.String, "label": pl.String, "return_pct": pl.Float64, "max_drawdown_pct": pl.Float64,
        "sharpe": pl.Float64, "fees_paid": pl.Float64, "turnover": pl.Float64, "orders": pl.Int64, "fills": pl.Int64,
        "decisions": pl.Int64, "final_equity": pl.Float64, "decision_log_sha256": pl.String, "run_dir": pl.String,
    }  # fmt: skip
    return pl.DataFrame([{c: row[c] for c in COLUMNS} for row in rows], schema=schema, orient="row").sort("variant")


def format_table(frame: pl.DataFrame) -> str:
    """Render the comparison's main columns as a fixed-width text table (None as ``-``)."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in frame.select(PRINTED).iter_rows()]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(PRINTED)]
    lines = ["  ".join(name.ljust(width) for name, width in zip(PRINTED, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)
