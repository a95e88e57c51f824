"""Sign-in for API clients, and their tokens.

``POST /api/v1/auth/token/`` is throttled per client address (``CONDENSE_AUTH_RATE``) and shares the
login page's lock-out (webapp/accounts/services.py): repeated failures for a username or an address
answer 429 with ``Retry-After`` and a sentence, without the password being checked.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from webapp.accounts import selectors as account_selectors
from webapp.accounts import services as account_services
from webapp.accounts.addresses import client_address

from .schema import BAD_REQUEST, THROTTLED


class SignInLockedError(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked"

    def __init__(self, lock: account_services.SignInLocked):
        super().__init__(lock.message())
        self.wait = lock.retry_after_s()  # DRF's exception handler sends it as Retry-After


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=account_services.NAME_MAX_LENGTH, required=False,
                                 help_text="What will use the token (default: 'API sign-in').")


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The key: send it as 'Authorization: Token <key>'. Shown only here.")
    expires_at = serializers.DateTimeField(allow_null=True)


class ApiTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters, to recognise it; never the key.")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    state = serializers.CharField(help_text="active, expired or revoked")


class TokenObtainView(APIView):
    """``POST username, password`` -> ``{"token": ..., "expires_at": ...}``: a new token that expires after
    ``CONDENSE_TOKEN_TTL_DAYS`` days (never when 0)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(request=TokenRequestSerializer, auth=[],
                   responses={200: TokenOutputSerializer, 400: BAD_REQUEST, 429: THROTTLED})
    def post(self, request):
        form = TokenRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            user = account_services.sign_in(username=data["username"], password=data["password"],
                                            address=client_address(request), request=request._request)
        except account_services.SignInLocked as lock:
            raise SignInLockedError(lock) from None
        if user is None:
            raise exceptions.ValidationError({"detail": "The username and password do not match an active account."})
        token, key = account_services.api_token_create(
            owner=user, name=data.get("name") or "API sign-in",
            expires_in_days=account_services.default_token_ttl_days())
        return Response(TokenOutputSerializer({"token": key, "expires_at": token.expires_at}).data)


class TokenListView(APIView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(account_selectors.api_token_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(ApiTokenSerializer(page, many=True).data)


class TokenDetailView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        account_services.api_token_revoke(
            token=account_selectors.api_token_get(user=request.user, token_id=token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
