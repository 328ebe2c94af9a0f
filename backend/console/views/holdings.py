"""Holdings and charts: positions, cash, equity curve and a per-asset price chart with trades marked."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from backend.console.common import home, pick_run, with_times
from backend.operator.plane import money
from backend.operator.runs import holdings, symbols_of

TITLE = "Holdings and charts"
SLUG = "holdings"
ORDER = 30


def _price_chart(prices: pl.DataFrame, markers: pl.DataFrame, symbol: str) -> alt.LayerChart:
    line = alt.Chart(with_times(prices.filter(pl.col("symbol") == symbol), "ts")).mark_line().encode(
        x=alt.X("ts:T", title="time (UTC)"), y=alt.Y("close:Q", title=f"{symbol} close", scale=alt.Scale(zero=False))
    )
    points = alt.Chart(with_times(markers.filter(pl.col("symbol") == symbol), "ts")).mark_point(filled=True, size=90).encode(
        x="ts:T", y="price:Q", color=alt.Color("kind:N", title="trade"), shape="kind:N",
        tooltip=["kind", "reason", "ts", "price"],
    )  # fmt: skip
    return line + points


def render() -> None:
    """Draw the holdings page."""
    where = home()
    st.title("Holdings and charts")
    run = pick_run(where, "holdings_run")
    if run is None:
        return
    held = holdings(where, run)
    st.caption(held.note)
    cols = st.columns(3)
    cols[0].metric("Cash (USD)", money(held.cash))
    cols[1].metric("Equity (USD)", money(held.equity))
    cols[2].metric("Open positions", held.positions.height)
    st.subheader("Positions")
    if held.positions.is_empty():
        st.write("No open positions.")
    else:
        st.dataframe(held.positions, hide_index=True)
    st.subheader("Equity curve")
    st.altair_chart(
        alt.Chart(with_times(held.equity_curve, "ts")).mark_line().encode(
            x=alt.X("ts:T", title="time (UTC)"), y=alt.Y("equity:Q", scale=alt.Scale(zero=False))
        ),
        width="stretch",
    )  # fmt: skip
    symbols = symbols_of(held)
    if not symbols:
        st.write("No prices for this run.")
        return
    st.subheader("Price and trades")
    traded = held.markers["symbol"].unique().sort().to_list()
    default = symbols.index(traded[0]) if traded else 0
    symbol = st.selectbox("Asset", symbols, index=default, key="holdings_symbol")
    st.altair_chart(_price_chart(held.prices, held.markers, symbol), width="stretch")
    st.dataframe(with_times(held.markers.filter(pl.col("symbol") == symbol), "ts"), hide_index=True)
