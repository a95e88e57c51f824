"""Writes for uploaded models. A model row exists only if inspection succeeded."""

from __future__ import annotations

import logging
import math
import posixpath
import tempfile
import uuid
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from compression_core.models import ARCHITECTURES
from compression_core.io import consolidate_onnx, detect_format, load_model
from compression_core.jobs import ModelSource, inspect_model

from webapp.common.exceptions import ServiceConflict
from webapp.common.storage import storage_delete, storage_delete_prefix, storage_fetch, storage_push
from webapp.common.uploads import copy_upload

from .models import ModelArtifact

#: Bounds on what a user may declare (a sample's shape, a classifier's classes): beyond them the
#: inspection alone would allocate gigabytes.
MAX_INPUT_DIMS = 6
MAX_CLASSES = 100_000

logger = logging.getLogger(__name__)


def model_source(model: ModelArtifact, workdir: Path) -> ModelSource:
    """The engine's view of a stored model (plain values, no Django objects), its file fetched into ``workdir``.

    Example::

        >>> model_source(model, Path("/tmp/job-7/inputs")).path
        '/tmp/job-7/inputs/model/resnet.onnx'
    """
    path = None
    if model.file:  # a built-in architecture has no file
        path = storage_fetch(model.file.name, workdir / "model" / posixpath.basename(model.file.name))
    return ModelSource(
        path=str(path) if path else None,
        architecture=model.architecture or None,
        num_classes=model.num_classes,
        trusted=settings.CONDENSE_TRUSTED_PICKLES,
    )


def _validate_shape(input_shape) -> list[int] | None:
    if input_shape in (None, "", []):
        return None
    if not isinstance(input_shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape
    ):
        raise ValidationError(f"input_shape must be a list of positive integers without the batch dimension, "
                              f"got {str(input_shape)[:80]}")
    limit = settings.CONDENSE_MAX_INPUT_ELEMENTS
    if len(input_shape) > MAX_INPUT_DIMS or math.prod(input_shape) > limit:
        raise ValidationError(f"input_shape {str(list(input_shape))[:80]} is too large: at most {MAX_INPUT_DIMS} "
                              f"dimensions and {limit} values per sample (CONDENSE_MAX_INPUT_ELEMENTS)")
    return list(input_shape)


def _validate_classes(num_classes) -> int | None:
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise ValidationError(f"num_classes must be between 1 and {MAX_CLASSES}, got {str(num_classes)[:40]}")
    return num_classes


def model_create(
    *,
    owner,
    name: str,
    source: str,
    upload=None,
    data_files=(),
    architecture: str = "",
    num_classes: int | None = None,
    input_shape: list[int] | None = None,
) -> ModelArtifact:
    """Inspect an upload (or a built-in architecture) and store it.

    An ONNX upload is a ``.onnx`` file, or a ``.zip`` holding one ``.onnx``
    and its external-data files; ``data_files`` are those files sent beside a
    ``.onnx`` instead (the API's ``data`` parts). Either way the model is
    stored as one self-contained ``.onnx``. Raises ``ValidationError`` with
    the engine's message for anything that cannot be loaded; then nothing is
    stored.
    """
    input_shape = _validate_shape(input_shape)
    num_classes = _validate_classes(num_classes)
    data_files = list(data_files or [])
    if source == ModelArtifact.Source.ONNX:
        if upload is None:
            raise ValidationError("upload an ONNX file")
        if architecture:
            raise ValidationError("an ONNX model carries its own architecture; leave 'architecture' empty")
    elif source == ModelArtifact.Source.BUILTIN:
        if architecture not in ARCHITECTURES:
            raise ValidationError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if data_files:
            raise ValidationError("external-data files go with an ONNX model (source 'onnx'), not a built-in one")
    else:
        raise ValidationError(f"source must be 'onnx' or 'builtin', got {source!r}")

    with tempfile.TemporaryDirectory(prefix="condense-upload-") as tmp:
        received = Path(tmp) / "received"
        received.mkdir()
        local_path = None
        size = 0
        file_format = ""
        if upload is not None:
            local_path = received / Path(upload.name).name
            size = copy_upload(upload, local_path)
            file_format = detect_format(local_path)
        try:
            if source == ModelArtifact.Source.ONNX:
                local_path = _single_onnx_file(local_path, file_format, data_files, size, Path(tmp) / "model")
                file_format = "onnx"
                size = local_path.stat().st_size
            engine_source = ModelSource(
                path=str(local_path) if local_path else None,
                architecture=architecture or None,
                num_classes=num_classes,
                trusted=False,
            )
            loaded = engine_source.load()
            summary = inspect_model(engine_source, input_shape, model=loaded)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        except (RuntimeError, NotImplementedError, KeyError, IndexError) as exc:
            # The converters raise these on models they cannot handle: still the
            # user's input, so a 400 that says what happened, not a 500.
            logger.exception("model inspection failed")
            raise ValidationError(f"the model could not be loaded: {type(exc).__name__}: {exc}") from exc

        model = ModelArtifact(
            uid=uuid.uuid4(),
            owner=owner,
            name=name or (Path(upload.name).stem if upload else architecture),
            source=source,
            architecture=architecture,
            num_classes=num_classes,
            file_format=file_format or "builtin",
            size_bytes=size,
            input_shape=summary["input_shape"],
            summary=summary,
        )
        if local_path is not None:
            model.file.name = storage_push(local_path, model.file.field.generate_filename(model, local_path.name))
        try:
            model.save()
        except Exception:
            if model.file:
                storage_delete(model.file.name)
            raise
    return model


def _single_onnx_file(upload_path: Path, file_format: str, data_files: list, received: int, folder: Path) -> Path:
    """The upload as one self-contained .onnx in ``folder``: a .onnx (its data files copied beside it first) or a
    zip of them. Raises ``ValueError`` (the engine's sentence) or ``ValidationError``."""
    if file_format == "onnx_zip" or (file_format == "unknown" and zipfile.is_zipfile(upload_path)):
        if data_files:
            raise ValidationError("put the external-data files inside the zip, next to the .onnx, "
                                  "rather than sending them as separate 'data' parts")
        return consolidate_onnx(upload_path, folder / f"{upload_path.stem}.onnx",
                                max_entries=settings.CONDENSE_MODEL_ZIP_MAX_ENTRIES,
                                max_bytes=settings.CONDENSE_MODEL_MAX_UNPACKED_BYTES)
    if file_format != "onnx":
        # load_model explains what the file is and why it is refused.
        load_model(upload_path)
        raise ValueError("the file is not an ONNX model: upload a .onnx file, or a .zip holding one and its data files")
    for data in data_files:
        data_path = upload_path.parent / Path(data.name).name
        if data_path.exists():
            raise ValidationError(f"two uploaded files are named {data_path.name!r}; send each file once")
        received += copy_upload(data, data_path, limit=settings.CONDENSE_MAX_UPLOAD_BYTES - received)
    return consolidate_onnx(upload_path, folder / upload_path.name,
                            external_data_dir=upload_path.parent if data_files else None)


def model_delete(*, model: ModelArtifact) -> None:
    if model.jobs.exists():
        raise ServiceConflict("this model has jobs; delete its jobs first")
    folder = posixpath.dirname(model.file.name) if model.file else None
    model.delete()
    if folder:
        transaction.on_commit(lambda: storage_delete_prefix(folder))
