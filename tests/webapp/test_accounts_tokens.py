"""API tokens: issued by POST /api/v1/auth/token/ and the tokens page, stored as digests, expiring, revocable."""

from __future__ import annotations

import hashlib
import importlib
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from webapp.accounts import services
from webapp.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def _with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_the_token_endpoint_returns_a_key_that_expires_after_the_default_ttl(user, settings):
    settings.CONDENSE_TOKEN_TTL_DAYS = 90
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "wonderland-42"})
    assert response.status_code == 200 and set(response.json()) == {"token", "expires_at"}
    key = response.json()["token"]
    token = ApiToken.objects.get()
    assert token.owner == user and token.name == "API sign-in"
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() and key.startswith(token.prefix)
    assert key not in {token.name, token.digest, token.prefix}  # only the digest is stored
    assert abs(token.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    assert response.json()["expires_at"].startswith(token.expires_at.strftime("%Y-%m-%dT%H:%M"))
    assert _with_key(key).get("/api/v1/models/").status_code == 200


def test_a_ttl_of_0_means_tokens_never_expire(user, settings):
    settings.CONDENSE_TOKEN_TTL_DAYS = 0
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "wonderland-42",
                                                          "name": "nightly CI"})
    assert response.json()["expires_at"] is None
    assert ApiToken.objects.get().name == "nightly CI"


def test_the_token_endpoint_names_missing_fields(db):
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice"})
    assert response.status_code == 400 and "password" in response.json()
    assert ApiToken.objects.count() == 0


@pytest.mark.parametrize("header, message", [
    ("Token cnd_not-a-key", "This API token is not valid."),
    ("Token two parts", "The Authorization header must be 'Token <key>'"),
])
def test_unknown_keys_are_refused_with_a_sentence(db, header, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/models/")
    assert response.status_code == 401 and message in response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"


def test_an_expired_token_is_refused_with_a_sentence(user):
    token, key = services.api_token_create(owner=user, name="old", expires_in_days=7,
                                           now=timezone.now() - timedelta(days=8))
    response = _with_key(key).get("/api/v1/models/")
    assert response.status_code == 401
    assert response.json()["detail"] == (
        f"This API token ({token.prefix}…) expired on {token.expires_at:%Y-%m-%d %H:%M} UTC: "
        "create a new one on the API tokens page (/account/tokens/).")


def test_a_revoked_token_is_refused_with_a_sentence(user, api):
    token, key = services.api_token_create(owner=user, name="laptop", expires_in_days=30)
    assert _with_key(key).get("/api/v1/models/").status_code == 200
    assert api.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
    response = _with_key(key).get("/api/v1/models/")
    assert response.status_code == 401
    assert re.fullmatch(r"This API token \(cnd_.{8}…\) was revoked on \d{4}-\d\d-\d\d \d\d:\d\d UTC: create a new "
                        r"one on the API tokens page \(/account/tokens/\)\.", response.json()["detail"])


def test_a_disabled_account_s_tokens_are_refused(user):
    _, key = services.api_token_create(owner=user, name="x", expires_in_days=None)
    user.is_active = False
    user.save()
    response = _with_key(key).get("/api/v1/models/")
    assert response.status_code == 401 and response.json()["detail"] == "The account of this API token is disabled."


def test_last_used_is_recorded_at_most_once_a_minute(user):
    token, key = services.api_token_create(owner=user, name="x", expires_in_days=None)
    assert token.last_used_at is None
    client = _with_key(key)
    assert client.get("/api/v1/auth/tokens/").status_code == 200
    first = ApiToken.objects.get().last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=10)
    assert client.get("/api/v1/auth/tokens/").status_code == 200
    assert ApiToken.objects.get().last_used_at == first  # within the minute: not written again

    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    assert client.get("/api/v1/auth/tokens/").status_code == 200
    assert ApiToken.objects.get().last_used_at > first


def test_a_use_within_the_minute_writes_nothing(user, django_assert_num_queries):
    token, key = services.api_token_create(owner=user, name="x", expires_in_days=None)
    services.api_token_mark_used(token=token)
    fresh = ApiToken.objects.get()
    with django_assert_num_queries(0):
        services.api_token_mark_used(token=fresh)
    fresh.last_used_at -= timedelta(minutes=2)
    with django_assert_num_queries(1):  # one UPDATE of last_used_at, not a save of the row
        services.api_token_mark_used(token=fresh)


