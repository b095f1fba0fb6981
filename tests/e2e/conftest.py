"""Browser tests of the dashboard: Debian's headless Chromium, driven by Playwright, against
one `perdure dev` process on the research agent demo (with an API key, so the key prompt
is real). Each test has its own browser context, with the key already given, and fails
on any error the page's scripts raise."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.e2e.dashboard import API_KEY, CHROMIUM, CHROMIUM_ARGS, STORAGE_KEY, DevServer

TIMEOUT_MS = 15_000  # any one wait for the page, whatever goes wrong


# Package scope, not session: Playwright's sync API keeps an event loop of its own running
# on this thread while it is open, which would break every asyncio test run after these.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium): the browser tests did not run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"!!!!! {message} !!!!!")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def server(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    dev = DevServer(tmp_path_factory.mktemp("dashboard")).start()
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture
def page(browser: Browser, server: DevServer) -> Iterator[Page]:
    """A page in a fresh browser context that already holds the API key."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(
        f"localStorage.setItem({json.dumps(STORAGE_KEY)}, {json.dumps(API_KEY)})"
    )
    opened = context.new_page()
    errors = script_errors(opened)
    yield opened
    context.close()
    assert not errors, f"the page's scripts failed: {errors}"


def script_errors(page: Page) -> list[str]:
    """Errors the page's scripts raise or log, as they happen. A refused request (401)
    is logged by the browser itself and is the key prompt's business."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "401" not in message.text:
            errors.append(message.text)

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", on_console)
    return errors
