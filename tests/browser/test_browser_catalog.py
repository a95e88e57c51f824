"""In Chromium: the interactive API reference (Swagger UI, ReDoc) renders from this server alone and its "Try it
out" works with the browser's session; the algorithms page lists the algorithms."""

from __future__ import annotations

import pytest

from webapp.accounts.models import ApiToken
from webapp.accounts.services import api_token_create

pytestmark = [pytest.mark.browser]




def _record_requests(page) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def _foreign(urls: list[str], live_server) -> list[str]:
    return [url for url in urls if not url.startswith((live_server.url + "/", "data:", "blob:"))]


def test_swagger_ui_renders_the_operations_and_tries_one_with_the_session(page, live_server, user, sign_in):
    token, _key = api_token_create(owner=user, name="to revoke from the reference", expires_in_days=7)
    urls = _record_requests(page)
    sign_in("/")
    page.click("#nav-api")
    page.wait_for_url(f"{live_server.url}/api/v1/docs/")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/jobs/" in [p.replace("\u200b", "") for p in paths]

    # Try it out: DELETE with the session cookie and the CSRF header the page adds.
    operation = page.locator(".opblock-delete").filter(has_text="/api/v1/auth/tokens/{token_id}/")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator("input[placeholder='token_id']").fill(str(token.pk))
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "204"
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None

    assert urls and not _foreign(urls, live_server), _foreign(urls, live_server)
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in url for url in urls)
    assert not page.problems, page.problems


def test_redoc_renders_from_this_server_alone(page, live_server, user, sign_in):
    """ReDoc's sidebar asks for a logo on cdn.redoc.ly: the page's Content-Security-Policy stops it in the browser."""
    urls = _record_requests(page)
    blocked: list[str] = []
    page.on("requestfailed", lambda request: request.failure == "csp" and blocked.append(request.url))
    sign_in("/")
    response = page.goto("/api/v1/redoc/")
    assert "img-src 'self' data:" in response.headers["content-security-policy"]
    page.wait_for_selector("text=/api/v1/jobs/")
    page.wait_for_load_state("networkidle")
    assert any("/static/drf_spectacular_sidecar/redoc/" in url for url in urls)
    assert _foreign(urls, live_server) == blocked, (_foreign(urls, live_server), blocked)


def test_the_algorithms_page(page, live_server, user, sign_in):
    urls = _record_requests(page)
    sign_in("/")
    page.click("#nav-algorithms")
    page.wait_for_url(f"{live_server.url}/algorithms/")
    page.click("#algorithm-toc a[href='#algo-RandomChannelPruner']")
    section = page.locator("#algo-RandomChannelPruner")
    assert section.is_visible() and "random" in section.locator("[data-field='when-to-use']").inner_text()
    assert section.locator("tr[data-param='seed']").count() == 1
    assert page.locator("section.algorithm").count() >= 20
    assert not _foreign(urls, live_server) and not page.problems, (urls, page.problems)
