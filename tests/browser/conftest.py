"""Fixtures of the browser tests: Debian's chromium under Playwright, and Voila servers.

Fixtures
--------
chromium_browser
    Package-scoped Playwright ``Browser`` (closed after tests/browser, see the fixture): Debian's ``/usr/bin/chromium`` launched headless with
    ``--headless=new --no-sandbox --disable-gpu`` (DESIGN.md §6). Skips the test, saying why, only
    when chromium is not installed (``scripts/bootstrap.sh`` installs it). Never downloads a browser.
voila_server
    ``voila_server(notebook_path) -> url``: starts ``voila --template=medimg`` (the offline
    template, found through ``JUPYTER_PATH``) on a free 127.0.0.1 port and waits until it
    listens; every server started is stopped (its whole process group) after the test, pass or
    fail. Its log is ``tests/artifacts/voila-<notebook>.log``.
page
    A fresh 1400×900 page of ``chromium_browser``, closed after the test.

Helpers (import from ``tests.browser.harness``): ``save_screenshot(page, name)`` writes
``tests/artifacts/<name>.png``; ``record_requests`` / ``external_requests`` check that a page
reached nothing but the loopback server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser.harness import ARTIFACTS, VoilaServer, chromium_executable, launch_chromium

pytest.importorskip("playwright", reason="pip package playwright is not installed (requirements.lock)")
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="package")
def chromium_browser() -> Iterator[Browser]:
    # Package scope, not session: Playwright's sync API runs an event loop in the main thread while
    # it is open, and later tests that call asyncio.run() (tests/hub) must not find one running.
    if chromium_executable() is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium, or scripts/bootstrap.sh)")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def voila_server() -> Iterator[Callable[[Path], str]]:
    servers: list[VoilaServer] = []

    def start(notebook: Path) -> str:
        server = VoilaServer(notebook, ARTIFACTS / f"voila-{Path(notebook).stem}.log")
        servers.append(server)
        return server.start().url

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
