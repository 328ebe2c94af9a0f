"""Audit: replay a run under a profile version (or edited values) and show what would have changed."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from backend.console.common import clock, home, pick_run, refused, with_times
from backend.operator.plane import audit_run, profile_names, profile_view
from backend.errors import ActsError

TITLE = "Audit"
SLUG = "audit"
ORDER = 50
NONE = "(the run's own profile)"


def _profile_refs() -> list[str]:
    where = home()
    names, _ = profile_names(where, clock())
    refs = [NONE]
    for name in names:
        refs.extend(f"{name}@v{c.version}" for c in profile_view(where, name, clock()).history)
    return refs


def _show(audit: dict) -> None:
    st.markdown(f"**{audit['replay']}** against **{audit['original']}**")
    st.subheader("Config changes")
    st.dataframe(pl.DataFrame([{k: str(v) for k, v in c.items()} for c in audit["config_changes"]],
                              schema=["key", "old", "new"]), hide_index=True)  # fmt: skip
    st.subheader("First divergence")
    if audit["first_divergence"] is None:
        st.write("None: every decision is the same.")
    else:
        st.json(audit["first_divergence"])
    st.subheader("Effect on trades, fees, exposure and PnL")
    st.dataframe(pl.DataFrame([{"figure": k, **{n: str(v) for n, v in e.items()}} for k, e in audit["effects"].items()]),
                 hide_index=True)  # fmt: skip
    counts = audit["decision_counts"]
    st.caption("decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    series = pl.DataFrame(audit["series"])
    long = with_times(series, "ts").unpivot(index="ts", on=["equity_original", "equity_replay"], variable_name="run",
                                            value_name="equity")  # fmt: skip
    st.altair_chart(
        alt.Chart(long).mark_line().encode(x=alt.X("ts:T", title="time (UTC)"), y=alt.Y("equity:Q", scale=alt.Scale(zero=False)),
                                           color="run:N"),
        width="stretch",
    )  # fmt: skip
    if audit["decisions"]:
        st.subheader("Changed decisions")
        st.dataframe(pl.DataFrame([{k: str(v) for k, v in d.items()} for d in audit["decisions"][:200]]), hide_index=True)


def render() -> None:
    """Draw the audit page."""
    where = home()
    st.title("Audit: config-diff replay")
    run = pick_run(where, "audit_run", backtest_only=True)
    if run is None:
        return
    with st.form("audit"):
        ref = st.selectbox("Replay under profile version", _profile_refs(), key="audit_profile")
        sets = st.text_area("and/or these overrides (one key=value a line, e.g. risk.entry_min_p_up=0.6)", key="audit_sets")
        go = st.form_submit_button("Run audit", type="primary")
    if go:
        try:
            with st.spinner("replaying the run"):
                result = audit_run(where, run, None if ref == NONE else ref, sets.splitlines(), clock())
        except ActsError as error:
            refused(error)
            return
        st.session_state["audit:result"] = (run.key, result.as_dict())
    kept = st.session_state.get("audit:result")
    if kept is not None and kept[0] == run.key:
        _show(kept[1])
