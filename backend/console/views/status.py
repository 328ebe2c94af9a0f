"""Status: runtime health, mode, last event and lag, the active profile, each risk gate, the kill switch."""

from __future__ import annotations

import polars as pl
import streamlit as st

from backend.console.common import clock, duration, first_steps, flash, home, refused, utc
from backend.operator.plane import control_actions, engage_kill_switch, resume_trading, runtime_status
from backend.errors import ActsError

TITLE = "Status"
SLUG = "status"
ORDER = 10
_FLASH = "status:flash"


def _kill_switch_form() -> None:
    with st.form("kill_switch"):
        st.write("Engage or resume: logged with author and reason, exactly like `acts control kill | resume`.")
        author = st.text_input("Author", key="ks_author")
        reason = st.text_input("Reason", key="ks_reason")
        left, right = st.columns(2)
        engage = left.form_submit_button("Engage kill switch", type="primary")
        resume = right.form_submit_button("Resume trading")
    if not (engage or resume):
        return
    act = engage_kill_switch if engage else resume_trading
    try:
        after = act(home(), author, reason, clock())
    except ActsError as error:
        refused(error)
        return
    st.session_state[_FLASH] = f"kill switch {'ON' if after.killed else 'off'} (action #{after.actions} by {author.strip()})"
    st.rerun()


def render() -> None:
    """Draw the status page."""
    where = home()
    st.title("Status")
    flash(_FLASH)
    first_steps(where)
    status = runtime_status(where, clock())
    cols = st.columns(3)
    cols[0].metric("Health", status.health.value)
    cols[1].metric("Mode", status.mode)
    cols[2].metric("Kill switch", "ON" if status.kill_switch.killed else "off")
    st.markdown(
        f"**Last event** {utc(status.last_event_ms)} (lag {duration(status.lag_ms)})  \n"
        f"**Active risk profile** `{status.active_profile}`  \n**Source** {status.source}: {status.note}"
    )
    st.subheader("Risk gates: current figure against the active profile's bound")
    st.dataframe(
        pl.DataFrame(
            [{"gate": g.gate, "figure": g.figure, "bound": g.bound, "unit": g.unit, "within": g.within, "note": g.note}
             for g in status.gates]
        ),
        hide_index=True,
    )  # fmt: skip
    switch = status.kill_switch
    st.subheader("Kill switch")
    state = "ON: no new risk is admitted" if switch.killed else "off: trading allowed"
    st.markdown(f"**kill switch {state}** (since {utc(switch.since_ms)}, {switch.actions} logged actions)")
    _kill_switch_form()
    actions = control_actions(where)
    if actions:
        st.dataframe(
            pl.DataFrame([{"#": a.seq, "time": utc(a.ts_ms), "action": a.action, "author": a.author, "reason": a.reason}
                          for a in actions]),
            hide_index=True,
        )  # fmt: skip
