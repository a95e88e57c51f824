"""Turn service-layer errors into DRF responses with a readable message."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.views import exception_handler


class ServiceConflict(Exception):
    """The request is valid but the resource's state forbids it (HTTP 409)."""


def api_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        messages = exc.messages
        exc = exceptions.ValidationError({"detail": "; ".join(messages)})
    elif isinstance(exc, ServiceConflict):
        exc = exceptions.APIException(str(exc))
        exc.status_code = 409
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    return exception_handler(exc, context)