def test_the_token_list_shows_own_tokens_without_keys(user, other_user, api, other_api):
    mine, _ = services.api_token_create(owner=user, name="mine", expires_in_days=30)
    theirs, _ = services.api_token_create(owner=other_user, name="theirs", expires_in_days=30)
    listed = api.get("/api/v1/auth/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["mine"]
    assert set(listed[0]) == {"id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at",
                              "state"}
    assert listed[0]["state"] == "active" and listed[0]["prefix"] == mine.prefix
    assert [t["name"] for t in other_api.get("/api/v1/auth/tokens/").json()["results"]] == ["theirs"]


def test_another_users_token_cannot_be_revoked(user, other_user, other_api):
    token, key = services.api_token_create(owner=user, name="mine", expires_in_days=30)
    assert other_api.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 404
    assert ApiToken.objects.get().revoked_at is None
    assert _with_key(key).get("/api/v1/models/").status_code == 200


def test_the_token_endpoints_need_a_signed_in_user(db):
    assert APIClient().get("/api/v1/auth/tokens/").status_code == 401
    assert APIClient().delete("/api/v1/auth/tokens/1/").status_code == 401


@pytest.mark.parametrize("name, days, message", [
    ("", 30, "name: give the token a name"),
    ("x" * 101, 30, "name: at most 100 characters"),
    ("ok", 0, "expires_in_days: from 1 to 3650 days"),
])
def test_token_create_refuses_bad_input_and_leaves_nothing(user, name, days, message):
    from django.core.exceptions import ValidationError  # only this test needs it

    with pytest.raises(ValidationError, match=message):
        services.api_token_create(owner=user, name=name, expires_in_days=days)
    assert ApiToken.objects.count() == 0


# -- the tokens page -------------------------------------------------------------------------------------------

def test_the_tokens_page_needs_a_signed_in_user(client):
    response = client.get("/account/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_the_nav_links_the_tokens_page(client_in):
    assert 'href="/account/tokens/" id="nav-tokens"' in client_in.get("/").content.decode()


def test_creating_a_token_shows_its_key_once(client_in, user):
    response = client_in.post("/account/tokens/", {"name": "laptop", "expires_in": "30"})
    html = response.content.decode()
    assert response.status_code == 200 and response["Cache-Control"].startswith("max-age=0")
    key = re.search(r'id="new-token-key">([^<]+)<', html).group(1)
    token = ApiToken.objects.get()
    assert token.name == "laptop" and token.digest == hashlib.sha256(key.encode()).hexdigest()
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert 'id="copy-token"' in html
    again = client_in.get("/account/tokens/").content.decode()
    assert key not in again and token.prefix in again and 'data-state="active"' in again
    assert _with_key(key).get("/api/v1/models/").status_code == 200


def test_a_token_that_never_expires(client_in):
    client_in.post("/account/tokens/", {"name": "forever", "expires_in": "never"})
    assert ApiToken.objects.get().expires_at is None


@pytest.mark.parametrize("data, field", [({"name": "", "expires_in": "30"}, "name"),
                                         ({"name": "x", "expires_in": "1000"}, "expires_in")])
def test_the_token_form_names_the_bad_field_and_creates_nothing(client_in, data, field):
    response = client_in.post("/account/tokens/", data)
    html = response.content.decode()
    assert response.status_code == 200 and f'id="field-{field}"' in html
    assert re.search(rf'id="field-{field}">.*?class="field-error"', html, re.S)
    assert ApiToken.objects.count() == 0 and "new-token-key" not in html


def test_the_page_shows_states_and_revokes(client_in, user):
    active, key = services.api_token_create(owner=user, name="active one", expires_in_days=30)
    expired, _ = services.api_token_create(owner=user, name="expired one", expires_in_days=1,
                                           now=timezone.now() - timedelta(days=2))
    html = client_in.get("/account/tokens/").content.decode()
    assert f'id="token-{active.pk}" data-token-id="{active.pk}" data-state="active"' in html
    assert f'data-token-id="{expired.pk}" data-state="expired"' in html
    assert f'id="revoke-token-{active.pk}"' in html and f'id="revoke-token-{expired.pk}"' not in html
    assert 'data-confirm="Revoke the token' in html

    assert client_in.get(f"/account/tokens/{active.pk}/revoke/").status_code == 405  # a POST, not a link
    response = client_in.post(f"/account/tokens/{active.pk}/revoke/", follow=True)
    assert response.status_code == 200 and "revoked: requests with it are refused" in response.content.decode()
    assert f'data-token-id="{active.pk}" data-state="revoked"' in response.content.decode()
    assert _with_key(key).get("/api/v1/models/").status_code == 401


def test_other_users_tokens_are_neither_shown_nor_revocable(client, user, other_user):
    theirs, key = services.api_token_create(owner=other_user, name="bob's", expires_in_days=30)
    client.force_login(user)
    assert "bob&#x27;s" not in client.get("/account/tokens/").content.decode()
    assert client.post(f"/account/tokens/{theirs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get().revoked_at is None


def test_revoking_needs_the_csrf_token(user):
    from django.test import Client  # a client that enforces CSRF, as browsers meet it

    token, _ = services.api_token_create(owner=user, name="x", expires_in_days=30)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.get().revoked_at is None


# -- upgrade from rest_framework.authtoken ---------------------------------------------------------------------

def test_the_data_migration_keeps_old_authtoken_keys_working(user):
    from django.apps import apps  # the migration takes the app registry as its first argument

    migration = importlib.import_module("webapp.accounts.migrations.0002_copy_authtoken_keys")
    old_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {migration.OLD_TABLE} ({connection.ops.quote_name('key')} varchar(40) "
                       "PRIMARY KEY, created timestamp NOT NULL, user_id integer NOT NULL)")
        cursor.execute(f"INSERT INTO {migration.OLD_TABLE} VALUES (%s, %s, %s)",
                       [old_key, timezone.now() - timedelta(days=400), user.pk])
    try:
        migration.copy_authtoken_keys(apps, SimpleNamespace(connection=connection))
        migration.copy_authtoken_keys(apps, SimpleNamespace(connection=connection))  # twice: still one token
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {migration.OLD_TABLE}")
    token = ApiToken.objects.get()
    assert token.owner == user and token.prefix == old_key[:8] and token.expires_at is None
    assert token.digest == hashlib.sha256(old_key.encode()).hexdigest()
    assert timezone.now() - token.created_at > timedelta(days=399)
    assert _with_key(old_key).get("/api/v1/models/").status_code == 200
