"""Errors raised outside DRF's views (a path that matches no route) answer API clients in JSON too."""

from django.http import JsonResponse
from django.views import defaults


def page_not_found(request, exception=None):
    """The project's 404 handler: ``{"detail": "Not found."}`` under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
