"""Turn service-layer errors into DRF responses with a readable message.

Every error body is JSON: ``{"detail": "..."}``, or for bad input the fields that are wrong with their
messages (webapp/api/schema.py documents both for each operation).
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
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
    elif isinstance(exc, RequestDataTooBig):
        # Django raises it while DRF reads the body; unhandled it is an HTML 400 page.
        exc = exceptions.APIException(f"the request body (files aside) is larger than the "
                                      f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes the server accepts")
        exc.status_code = 413
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ValidationError({"detail": f"the request has more than "
                                                    f"{settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields"})
    return exception_handler(exc, context)
