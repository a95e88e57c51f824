"""Uploaded files onto local disk, within the size limit, before anything is stored."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def copy_upload(upload, target: Path) -> int:
    """Write an uploaded file to ``target`` chunk by chunk; return its size.

    Raises ``ValidationError`` once it passes ``CONDENSE_MAX_UPLOAD_BYTES``.
    """
    size = 0
    with open(target, "wb") as handle:
        for chunk in upload.chunks():
            size += len(chunk)
            if size > settings.CONDENSE_MAX_UPLOAD_BYTES:
                raise ValidationError(f"the file is larger than the {settings.CONDENSE_MAX_UPLOAD_BYTES} byte limit")
            handle.write(chunk)
    return size
