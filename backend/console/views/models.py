"""Models: the registry (versions, training windows, data hashes, gate results) and which model is live."""

from __future__ import annotations

import polars as pl
import streamlit as st

from backend.console.common import home, utc
from backend.operator.plane import models_overview, run_bundles

TITLE = "Models"
SLUG = "models"
ORDER = 60


def render() -> None:
    """Draw the models page."""
    where = home()
    st.title("Models")
    rows = models_overview(where)
    if not rows:
        st.info("No model in this home's registry yet: `acts train` trains and registers a candidate, "
                "`acts models promote MODEL --author WHO` makes it the live model for paper, shadow and live runs.")  # fmt: skip
    else:
        live = [r.version for r in rows if r.live]
        st.markdown(f"**Live model:** {live[0] if live else 'none promoted'}")
        st.dataframe(
            pl.DataFrame([{"version": r.version, "status": r.status, "live": r.live, "created": utc(r.created_ms),
                           "trigger": r.trigger, "folds": len(r.training_windows), "features": r.feature_set,
                           "inputs_sha256": r.inputs_sha256[:16], "lineage_sha256": r.lineage_sha256[:16],
                           "gates passed": f"{sum(g[1] for g in r.gates)}/{len(r.gates)}"} for r in rows]),
            hide_index=True,
        )  # fmt: skip
        for r in rows:
            with st.expander(f"{r.version} ({r.status})"):
                st.dataframe(pl.DataFrame([{"fold": i, "train from": utc(w[0]), "train to": utc(w[1]), "test from": utc(w[2]),
                                            "test to": utc(w[3])} for i, w in enumerate(r.training_windows)]),
                             hide_index=True)  # fmt: skip
                st.dataframe(pl.DataFrame([{"gate": g[0], "passed": g[1], "result": g[2]} for g in r.gates]), hide_index=True)
                st.dataframe(pl.DataFrame([{k: str(v) for k, v in h.items()} for h in r.history]), hide_index=True)
    bundles = run_bundles(where)
    if bundles:
        st.subheader("Bundles used by recorded runs")
        st.dataframe(pl.DataFrame(bundles, schema=["run", "model version"], orient="row"), hide_index=True)
