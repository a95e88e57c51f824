"""Writes for uploaded models: stored in the request, inspected in a worker (``status`` says where it stands)."""

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

from compression_core.io import detect_format
from compression_core.jobs import ModelSource
from compression_core.jobs.intake import IntakeRequest
from compression_core.jobs.sandbox import IntakeRefused, intake_in_sandbox
from compression_core.models import ARCHITECTURES

from webapp.common.exceptions import ServiceConflict
from webapp.common.intake import (
    IntakeStatus,
    inspection_claim,
    inspection_enqueue,
    inspection_finish,
    inspection_sweep,
    intake_budget,
    intake_limits,
)
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
        limits=intake_limits(),
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


#: The Celery task that inspects a model upload (``tasks.inspect_model_upload``), published by name.
INSPECT_MODEL_TASK = "condense.inspect_model"
#: What weights for a built-in architecture may be, judged from their first bytes (an ONNX upload must be
#: onnx or a zip of it); everything else is refused in the request.
WEIGHTS_UPLOAD_FORMATS = ("safetensors", "torch_zip", "pickle")


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
    """Store an upload (or a built-in architecture) with status ``inspecting`` and ask a worker to inspect it.

    An ONNX upload is a ``.onnx`` file, or a ``.zip`` holding one ``.onnx``
    and its external-data files; ``data_files`` are those files sent beside a
    ``.onnx`` instead (the API's ``data`` parts). The request checks only what
    costs nothing: the declared fields, the sizes, the format from the first
    bytes (``ValidationError`` naming the field; then nothing is stored). The
    worker's inspection (:func:`model_inspect`) makes it ``ready`` or
    ``rejected`` with the reason. Returns the row as it is once the message
    is sent (in tests that inspect on publish, already inspected).
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

    model = ModelArtifact(
        uid=uuid.uuid4(), owner=owner, name=name or (Path(upload.name).stem if upload else architecture),
        source=source, architecture=architecture, num_classes=num_classes, input_shape=input_shape or [],
    )
    stored: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="condense-upload-") as tmp:
            if upload is not None:
                local_path = Path(tmp) / Path(upload.name).name
                model.size_bytes = copy_upload(upload, local_path)
                model.file_format = _upload_format(local_path, source, data_files)
                stored.append(storage_push(local_path, model.file.field.generate_filename(model, local_path.name)))
                model.file.name = stored[0]
                received = model.size_bytes
                for data in data_files:
                    data_path = Path(tmp) / "data" / Path(data.name).name
                    data_path.parent.mkdir(exist_ok=True)
                    if data_path.exists() or data_path.name == local_path.name:
                        raise ValidationError(f"two uploaded files are named {data_path.name!r}; send each file once")
                    received += copy_upload(data, data_path, limit=settings.CONDENSE_MAX_UPLOAD_BYTES - received)
                    stored.append(storage_push(data_path, model.file.field.generate_filename(model, data_path.name)))
                model.received_files = stored[1:]
                model.size_bytes = received
            else:
                model.file_format = "builtin"
        with transaction.atomic():
            model.save()
            inspection_enqueue(ModelArtifact, INSPECT_MODEL_TASK, model.pk)
    except Exception:
        for name in stored:
            storage_delete(name)
        raise
    # Outside a surrounding transaction the message is sent by now: answer with what it did to the upload.
    model.refresh_from_db()
    return model


def _upload_format(path: Path, source: str, data_files: list) -> str:
    """The upload's format from its first bytes (no parsing); ``ValidationError`` when it cannot be what the
    source needs."""
    file_format = detect_format(path)
    if source == ModelArtifact.Source.ONNX:
        if file_format == "onnx_zip" or (file_format == "unknown" and zipfile.is_zipfile(path)):
            if data_files:
                raise ValidationError("put the external-data files inside the zip, next to the .onnx, "
                                      "rather than sending them as separate 'data' parts")
            return "onnx_zip"
        if file_format != "onnx":
            raise ValidationError(f"file: this is not an ONNX model (its bytes are those of "
                                  f"{_format_name(file_format)}): "
                                  "upload a .onnx file, or a .zip holding one and its external-data files; "
                                  "export with torch.onnx.export(model, (x,), 'model.onnx', dynamo=False, "
                                  "dynamic_axes={'input': {0: 'batch'}})")
        return file_format
    if file_format not in WEIGHTS_UPLOAD_FORMATS:
        raise ValidationError("file: weights for a built-in architecture are a safetensors file or a "
                              f"torch.save(model.state_dict()) file; this one is {_format_name(file_format)}")
    return file_format


_FORMAT_NAMES = {
    "onnx": "an ONNX model", "onnx_zip": "a zip of ONNX files", "safetensors": "a safetensors file",
    "torchscript": "a TorchScript archive (torch.jit.save)", "torch_export": "a torch.export archive (.pt2)",
    "torch_zip": "a torch.save archive (a pickle, never unpickled here)",
    "pickle": "a pickle (never unpickled here)",
}


def _format_name(file_format: str) -> str:
    return _FORMAT_NAMES.get(file_format, "an unknown format")


def model_inspect(model_id: int) -> ModelArtifact | None:
    """Inspect an upload in a child process under the operator's budget (in a worker on the ``inspect``
    queue); set it ``ready`` with its summary and one self-contained file, or ``rejected`` with the reason
    (its files deleted). Idempotent: an upload that is not waiting for inspection, or that another worker
    holds, is left alone (returns None).

        >>> model_inspect(model.pk).status
        'ready'
    """
    if not inspection_claim(ModelArtifact, model_id):
        return None
    model = ModelArtifact.objects.get(pk=model_id)
    with tempfile.TemporaryDirectory(prefix=f"condense-inspect-model-{model_id}-") as tmp:
        workdir = Path(tmp)
        try:
            received = workdir / "received"
            path = storage_fetch(model.file.name, received / posixpath.basename(model.file.name)) \
                if model.file else None
            data_paths = [str(storage_fetch(name, received / posixpath.basename(name)))
                          for name in model.received_files]
            request = IntakeRequest(kind="model", workdir=str(workdir), path=str(path) if path else None,
                                    data_files=data_paths, source=model.source, architecture=model.architecture,
                                    num_classes=model.num_classes, input_shape=model.input_shape or None,
                                    limits=intake_limits())
            outcome = intake_in_sandbox(request, intake_budget())
        except IntakeRefused as exc:
            return _model_reject(model, str(exc))
        stored = model.file.name
        if outcome["path"] and Path(outcome["path"]) != path:
            stored = storage_push(Path(outcome["path"]),
                                  model.file.field.generate_filename(model, Path(outcome["path"]).name))
        done = inspection_finish(
            ModelArtifact, model_id, status=IntakeStatus.READY, file=stored, file_format=outcome["file_format"],
            size_bytes=outcome["size_bytes"] or model.size_bytes, input_shape=outcome["summary"]["input_shape"],
            summary=outcome["summary"], received_files=[])
        if not done:
            # Deleted while it was inspected: drop what this run stored (a worker that took over and
            # finished first keeps its row, and its files).
            if not ModelArtifact.objects.filter(pk=model_id).exists():
                storage_delete_prefix(posixpath.dirname(stored))
            return None
        for name in {model.file.name, *model.received_files} - {stored, ""}:
            storage_delete(name)
    return ModelArtifact.objects.get(pk=model_id)


def _model_reject(model: ModelArtifact, reason: str) -> ModelArtifact | None:
    logger.info("model upload %s rejected: %s", model.pk, reason)
    if not inspection_finish(ModelArtifact, model.pk, status=IntakeStatus.REJECTED, reason=reason,
                             file="", received_files=[]):
        return None
    if model.file:
        storage_delete_prefix(posixpath.dirname(model.file.name))
    return ModelArtifact.objects.get(pk=model.pk)


def model_inspection_sweep() -> tuple[list[int], list[int]]:
    """The workers' sweep of model uploads (:func:`~webapp.common.intake.inspection_sweep`)."""
    return inspection_sweep(ModelArtifact, INSPECT_MODEL_TASK, _model_reject)


