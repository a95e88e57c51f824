"""In Chromium: sign in, create an API token, see its key once, use it against the live API, revoke it, see the
API refuse it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.browser]


def _api_get(live_server, path: str, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{live_server.url}{path}", headers={"Authorization": f"Token {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_create_use_and_revoke_an_api_token(page, live_server, user):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto("/account/tokens/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wonderland-42")
    page.click("#login-button")
    page.wait_for_url(f"{live_server.url}/account/tokens/")
    assert page.get_attribute("#nav-tokens", "aria-current") == "page"
    assert "No API tokens yet" in page.inner_text("#token-table")

    page.fill("#id_name", "browser test")
    page.select_option("#id_expires_in", "7")
    page.click("#token-submit")
    page.wait_for_selector("#new-token")
    key = page.inner_text("#new-token-key").strip()
    assert key.startswith("cnd_") and len(key) > 40
    page.click("#copy-token")
    page.wait_for_selector("#copy-token-done", state="visible")
    assert page.evaluate("navigator.clipboard.readText()") == key

    row = page.locator("#token-table tbody tr")
    assert row.count() == 1 and row.get_attribute("data-state") == "active"
    assert "browser test" in row.inner_text() and key[:12] in row.inner_text() and key not in row.inner_text()

    status, body = _api_get(live_server, "/api/v1/auth/tokens/", key)
    assert status == 200 and [t["name"] for t in body["results"]] == ["browser test"]
    assert _api_get(live_server, "/api/v1/models/", key)[0] == 200

    # Shown once: the page, loaded again, has the prefix only.
    page.goto("/account/tokens/")
    assert page.locator("#new-token").count() == 0 and key not in page.content()
    assert page.locator("#token-table tbody tr").inner_text().count("never") == 0  # just used: a time, not "never"

    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.click("#token-table button.button-danger")
    page.wait_for_selector("#token-table tbody tr[data-state=revoked]")
    assert dialogs and "Revoke the token \u201cbrowser test\u201d" in dialogs[0]
    assert "revoked: requests with it are refused" in page.inner_text("#messages")

    status, body = _api_get(live_server, "/api/v1/models/", key)
    assert status == 401 and "was revoked on" in body["detail"]
    assert page.problems == []
