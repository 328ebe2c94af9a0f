"""Screenshots of every console page, taken in headless Chromium from a running console.

    python -m scripts.console_screenshots --url http://127.0.0.1:8501 --out docs/console

``make console-screenshots`` starts a console on a home with a small demo run and calls this, so
the pictures under ``docs/console/`` show the code as it is. Playwright drives the system Chromium
(``/usr/bin/chromium``); it never downloads a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from backend.console.views import discover

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip
RENDER_TIMEOUT_MS = 60_000


async def launch(playwright):  # type: ignore[no-untyped-def]
    """Launch the system Chromium headless with the flags this machine needs (Playwright gives it a fresh profile)."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))


# Streamlit draws a skeleton for each element until its component has loaded, and a status widget while running.
RENDERED = (
    "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
)


def wait_rendered(page, title: str) -> None:  # type: ignore[no-untyped-def]
    """Wait (Playwright's sync API) until the page's title is drawn and Streamlit has finished running the script."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(RENDERED, timeout=RENDER_TIMEOUT_MS)


async def wait_rendered_async(page, title: str) -> None:  # type: ignore[no-untyped-def]
    """The same wait on Playwright's async API."""
    await page.get_by_role("heading", name=title).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    await page.wait_for_function(RENDERED, timeout=RENDER_TIMEOUT_MS)


def heading(module) -> str:  # type: ignore[no-untyped-def]
    """The heading a page draws first (its title, as the page writes it)."""
    return getattr(module, "HEADING", module.TITLE)


def page_url(base: str, slug: str) -> str:
    """A page's address: the first page (the default) is served at the root."""
    first = discover()[0].SLUG
    return base.rstrip("/") + "/" + ("" if slug == first else slug)


async def take_async(url: str, out: Path) -> list[Path]:
    """Screenshot every page of the console at ``url`` into ``out`` as ``<slug>.png``; return the files.

    Playwright's async API, not the sync one: the sync API switches greenlets under the caller, which hides the
    caller's lines from coverage's tracer; coroutines on one asyncio loop are traced like any code.
    """
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 2000})
            page = await context.new_page()
            for module in discover():
                await page.goto(page_url(url, module.SLUG))
                await wait_rendered_async(page, heading(module))
                path = out / f"{module.SLUG}.png"
                await page.screenshot(path=str(path), full_page=True)
                written.append(path)
        finally:
            await browser.close()
    return written


def take(url: str, out: Path) -> list[Path]:
    """Run :func:`take_async` on a fresh event loop."""
    return asyncio.run(take_async(url, out))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--url`` and ``--out`` and take the screenshots."""
    parser = argparse.ArgumentParser(prog="console_screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    args = parser.parse_args(argv)
    for path in take(args.url, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
