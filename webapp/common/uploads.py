"""Uploaded files onto local disk, within the size limit, before anything is stored."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def copy_upload(upload, target: Path, limit: int | None = None) -> int:
    """Write an uploaded file to ``target`` chunk by chunk; return its size.

    Raises ``ValidationError`` once it passes ``limit`` bytes
    (``CONDENSE_MAX_UPLOAD_BYTES`` by default; callers copying several parts
    of one upload pass what is left of it).
    """
    limit = settings.CONDENSE_MAX_UPLOAD_BYTES if limit is None else limit
    size = 0
    with open(target, "wb") as handle:
        for chunk in upload.chunks():
            size += len(chunk)
            if size > limit:
                raise ValidationError(f"the upload is larger than the {settings.CONDENSE_MAX_UPLOAD_BYTES} byte limit")
            handle.write(chunk)
    return size
