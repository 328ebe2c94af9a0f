"""Profiles: view, edit and activate risk profiles through the profile store (the server is the authority).

The edit form is based on the version the operator was shown (kept per browser session); the store
refuses it when another edit committed first, and the page then shows the newer version. Widgets
show each field's bounds but do not enforce them: the store validates every value it receives.
"""

from __future__ import annotations

import polars as pl
import streamlit as st
import yaml

from backend.console.common import clock, flash, home, refused, utc
from backend.operator.plane import (
    activate_profile,
    commit_profile_edit,
    flatten,
    is_stale,
    profile_diff,
    profile_fields,
    profile_names,
    profile_view,
)
from backend.errors import ActsError

TITLE = "Profiles"
SLUG = "profiles"
ORDER = 40
_FLASH = "profiles:flash"


def _parent_key(name: str) -> str:
    return f"profiles:parent:{name}"


def _edit_form(name: str, parent: int, content: dict) -> None:
    current = flatten(content)
    submitted = {}
    with st.form(f"edit:{name}:v{parent}"):
        st.write(f"Edit based on v{parent}. Bounds are shown for guidance; the server checks every value.")
        cols = st.columns(3)
        for i, spec in enumerate(profile_fields()):
            key = f"edit:{name}:v{parent}:{spec.key}"
            col = cols[i % 3]
            value = current[spec.key]
            if spec.kind == "boolean":
                submitted[spec.key] = col.checkbox(spec.key, value=bool(value), key=key, help=spec.bounds)
            elif spec.kind == "choice":
                submitted[spec.key] = col.selectbox(spec.key, spec.choices, index=spec.choices.index(value), key=key,
                                                    help=spec.bounds)  # fmt: skip
            else:
                submitted[spec.key] = col.text_input(f"{spec.key} ({spec.bounds})", value=str(value), key=key)
        author = st.text_input("Author", key=f"edit:{name}:author")
        reason = st.text_input("Reason", key=f"edit:{name}:reason")
        commit = st.form_submit_button("Commit new version", type="primary")
    if not commit:
        return
    try:
        done = commit_profile_edit(home(), name, submitted, author, reason, parent, clock())
    except ActsError as error:
        if not is_stale(error):
            refused(error)
            return
        st.session_state[f"profiles:stale:{name}"] = (parent, str(error))
        st.rerun()
    st.session_state[_parent_key(name)] = done.version
    st.session_state[_FLASH] = f"committed {done.version_string} by {done.author} (not active yet)"
    st.rerun()


def _stale_notice(name: str, latest: int) -> None:
    stale = st.session_state.get(f"profiles:stale:{name}")
    if stale is None:
        return
    based, message = stale
    st.error(f"Refused: {message}")
    st.warning(f"Your edit was based on v{based}; the latest version is v{latest}. Review it, then edit again on v{latest}.")
    changes = profile_diff(home(), name, based, latest, clock())
    st.dataframe(pl.DataFrame([{"key": c.key, f"v{based}": str(c.old), f"v{latest}": str(c.new)} for c in changes]),
                 hide_index=True)  # fmt: skip
    if st.button(f"Edit on v{latest}", key=f"profiles:rebase:{name}"):
        st.session_state[_parent_key(name)] = latest
        del st.session_state[f"profiles:stale:{name}"]
        st.rerun()


def _activate_form(name: str, versions: list[int]) -> None:
    with st.form(f"activate:{name}"):
        version = st.selectbox("Version to activate", versions, key=f"activate:{name}:version")
        author = st.text_input("Author", key=f"activate:{name}:author")
        reason = st.text_input("Reason", key=f"activate:{name}:reason")
        go = st.form_submit_button("Activate")
    if not go:
        return
    try:
        done = activate_profile(home(), name, int(version), author, reason, clock())
    except ActsError as error:
        refused(error)
        return
    st.session_state[_FLASH] = f"activated {name} v{done.version} (activation #{done.seq} by {done.author})"
    st.rerun()


def render() -> None:
    """Draw the profiles page."""
    where = home()
    st.title("Profiles")
    flash(_FLASH)
    names, active_name = profile_names(where, clock())
    name = st.selectbox("Profile", names, index=names.index(active_name) if active_name in names else 0, key="profiles_name")
    view = profile_view(where, name, clock())
    latest = view.latest
    state = "active" if view.active_version == latest.version else (
        "not active" if view.active_version is None else f"v{view.active_version} is active")
    st.markdown(f"**{latest.version_string}** ({state}); v{latest.version} by {latest.author} at {utc(latest.ts_ms)}: "
                f"{latest.reason}")  # fmt: skip
    parent = st.session_state.setdefault(_parent_key(name), latest.version)
    _stale_notice(name, latest.version)
    shown = next(c for c in view.history if c.version == parent)
    tabs = st.tabs(["Edit", "Activate", "History", "Content"])
    with tabs[0]:
        _edit_form(name, parent, shown.tree())
    with tabs[1]:
        _activate_form(name, [c.version for c in view.history])
    with tabs[2]:
        st.dataframe(
            pl.DataFrame([{"version": c.version, "time": utc(c.ts_ms), "author": c.author, "parent": c.parent_version,
                           "reason": c.reason, "content": c.content_hash[:12], "chain": c.chain_hash[:12]}
                          for c in view.history]),
            hide_index=True,
        )  # fmt: skip
        st.dataframe(
            pl.DataFrame([{"#": a.seq, "time": utc(a.ts_ms), "version": a.version, "author": a.author, "reason": a.reason}
                          for a in view.activations], schema=["#", "time", "version", "author", "reason"]),
            hide_index=True,
        )  # fmt: skip
    with tabs[3]:
        st.code(yaml.safe_dump(latest.tree(), sort_keys=True), language="yaml")
