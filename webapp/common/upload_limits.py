"""The upload size limit, enforced while the request body is read, not after it has been spooled.

A request that declares a body over the limit (``Content-Length``) is answered 413 before a byte of it is
read; one whose file parts pass the limit as they arrive (a lying or absent ``Content-Length``) is cut off
at the limit by :class:`LimitedUploadHandler`, and answered 413 too. Nothing of it reaches storage, and
the view never runs.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpResponse
from django.utils.html import escape

#: Where the refusal is noted on the request, for the middleware to answer with it.
REFUSAL_ATTRIBUTE = "condense_upload_refused"


class UploadTooLarge(RequestDataTooBig):
    """Raised mid-body: stops the parser (and the view) at the limit."""


def _mb(size: int) -> str:
    return f"{size / 1024**2:,.1f} MB"


def upload_limit_message(received: int | None = None) -> str:
    limit = settings.CONDENSE_MAX_UPLOAD_BYTES
    seen = f"this request sends {_mb(received)}, " if received else ""
    return (f"file: the upload is over the {_mb(limit)} limit ({seen}CONDENSE_MAX_UPLOAD_BYTES); "
            "send a smaller file, or ask the operator to raise the limit")


class LimitedUploadHandler(FileUploadHandler):
    """First of the upload handlers: counts the bytes of every file part and stops the request past the limit;
    below it, passes each chunk on unchanged to the handlers that write it."""

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.CONDENSE_MAX_UPLOAD_BYTES:
            setattr(self.request, REFUSAL_ATTRIBUTE, upload_limit_message())
            raise UploadTooLarge("upload over CONDENSE_MAX_UPLOAD_BYTES")
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handler builds the file


class UploadSizeLimitMiddleware:
    """Refuses oversized bodies by their declared length, and answers 413 for those the handler cut off."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        # The form fields beside the file may add up to DATA_UPLOAD_MAX_MEMORY_SIZE.
        if declared > settings.CONDENSE_MAX_UPLOAD_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return self._refusal(request, upload_limit_message(declared))
        request.upload_handlers.insert(0, LimitedUploadHandler(request))
        response = self.get_response(request)
        refused = getattr(request, REFUSAL_ATTRIBUTE, None)
        return self._refusal(request, refused) if refused else response

    @staticmethod
    def _refusal(request, message: str) -> HttpResponse:
        if request.path.startswith("/api/") or "application/json" in request.META.get("HTTP_ACCEPT", ""):
            response = HttpResponse(json.dumps({"detail": message}), status=413, content_type="application/json")
        else:
            response = HttpResponse(
                f"<!doctype html><title>Upload too large</title><h1>Upload too large</h1><p>{escape(message)}</p>"
                "<p><a href=\"javascript:history.back()\">Back</a></p>", status=413)
        return response
