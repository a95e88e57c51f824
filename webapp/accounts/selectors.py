"""Reads: a user's API tokens, and the token for a presented key."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from .models import ApiToken


def api_token_list(*, user) -> QuerySet[ApiToken]:
    """``user``'s tokens, newest first (revoked and expired ones included, to be seen)."""
    return ApiToken.objects.filter(owner=user)


def api_token_get(*, user, token_id: int) -> ApiToken:
    """One of ``user``'s tokens; another user's token is a 404, as if it did not exist."""
    token = ApiToken.objects.filter(owner=user, pk=token_id).first()
    if token is None:
        raise Http404("No such API token.")
    return token


def api_token_for_digest(*, digest: str) -> ApiToken | None:
    """The token whose key has this SHA-256 digest, with its owner, or ``None``."""
    return ApiToken.objects.select_related("owner").filter(digest=digest).first()
