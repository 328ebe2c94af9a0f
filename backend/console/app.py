"""The console's entry script (``acts console`` runs it with Streamlit): one menu entry per page module."""

from __future__ import annotations

import streamlit as st

from backend.console.views import discover, page


def main() -> None:
    """Build the menu from the page modules and run the chosen page (the first is the default)."""
    st.set_page_config(page_title="ACTS console", layout="wide")
    modules = discover()
    pages = [st.Page(m.render, title=m.TITLE, url_path=m.SLUG, default=i == 0) for i, m in enumerate(modules)]
    st.navigation(pages).run()


def run_page(slug: str) -> None:
    """Render one page on its own (used by the page tests)."""
    page(slug).render()


if __name__ == "__main__":
    main()
