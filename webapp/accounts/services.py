"""Writes: sign-in attempts counted against a lock-out, API tokens issued and revoked.

The lock-out is shared by the login page and ``POST /api/v1/auth/token/``: both call
:func:`sign_in`. Counts live in the database (one row per username and per client address, updated
under ``select_for_update``), so several web processes agree on them.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import ApiToken, SignInFailureCount

TOKEN_KEY_PREFIX = "cnd_"
VISIBLE_PREFIX_LENGTH = 12  # "cnd_" and 8 random characters: enough to tell tokens apart, useless to guess
NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length


@dataclass
class SignInLocked(Exception):
    """Sign-in refused without checking the password: too many recent failures for the username or address."""

    scope: str  # SignInFailureCount.Scope
    locked_until: datetime

    def retry_after_s(self, now: datetime | None = None) -> int:
        return max(1, math.ceil((self.locked_until - (now or timezone.now())).total_seconds()))

    def retry_after_minutes(self, now: datetime | None = None) -> int:
        return max(1, math.ceil(self.retry_after_s(now) / 60))

    def message(self, now: datetime | None = None) -> str:
        minutes = self.retry_after_minutes(now)
        wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
        until = timezone.localtime(self.locked_until).strftime("%H:%M %Z")
        if self.scope == SignInFailureCount.Scope.ADDRESS:
            return (f"Too many failed sign-ins from your network address: sign-in from it is temporarily locked. "
                    f"Try again in {wait} (after {until}).")
        return (f"Too many failed sign-ins for this account: it is temporarily locked. "
                f"Try again in {wait} (after {until}).")

    def __str__(self) -> str:
        return self.message()


def _username_key(username: str) -> str:
    # Case-folded: "Alice" and "alice" share one count, whichever the authentication backend accepts.
    return username.casefold()[:150]


def _caps() -> dict[str, int]:
    return {SignInFailureCount.Scope.USERNAME: settings.CONDENSE_LOGIN_MAX_FAILURES,
            SignInFailureCount.Scope.ADDRESS: settings.CONDENSE_LOGIN_MAX_FAILURES_PER_ADDRESS}


def _keys(username: str, address: str) -> list[tuple[str, str]]:
    keys = [(SignInFailureCount.Scope.USERNAME, _username_key(username))]
    if address:
        keys.append((SignInFailureCount.Scope.ADDRESS, address[:150]))
    return keys


def _active_lock(keys: list[tuple[str, str]], now: datetime) -> SignInLocked | None:
    condition = Q()
    for scope, key in keys:
        condition |= Q(scope=scope, key=key)
    lock = (SignInFailureCount.objects.filter(condition, locked_until__gt=now)
            .order_by("-locked_until").values_list("scope", "locked_until").first())
    return SignInLocked(scope=lock[0], locked_until=lock[1]) if lock else None


def _record_failure(keys: list[tuple[str, str]], now: datetime) -> SignInLocked | None:
    window = timedelta(seconds=settings.CONDENSE_LOGIN_LOCKOUT_S)
    caps = _caps()
    locks = []
    with transaction.atomic():
        for scope, key in keys:
            row, created = SignInFailureCount.objects.select_for_update().get_or_create(
                scope=scope, key=key, defaults={"failures": 1, "window_started_at": now})
            if not created:
                if row.window_started_at <= now - window:
                    row.failures, row.window_started_at, row.locked_until = 1, now, None
                else:
                    row.failures += 1
            if row.failures >= caps[scope]:
                row.locked_until = now + window
                locks.append(SignInLocked(scope=scope, locked_until=row.locked_until))
            if not created or row.locked_until:
                row.save(update_fields=["failures", "window_started_at", "locked_until"])
        # Rows whose window and lock are over count for nothing: kept out so guessed names do not pile up.
        SignInFailureCount.objects.filter(window_started_at__lte=now - window).filter(
            Q(locked_until__isnull=True) | Q(locked_until__lte=now)).delete()
    return max(locks, key=lambda lock: lock.locked_until) if locks else None


def sign_in(*, username: str, password: str, address: str = "", request=None, now: datetime | None = None):
    """The user for ``username`` and ``password``, or ``None`` when they do not match an active account.

    Raises :class:`SignInLocked` without checking the password while the username or the client
    ``address`` is locked, and when this failure reaches a cap. A success clears the username's count
    (not the address's: a guesser with an account of their own must not reset it).

    Example::

        >>> user = sign_in(username="alice", password="wonderland-42", address="203.0.113.7")
    """
    now = now or timezone.now()
    keys = _keys(username, address)
    lock = _active_lock(keys, now)
    if lock:
        raise lock
    user = authenticate(request, username=username, password=password)
    if user is None:
        lock = _record_failure(keys, now)
        if lock:
            raise lock
        return None
    SignInFailureCount.objects.filter(scope=SignInFailureCount.Scope.USERNAME, key=_username_key(username)).delete()
    return user


# -- API tokens -------------------------------------------------------------------------------------------------

def token_digest(key: str) -> str:
    """The SHA-256 hex digest stored for ``key`` (keys are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def default_token_ttl_days() -> int | None:
    """``CONDENSE_TOKEN_TTL_DAYS``; ``None`` when it is 0 (tokens never expire)."""
    return settings.CONDENSE_TOKEN_TTL_DAYS or None


def api_token_create(*, owner, name: str, expires_in_days: int | None,
                     now: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for ``owner`` and its key, which is not stored and cannot be shown again.

    ``expires_in_days=None``: the token never expires.

    Example::

        >>> token, key = api_token_create(owner=user, name="CI", expires_in_days=30)
        >>> key.startswith(token.prefix)
        True
    """
    name = (name or "").strip()
    if not name:
        raise ValidationError("name: give the token a name (what uses it).")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(f"name: at most {NAME_MAX_LENGTH} characters.")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise ValidationError("expires_in_days: from 1 to 3650 days, or none for a token that never expires.")
    now = now or timezone.now()
    key = TOKEN_KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        owner=owner, name=name, digest=token_digest(key), prefix=key[:VISIBLE_PREFIX_LENGTH], created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days is not None else None)
    return token, key


def api_token_revoke(*, token: ApiToken, now: datetime | None = None) -> ApiToken:
    """Revoke ``token`` from now on; revoking it again keeps the first date."""
    now = now or timezone.now()
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    token.refresh_from_db(fields=["revoked_at"])
    return token


LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_mark_used(*, token: ApiToken, now: datetime | None = None) -> None:
    """Record a use of ``token``, at most once a minute: one UPDATE of one column, no write on most requests."""
    now = now or timezone.now()
    if token.last_used_at is not None and token.last_used_at > now - LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)).update(last_used_at=now)
    token.last_used_at = now
