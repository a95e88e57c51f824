"""The client address a request came from, as the sign-in lock-out counts it."""

from django.conf import settings


def client_address(request) -> str:
    """``REMOTE_ADDR``, or behind ``CONDENSE_NUM_PROXIES`` trusted proxies the address the outermost one saw
    (the entry that many places from the right of ``X-Forwarded-For``; the entries left of it are the client's
    say and could be forged)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.CONDENSE_NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return remote
