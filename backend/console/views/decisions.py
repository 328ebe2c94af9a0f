"""Decisions: a run's or paper session's decision log, filtered and paged on the server (polars scan)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import streamlit as st

from backend.console.common import home, pick_run, refused, with_times
from backend.operator.runs import DecisionQuery, decision_facets, gate_outcomes, query_decisions
from backend.errors import ActsError

TITLE = "Decisions"
SLUG = "decisions"
ORDER = 20
PAGE_SIZES = (25, 50, 100, 200)


def _pricing(row: dict[str, Any]) -> str:
    if row["cost"] is None:
        return "not priced (a way out, a recovery decision or no order)"
    edge = "missing (no calibrated edge)" if row["edge"] is None else f"{row['edge']:.4%}"
    return f"edge {edge} against cost {row['cost']:.4%} + margin {row['margin']:.4%}"


def render() -> None:
    """Draw the decisions page."""
    st.title("Decisions")
    run = pick_run(home(), "decisions_run")
    if run is None:
        return
    facets = decision_facets(run)
    cols = st.columns([2, 2, 3, 1, 1, 1])
    symbols = cols[0].multiselect("Symbol", facets["symbol"], key="decisions_symbols")
    kinds = cols[1].multiselect("Decision kind", facets["action"], key="decisions_kinds")
    reasons = cols[2].multiselect("Reason code", facets["reason"], key="decisions_reasons")
    admitted = cols[3].checkbox("Admitted only", key="decisions_admitted")
    size = cols[4].selectbox("Rows", PAGE_SIZES, index=1, key="decisions_size")
    number = cols[5].number_input("Page", value=1, step=1, key="decisions_page")
    query = DecisionQuery(tuple(symbols), tuple(kinds), tuple(reasons), admitted, int(number) - 1, int(size))
    try:
        result = query_decisions(run, query)
    except ActsError as error:
        refused(error)
        return
    st.caption(f"{result.total:,} decisions match; page {result.page + 1} of {result.pages} ({run.key})")
    st.dataframe(with_times(result.rows.drop("gates", "inputs", "profile_params"), "ts"), hide_index=True)
    if result.rows.is_empty():
        return
    seq = st.selectbox("Decision detail (seq)", result.rows["seq"].to_list(), key="decisions_detail")
    row = result.rows.filter(pl.col("seq") == seq).row(0, named=True)
    left, right = st.columns(2)
    left.markdown(f"**{row['symbol']} {row['action']}**: {row['state_from']} -> {row['state_to']} ({row['reason']}), "
                  f"gate outcome {row['gate_reason']}, profile {row['profile_version']}")  # fmt: skip
    left.markdown(f"Pricing ({row['cost_reason']}): {_pricing(row)}")
    left.dataframe(pl.DataFrame(gate_outcomes(row["gates"])), hide_index=True)
    right.markdown("Guard inputs")
    right.json(json.loads(row["inputs"]) if row["inputs"] else {})
    right.markdown("Profile parameters in force")
    right.json(json.loads(row["profile_params"]) if row["profile_params"] else {})
