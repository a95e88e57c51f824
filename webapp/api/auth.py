"""The token endpoint, throttled: guessing passwords through it costs a minute per handful of tries."""

from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle


class ThrottledObtainAuthToken(ObtainAuthToken):
    """``POST username, password`` -> ``{"token": ...}``; more than ``CONDENSE_AUTH_RATE`` tries from one
    address get a 429 that says when to try again."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"
