"""What every page shares: the home and clock, the first-steps notice, a run picker, refusal display."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import streamlit as st

from backend.operator.plane import FIRST_STEPS, is_empty
from backend.operator.runs import RunRef, list_runs
from backend.clock import WallClock
from backend.errors import ActsError
from backend.home import Home, acts_home


def home() -> Home:
    """The home the console serves (``ACTS_HOME``, read at every rerun)."""
    return Home(acts_home())


def clock() -> WallClock:
    """The console is a shell: it stamps operator actions with the wall clock."""
    return WallClock()


def utc(ms: int | None) -> str:
    """UTC milliseconds as ``YYYY-MM-DD HH:MM:SS UTC`` (``never`` for None)."""
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | None) -> str:
    """A lag in milliseconds in the largest fitting unit (``n/a`` for None)."""
    if ms is None:
        return "n/a"
    seconds = ms / 1000
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.1f} s"


def with_times(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Show UTC-millisecond columns as datetimes."""
    return frame.with_columns(pl.from_epoch(pl.col(c), time_unit="ms").dt.replace_time_zone("UTC") for c in columns)


def first_steps(where: Home) -> bool:
    """Explain what to run first when the home holds no run; return whether it was empty."""
    if is_empty(where):
        st.info(f"ACTS home {where.root}\n\n" + FIRST_STEPS)
        return True
    return False


def pick_run(where: Home, key: str, backtest_only: bool = False) -> RunRef | None:
    """A run picker (newest first); None, after the first-steps notice, when the home has none."""
    runs = [r for r in list_runs(where) if not backtest_only or r.kind.value == "backtest"]
    if not runs:
        first_steps(where)
        return None
    labels = {r.key: r.label for r in runs}
    chosen = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key=key)
    return next(r for r in runs if r.key == chosen)


def refused(error: ActsError) -> None:
    """Show a refusal from the server as the store wrote it (field, bound and value)."""
    st.error(f"Refused: {error}")


def flash(key: str) -> None:
    """Show (once) a message left by the previous run of the page, e.g. after a successful write."""
    message = st.session_state.pop(key, None)
    if message:
        st.success(message)
