"""Sign-in lock-out shared by the login page, the admin's sign-in and POST /api/v1/auth/token/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db.models import F
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from webapp.accounts import services
from webapp.accounts.addresses import client_address
from webapp.accounts.models import SignInFailureCount

pytestmark = pytest.mark.django_db

LOCKED_ACCOUNT = "Too many failed sign-ins for this account: it is temporarily locked. Try again in"
LOCKED_ADDRESS = "Too many failed sign-ins from your network address"


@pytest.fixture(autouse=True)
def _lockout_settings(settings):
    settings.CONDENSE_LOGIN_MAX_FAILURES = 5
    settings.CONDENSE_LOGIN_MAX_FAILURES_PER_ADDRESS = 50
    settings.CONDENSE_LOGIN_LOCKOUT_S = 15 * 60
    cache.clear()  # the token endpoint's DRF throttle counts in the cache
    yield
    cache.clear()


def _login(client, password, username="alice", **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_the_fifth_failure_locks_the_login_page_with_the_minutes_to_wait(client, user):
    for i in range(4):
        page = _login(client, f"guess-{i}")
        assert page.status_code == 200 and "didn&#x27;t match" in page.content.decode()
    page = _login(client, "guess-4")
    text = page.content.decode()
    assert page.status_code == 200 and LOCKED_ACCOUNT in text and "Try again in 15 minutes" in text
    assert 'id="login-error"' in text

    # The right password is refused while locked, and not counted against it.
    page = _login(client, "wonderland-42")
    assert page.status_code == 200 and LOCKED_ACCOUNT in page.content.decode() and not _signed_in(client)
    assert SignInFailureCount.objects.get(scope="username", key="alice").failures == 5


def test_after_the_window_the_right_password_works_and_clears_the_count(client, user):
    for i in range(5):
        _login(client, f"guess-{i}")
    assert LOCKED_ACCOUNT in _login(client, "wonderland-42").content.decode() and not _signed_in(client)
    # Fifteen minutes pass: the stored times move back by the window.
    window = timedelta(minutes=15)
    SignInFailureCount.objects.update(window_started_at=F("window_started_at") - window,
                                      locked_until=F("locked_until") - window)
    response = _login(client, "wonderland-42")
    assert response.status_code == 302 and _signed_in(client)
    assert not SignInFailureCount.objects.filter(scope="username").exists()


def test_a_success_clears_the_usernames_count(client, user):
    for i in range(4):
        _login(client, f"guess-{i}")
    assert _login(client, "wonderland-42").status_code == 302
    client.logout()
    for i in range(4):  # four more: not five in a row, so no lock
        assert "didn&#x27;t match" in _login(client, f"again-{i}").content.decode()
    assert _login(client, "wonderland-42").status_code == 302


def test_unknown_usernames_lock_like_known_ones(client, db):
    for i in range(4):
        _login(client, "x", username="nobody")
    assert LOCKED_ACCOUNT in _login(client, "x", username="nobody").content.decode()


def test_the_username_count_ignores_case(client, user):
    for i, name in enumerate(["alice", "Alice", "ALICE", "aLiCe", "alicE"]):
        page = _login(client, f"guess-{i}", username=name)
    assert LOCKED_ACCOUNT in page.content.decode()


def test_one_address_guessing_many_usernames_is_locked_at_its_own_cap(client, user, settings):
    settings.CONDENSE_LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    for i in range(2):
        assert "didn&#x27;t match" in _login(client, "x", username=f"user{i}", REMOTE_ADDR="10.0.0.9").content.decode()
    page = _login(client, "x", username="user2", REMOTE_ADDR="10.0.0.9")
    assert LOCKED_ADDRESS in page.content.decode() and "Try again in 15 minutes" in page.content.decode()
    # alice's own password from that address: refused; from another address: fine (her count is 0).
    assert LOCKED_ADDRESS in _login(client, "wonderland-42", REMOTE_ADDR="10.0.0.9").content.decode()
    assert _login(client, "wonderland-42", REMOTE_ADDR="10.0.0.10").status_code == 302


def test_the_token_endpoint_locks_with_429_retry_after_and_a_sentence(user):
    api = APIClient()
    answers = [api.post("/api/v1/auth/token/", {"username": "alice", "password": f"guess-{i}"}) for i in range(5)]
    assert [a.status_code for a in answers] == [400, 400, 400, 400, 429]
    assert answers[0].json() == {"detail": "The username and password do not match an active account."}
    locked = api.post("/api/v1/auth/token/", {"username": "alice", "password": "wonderland-42"})
    assert locked.status_code == 429
    assert LOCKED_ACCOUNT in locked.json()["detail"] and "Try again in 15 minutes" in locked.json()["detail"]
    assert 890 <= int(locked["Retry-After"]) <= 900
    assert "token" not in locked.json()


def test_the_login_page_and_the_token_endpoint_share_one_count(client, user):
    for i in range(3):
        _login(client, f"guess-{i}")
    api = APIClient()
    assert api.post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}).status_code == 400
    assert api.post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}).status_code == 429
    assert LOCKED_ACCOUNT in _login(client, "wonderland-42").content.decode()


def test_the_admin_sign_in_shares_the_lock(client, django_user_model):
    django_user_model.objects.create_superuser("root", password="root-password-42")
    for i in range(5):
        page = client.post("/admin/login/?next=/admin/", {"username": "root", "password": f"guess-{i}"})
    assert LOCKED_ACCOUNT in page.content.decode()
    page = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "root-password-42"})
    assert page.status_code == 200 and LOCKED_ACCOUNT in page.content.decode() and not _signed_in(client)


def test_the_window_runs_from_the_first_failure(user):
    """With the service's clock moved by hand: failures spread wider than the window never lock."""
    start = timezone.now()
    window = timedelta(minutes=15)
    for i in range(4):
        assert services.sign_in(username="alice", password="x", now=start + i * timedelta(minutes=1)) is None
    # The fifth failure comes after the window: the count restarts at 1 instead of locking.
    assert services.sign_in(username="alice", password="x", now=start + window + timedelta(seconds=1)) is None
    assert SignInFailureCount.objects.get(scope="username", key="alice").failures == 1

    later = start + window + timedelta(minutes=2)
    for i in range(3):  # with the one above: four failures in this window
        assert services.sign_in(username="alice", password="x", now=later) is None
    with pytest.raises(services.SignInLocked) as locked:
        services.sign_in(username="alice", password="x", now=later)
    assert locked.value.locked_until == later + window
    with pytest.raises(services.SignInLocked):  # the right password, one second before the lock ends
        services.sign_in(username="alice", password="wonderland-42", now=later + window - timedelta(seconds=1))
    assert services.sign_in(username="alice", password="wonderland-42", now=later + window) == user


def test_stale_counts_are_removed(user):
    long_ago = timezone.now() - timedelta(days=1)
    services.sign_in(username="ghost", password="x", address="10.1.1.1", now=long_ago)
    assert SignInFailureCount.objects.count() == 2
    services.sign_in(username="alice", password="x")
    assert list(SignInFailureCount.objects.values_list("key", flat=True)) == ["alice"]


@pytest.mark.parametrize("proxies, forwarded, expected", [
    (0, "198.51.100.1", "10.0.0.1"),  # no trusted proxy: the header is the client's say, ignored
    (1, "198.51.100.1", "198.51.100.1"),
    (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged left part does not move the address
    (2, "6.6.6.6, 198.51.100.1, 10.0.0.5", "198.51.100.1"),
])
def test_client_address_behind_trusted_proxies(settings, proxies, forwarded, expected):
    settings.CONDENSE_NUM_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
