"""Files in Django's default storage (settings.STORAGES["default"]): local disk, or an S3-compatible store.

Every read and write of uploads and job artifacts goes through these functions, so the web host and the
workers need no shared disk: a worker fetches its inputs into a local folder and pushes its results back.
Nothing here reads a whole file into memory.

Example::

    name = storage_push(Path("/tmp/out/model.onnx"), "jobs/7/model.onnx")   # atomic: whole or absent
    local = storage_fetch(name, Path("/tmp/work/model.onnx"))                # streamed to disk
    response = storage_download_response(name, "job7-model.onnx")            # streamed, or a pre-signed redirect
    storage_delete_prefix("jobs/7")
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header

#: Bytes per read or write when copying: large files pass through in pieces of this size.
CHUNK_BYTES = 1024 * 1024
#: Where a local push writes before its rename: inside the storage root (same filesystem, so the rename is
#: atomic) but outside every prefix the application lists or serves.
PARTIAL_FOLDER = ".partial"


def _s3_object(name: str):
    """The boto3 Object behind ``name`` when the storage is S3 (django-storages), else None.

    Raises ``FileNotFoundError`` when the object does not exist.
    """
    if not hasattr(default_storage, "bucket"):
        return None
    # S3File.obj is the object itself; opening it only checks it exists (a HEAD), it downloads nothing.
    return default_storage.open(name, "rb").obj


def storage_fetch(name: str, target: Path) -> Path:
    """Copy the stored file ``name`` to the local file ``target`` in chunks (parents created); return ``target``.

    Raises ``FileNotFoundError`` when nothing is stored under ``name``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    s3_object = _s3_object(name)
    if s3_object is not None:
        s3_object.download_file(str(target), Config=default_storage.transfer_config)
        return target
    with default_storage.open(name, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
    return target


def storage_push(path: Path, name: str) -> str:
    """Store the local file ``path`` as ``name``, replacing what was there; return the stored name.

    Readers see the old file or the whole new one, never part of it: on local disk the copy goes to a
    partial file that is renamed into place; on S3 the object appears only once its upload (one PUT, or a
    multipart upload) completes.
    """
    if isinstance(default_storage, FileSystemStorage):
        final = Path(default_storage.path(name))
        partial_folder = Path(default_storage.path(PARTIAL_FOLDER))
        partial_folder.mkdir(parents=True, exist_ok=True)
        partial = partial_folder / f"{uuid.uuid4().hex}-{final.name}"
        try:
            with open(path, "rb") as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return name
    if default_storage.get_available_name(name) != name:
        # S3 (file_overwrite) replaces in place; a store that would save beside the old file removes it first.
        default_storage.delete(name)
    with open(path, "rb") as handle:
        return default_storage.save(name, File(handle, name=posixpath.basename(name)))


def storage_delete_prefix(prefix: str) -> None:
    """Delete every file stored under the folder ``prefix`` (e.g. ``"jobs/7"``); nothing there is fine."""
    prefix = prefix.strip("/")
    if not prefix:
        raise ValueError("refusing to delete the whole storage: give a folder prefix")
    if isinstance(default_storage, FileSystemStorage):
        shutil.rmtree(default_storage.path(prefix), ignore_errors=True)
        return
    folders, files = default_storage.listdir(prefix)
    for file_name in files:
        default_storage.delete(f"{prefix}/{file_name}")
    for folder in folders:
        storage_delete_prefix(f"{prefix}/{folder}")


def storage_exists(name: str) -> bool:
    """Whether a file is stored under ``name``."""
    return default_storage.exists(name)


def storage_delete(name: str) -> None:
    """Delete the file ``name``; nothing there is fine."""
    default_storage.delete(name)


def storage_download_response(name: str, filename: str):
    """A response that sends the stored file ``name`` as the attachment ``filename``, a chunk at a time.

    With ``CONDENSE_S3_PRESIGNED_DOWNLOADS`` on and an S3 store, a redirect to a short-lived pre-signed URL
    instead, so the bytes bypass the web server. Raises ``FileNotFoundError`` when nothing is stored there.
    """
    s3_object = _s3_object(name)
    if s3_object is None:
        response = FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename)
        response.block_size = CHUNK_BYTES  # read lazily, per chunk, when the server sends the body
        return response
    disposition = content_disposition_header(True, filename)
    if settings.CONDENSE_S3_PRESIGNED_DOWNLOADS:
        return HttpResponseRedirect(default_storage.url(name, parameters={"ResponseContentDisposition": disposition}))
    response = StreamingHttpResponse(_chunks(s3_object.get()["Body"]), content_type="application/octet-stream")
    response["Content-Length"] = str(s3_object.content_length)
    response["Content-Disposition"] = disposition
    return response


def _chunks(body):
    # A generator: the response closes it when the server is done, which releases the connection to the store.
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
