"""``Authorization: Token <key>`` for the API, checked against :class:`ApiToken` digests.

The keyword is DRF's, so clients written for ``rest_framework.authtoken`` keep working.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from . import selectors, services

KEYWORD = "Token"


class ApiTokenAuthentication(BaseAuthentication):
    """Refuses unknown, revoked and expired keys with a sentence saying which; records the last use."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "The Authorization header must be 'Token <key>': one key, no spaces in it.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The API token contains characters a key never has.") from None
        token = selectors.api_token_for_digest(digest=services.token_digest(key))
        if token is None:
            raise exceptions.AuthenticationFailed("This API token is not valid.")
        now = timezone.now()
        state = token.state(now)
        if state == "revoked":
            raise exceptions.AuthenticationFailed(
                f"This API token ({token.prefix}…) was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC: "
                "create a new one on the API tokens page (/account/tokens/).")
        if state == "expired":
            raise exceptions.AuthenticationFailed(
                f"This API token ({token.prefix}…) expired on {token.expires_at:%Y-%m-%d %H:%M} UTC: "
                "create a new one on the API tokens page (/account/tokens/).")
        if not token.owner.is_active:
            raise exceptions.AuthenticationFailed("The account of this API token is disabled.")
        services.api_token_mark_used(token=token, now=now)
        return token.owner, token

    def authenticate_header(self, request):
        # A 401 (not a 403) with this challenge tells clients which credentials to send.
        return KEYWORD


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the API schema describes :class:`ApiTokenAuthentication`."""

    target_class = "webapp.accounts.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <key>`: create keys on /account/tokens/ or with POST /api/v1/auth/token/."}
