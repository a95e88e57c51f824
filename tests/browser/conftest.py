"""Chromium through Playwright's sync API, for the dashboard's end-to-end tests.

Needs the system Chromium (``apt-get install -y chromium``); tests are skipped
with a clear reason when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CONDENSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def chromium():
    # CI sets CONDENSE_REQUIRE_BROWSER so a missing browser fails rather than skips.
    unavailable = pytest.fail if os.environ.get("CONDENSE_REQUIRE_BROWSER") else pytest.skip
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: install Chromium (apt-get install -y chromium) to run browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package is not installed")
    # Playwright's sync API keeps an event loop in this thread; Django would
    # then refuse ORM calls from the test (and pytest-django's own flush).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium, live_server):
    """A fresh browser context (own cookies) on the live server; console errors
    and failed same-origin requests are collected on ``page.problems``."""
    context = chromium.new_context(base_url=live_server.url, accept_downloads=True,
                                   viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(f"console: {msg.text}"))
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: req.url.startswith(live_server.url)
            and page.problems.append(f"request failed: {req.url} {req.failure}"))
    yield page
    context.close()


@pytest.fixture
def sign_in(page, live_server):
    """``sign_in(path="/")``: open ``path``, which sends the browser to the login page, sign in as alice (the
    ``user`` fixture) and land back on ``path``."""

    def sign_in(path: str = "/") -> None:
        page.goto(path)
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "alice")
        page.fill("#id_password", "wonderland-42")
        page.click("#login-button")
        page.wait_for_url(f"{live_server.url}{path}")
        assert page.inner_text(".user-name") == "alice"

    return sign_in
