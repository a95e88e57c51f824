"""The token endpoint, throttled: guessing passwords through it costs a minute per handful of tries."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle

from .schema import BAD_REQUEST, THROTTLED


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="send it as `Authorization: Token <token>`")


@extend_schema_view(post=extend_schema(
    request=AuthTokenSerializer, auth=[],
    responses={200: TokenSerializer, 400: BAD_REQUEST, 429: THROTTLED},
))
class ThrottledObtainAuthToken(ObtainAuthToken):
    """``POST username, password`` -> ``{"token": ...}``; more than ``CONDENSE_AUTH_RATE`` tries from one
    address get a 429 that says when to try again."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"
