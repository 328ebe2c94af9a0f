"""The console end to end: `acts console` as a subprocess, driven by real headless Chromium (Playwright).

One server and one browser for the module; tests share the home, so each reads the state it starts from.
Skipped, with the reason, where the system Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import copy_home, demo_home

from scripts.console_screenshots import CHROMIUM, CHROMIUM_ARGS, RENDER_TIMEOUT_MS, heading, main, page_url, wait_rendered

from backend.console.views import discover

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_console_cli import free_port, wait_healthy  # noqa: E402

ACTS = Path(sys.executable).with_name("acts")

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no system Chromium at {CHROMIUM} (scripts/sh/install_system_packages.sh installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test dependency) is not installed")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo home that the server serves for this module."""
    return copy_home(demo_home(tmp_path_factory.getbasetemp()), tmp_path_factory.mktemp("console_e2e") / "home")


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, ACTS_HOME=str(home), USER="e2e")


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`acts console` on a free port, as a subprocess in its own process group."""
    port = free_port()
    log = (tmp_path_factory.mktemp("console_log") / "console.log").open("w")
    child = subprocess.Popen([str(ACTS), "console", "--port", str(port)], env=_env(home), stdout=log, stderr=log,
                             start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless Chromium for the module."""
    os.environ.setdefault("HOME", str(tmp_path_factory.mktemp("chromium_home")))
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))
        yield chromium
        chromium.close()


def _open(browser, url: str, slug: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    page.goto(page_url(url, slug))
    wait_rendered(page, next(heading(m) for m in discover() if m.SLUG == slug))
    return context, page


def _acts(home: Path, *argv: str) -> str:
    done = subprocess.run([str(ACTS), *argv], env=_env(home), capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _settle(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"], [data-testid=\"stStatusWidget\"]')"
    )


@pytest.mark.parametrize("slug", [m.SLUG for m in discover()])
def test_every_page_loads_without_an_exception(server: str, browser, slug: str) -> None:  # type: ignore[no-untyped-def]
    context, page = _open(browser, server, slug)
    try:
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "Page not found" not in page.inner_text("body")
    finally:
        context.close()


def test_kill_and_resume_in_the_browser_change_acts_control_status(server: str, browser, home: Path) -> None:  # type: ignore[no-untyped-def]
    context, page = _open(browser, server, "status")
    try:
        page.get_by_label("Author").fill("alice")
        page.get_by_label("Reason").fill("browser drill")
        page.get_by_role("button", name="Engage kill switch").click()
        page.get_by_text("kill switch ON (action").wait_for()
        status = json.loads(_acts(home, "control", "status", "--json"))
        assert status["killed"] and status["last_action"]["author"] == "alice"
        assert status["last_action"]["reason"] == "browser drill"
        page.get_by_label("Author").fill("alice")
        page.get_by_label("Reason").fill("drill over")
        page.get_by_role("button", name="Resume trading").click()
        page.get_by_text("kill switch off (action").wait_for()
        status = json.loads(_acts(home, "control", "status", "--json"))
        assert not status["killed"] and status["last_action"]["action"] == "resume"
    finally:
        context.close()


def _edit(page, value: str, author: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    form = page.locator('[data-testid="stForm"]').filter(has_text="Edit based on")
    form.get_by_label("max_concurrent_positions (>= 1, <= 30)").fill(value)
    form.get_by_label("Author").fill(author)
    form.get_by_label("Reason").fill(reason)
    form.get_by_role("button", name="Commit new version").click()


def _versions(home: Path) -> int:
    first = _acts(home, "profile", "log", "balanced").splitlines()[0]
    return int(first.split(": ")[1].split(" versions")[0])


def test_a_valid_profile_edit_shows_in_acts_profile_log_with_author_and_reason(server: str, browser, home: Path) -> None:  # type: ignore[no-untyped-def]
    before = _versions(home)
    context, page = _open(browser, server, "profiles")
    try:
        _edit(page, "5", "carol", "fewer positions from the console")
        page.get_by_text(f"committed balanced@v{before + 1}#").wait_for()
    finally:
        context.close()
    log = _acts(home, "profile", "log", "balanced")
    assert _versions(home) == before + 1
    assert f"v{before + 1}  " in log and "  carol  " in log and "reason: fewer positions from the console" in log
    assert "max_concurrent_positions: " in log and "-> 5" in log


def test_an_out_of_bound_edit_is_refused_with_field_bound_and_value_and_no_new_version(server: str, browser, home: Path) -> None:  # type: ignore[no-untyped-def]
    before = _versions(home)
    context, page = _open(browser, server, "profiles")
    try:
        _edit(page, "31", "dave", "past the widget")
        # Streamlit draws "<=" in markdown as "≤"; the message is the store's otherwise.
        page.get_by_text(re.compile("'max_concurrent_positions' must be (<=|≤) 30, was 31")).wait_for()
        _settle(page)
    finally:
        context.close()
    assert _versions(home) == before


def test_a_stale_edit_from_a_second_browser_context_is_refused_and_the_newer_version_shown(server: str, browser, home: Path) -> None:  # type: ignore[no-untyped-def]
    before = _versions(home)
    first, page_a = _open(browser, server, "profiles")
    second, page_b = _open(browser, server, "profiles")
    try:
        _edit(page_a, "3", "erin", "first edit")
        page_a.get_by_text(f"committed balanced@v{before + 1}#").wait_for()
        _edit(page_b, "7", "frank", "second edit")
        page_b.get_by_text(f"edit based on v{before} is stale: the latest is v{before + 1}").wait_for()
        page_b.get_by_text(f"the latest version is v{before + 1}").wait_for()
    finally:
        first.close()
        second.close()
    assert _versions(home) == before + 1
    assert "reason: second edit" not in _acts(home, "profile", "log", "balanced")


def test_screenshot_script_writes_one_picture_per_page(server: str, tmp_path: Path) -> None:
    # Its own thread: Playwright's sync API runs one event loop per thread, and the module's browser holds this one.
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("code", main(["--url", server, "--out", str(tmp_path / "shots")])))
    worker.start()
    worker.join(timeout=600)
    assert result["code"] == 0
    shots = sorted(p.name for p in (tmp_path / "shots").glob("*.png"))
    assert shots == sorted(f"{m.SLUG}.png" for m in discover())
    assert all((tmp_path / "shots" / name).stat().st_size > 10_000 for name in shots)


def test_screenshot_script_runs_as_a_module_and_explains_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    argv = sys.argv
    sys.argv = ["console_screenshots", "--help"]
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_module("scripts.console_screenshots", run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code == 0
    assert "--url" in capsys.readouterr().out
