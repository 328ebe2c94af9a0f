"""Kraken: connect an API key (checked, then kept only in the OS credential store), re-check it, disconnect.

The same flow as ``acts kraken connect | status | disconnect``, through the same functions
(:mod:`backend.operator.kraken`, which calls :mod:`backend.control.onboarding`). The key and the secret
are typed into password inputs that the form clears on submit; neither is ever shown, logged or kept in
the page. A refused key lists each offending permission with the fix on Kraken's key page.
"""

from __future__ import annotations

import streamlit as st

from backend.config.text import display_text
from backend.console.common import clock, flash, home, refused, utc
from backend.errors import ActsError
from backend.operator.kraken import KeyMode, connect_key, describe, disconnect_key, kraken_settings, kraken_status, recheck_key

TITLE = "Kraken"
SLUG = "kraken"
ORDER = 70
_FLASH = "kraken:flash"
_REPORT = "kraken:report"
_REFUSAL = "kraken:refusal"
_TYPED = ("kraken_api_key", "kraken_secret")


def _status() -> None:
    snapshot = kraken_status(home())  # render() has read the settings: nothing here refuses
    problem = snapshot.get("credential_store_problem")
    if problem:
        st.error(f"The OS credential store cannot be read: {problem}")
    live = snapshot["live"]
    if "key_fingerprint" not in snapshot:
        st.markdown("**No Kraken key is connected.** Create a key on Kraken with only the permissions below, then connect it.")
    else:
        state = "connected" if snapshot["connected"] else "onboarded, but the key is missing from the OS credential store"
        st.markdown(
            f"**Key {snapshot['key_fingerprint']}: {state}**  \n**Mode** {snapshot['mode']}  \n"
            f"**Permissions** {', '.join(snapshot['permissions'])}  \n"
            f"**Onboarded by** {display_text(snapshot['onboarded_by'])} at {utc(snapshot['onboarded_ms'])}"
        )
    readiness = "ready" if live["ready"] else "not ready: missing " + ", ".join(live["missing"])
    st.markdown(f"**Live trading** {readiness}")


def _last_report() -> None:
    refusal = st.session_state.pop(_REFUSAL, None)
    if refusal is not None:
        st.error(f"Refused: {refusal}")
    lines = st.session_state.pop(_REPORT, None)
    if lines is None:
        return
    verdict, *rest = lines
    (st.success if "accepted" in verdict else st.error)(verdict)
    for line in rest:
        text = line.strip()
        if text.startswith("refused:"):
            st.error(text)
        elif text.startswith("warning:"):
            st.warning(text)
        else:
            st.markdown(text)


def _connect_form(default_url: str) -> None:
    # clear_on_submit: the typed key and secret do not outlive the submission in the page's state.
    with st.form("kraken_connect", clear_on_submit=True):
        st.write("Connect a key: connectivity and permissions are checked first; only an accepted key is stored, "
                 "in the OS credential store. Needed: query funds, query open and closed orders and trades; "
                 "live also create and cancel orders. Never withdrawal or deposit permissions.")  # fmt: skip
        mode = st.selectbox("Mode", [m.value for m in (KeyMode.LIVE, KeyMode.SHADOW)], key="kraken_mode")
        api_key = st.text_input("API key", type="password", key="kraken_api_key")
        secret = st.text_input("API secret", type="password", key="kraken_secret")
        author = st.text_input("Author", key="kraken_author")
        base_url = st.text_input("Kraken base URL", value=default_url, key="kraken_url")
        go = st.form_submit_button("Check and connect", type="primary")
    if not go:
        return
    try:
        result = connect_key(home(), api_key, secret, mode, author, base_url, clock())
    except ActsError as error:
        st.session_state[_REFUSAL] = str(error)
    else:
        lines = list(describe(result.report))
        if result.stored:
            st.session_state[_FLASH] = f"key {result.key_fingerprint} stored in the OS credential store"
        else:
            lines.append("nothing was stored")
        st.session_state[_REPORT] = lines
    # The typed key and secret leave the page's state now, whatever the outcome.
    for name in _TYPED:
        st.session_state.pop(name, None)
    st.rerun()


def _recheck_form(default_url: str) -> None:
    with st.form("kraken_recheck"):
        author = st.text_input("Author", key="kraken_check_author")
        base_url = st.text_input("Kraken base URL", value=default_url, key="kraken_check_url")
        go = st.form_submit_button("Re-check connectivity and permissions")
    if not go:
        return
    try:
        report = recheck_key(home(), author, base_url, clock())
    except ActsError as error:
        refused(error)
        return
    st.session_state[_REPORT] = list(describe(report))
    st.rerun()


def _disconnect_form() -> None:
    with st.form("kraken_disconnect"):
        author = st.text_input("Author", key="kraken_gone_author")
        go = st.form_submit_button("Disconnect")
    if not go:
        return
    try:
        removed = disconnect_key(home(), author, clock())
    except ActsError as error:
        refused(error)
        return
    st.session_state[_FLASH] = "disconnected: the key was removed from the OS credential store" if removed else "no key was connected"
    st.rerun()


def render() -> None:
    """Draw the Kraken page."""
    st.title("Kraken")
    flash(_FLASH)
    _last_report()
    try:
        default_url = kraken_settings().base_url
    except ActsError as error:
        refused(error)
        return
    _status()
    tabs = st.tabs(["Connect", "Re-check", "Disconnect"])
    with tabs[0]:
        _connect_form(default_url)
    with tabs[1]:
        _recheck_form(default_url)
    with tabs[2]:
        _disconnect_form()