#: How many jobs a refusal to delete names before it says "and N more".
NAMED_JOBS = 8


def model_delete(*, model: ModelArtifact) -> None:
    """Delete a model and its file, unless jobs still refer to it.

    A job keeps its model (``Job.model`` is PROTECT: its results describe that model), so the model goes
    only once its jobs are gone: a queued or running job must be cancelled first, then every job deleted
    (each job page has Delete). The refusal names them, e.g. "the model is used by job #12 (running) and
    #14 (queued); cancel them first, then delete them". Raises :class:`ServiceConflict` (HTTP 409).
    """
    with transaction.atomic():
        # Locks the row while the jobs are counted; a job created meanwhile still meets Job.model's PROTECT.
        locked = ModelArtifact.objects.select_for_update().filter(pk=model.pk).first()
        if locked is None:
            return
        # Through the reverse relation: jobs sit above models and modelhub does not import them. A job is
        # queued or running exactly while it has no finished_at (every terminal transition sets it).
        jobs = list(locked.jobs.order_by("pk").values_list("pk", "status", "finished_at"))
        if jobs:
            raise ServiceConflict(_jobs_in_the_way(jobs))
        folder = posixpath.dirname(locked.file.name) if locked.file else None
        locked.delete()
        if folder:
            transaction.on_commit(lambda: storage_delete_prefix(folder))


def _named_jobs(jobs: list[tuple[int, str]]) -> str:
    """[(12, "running"), (14, "queued")] -> "job #12 (running) and #14 (queued)"."""
    names = [f"#{pk} ({status})" for pk, status in jobs[:NAMED_JOBS]]
    if len(jobs) > NAMED_JOBS:
        names.append(f"{len(jobs) - NAMED_JOBS} more")
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{'job' if len(jobs) == 1 else 'jobs'} {listed}"


def _jobs_in_the_way(jobs: list[tuple[int, str, object]]) -> str:
    """Why a model cannot be deleted yet: which jobs use it and what to do with each."""
    active = [(pk, status) for pk, status, finished_at in jobs if finished_at is None]
    finished = [(pk, status) for pk, status, finished_at in jobs if finished_at is not None]
    if active:
        them = "it" if len(active) == 1 else "them"
        text = f"the model is used by {_named_jobs(active)}; cancel {them} first, then delete {them}"
        if finished:
            text += f" and finished {_named_jobs(finished)}"
        return text + " (a job keeps the model its results describe)"
    those = "that job" if len(finished) == 1 else "those jobs"
    return (f"the model has finished {_named_jobs(finished)}, whose results describe it; delete {those} "
            "first (each job's page has Delete)")
