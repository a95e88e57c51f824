"""Writes for uploaded datasets: stored in the request, inspected in a worker (``status`` says where it stands)."""

from __future__ import annotations

import logging
import posixpath
import tempfile
import uuid
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from compression_core.data import DatasetSource
from compression_core.io import IntakeLimits
from compression_core.jobs.intake import IntakeRequest
from compression_core.jobs.sandbox import IntakeRefused, intake_in_sandbox

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

from .models import Dataset

logger = logging.getLogger(__name__)


def dataset_source(dataset: Dataset, workdir: Path) -> DatasetSource:
    """The engine's view of a stored dataset (plain values, no Django objects), its file fetched into ``workdir``.

    Example::

        >>> dataset_source(dataset, Path("/tmp/job-7/inputs")).path
        '/tmp/job-7/inputs/dataset/digits.npz'
    """
    path = storage_fetch(dataset.file.name, workdir / "dataset" / posixpath.basename(dataset.file.name))
    limits = IntakeLimits(**intake_limits())
    return DatasetSource(path=str(path), format=dataset.format, limits=limits,
                         max_uncompressed_bytes=limits.dataset_max_uncompressed_bytes,
                         max_images=limits.dataset_max_images)


#: The Celery task that inspects a dataset upload (``tasks.inspect_dataset_upload``), published by name.
INSPECT_DATASET_TASK = "condense.inspect_dataset"


def dataset_create(*, owner, name: str = "", upload=None) -> Dataset:
    """Store an uploaded .npz or .zip of images with status ``inspecting`` and ask a worker to inspect it.

    The request checks the size and that the bytes are a zip (an .npz is one); nothing is decoded here.
    Raises ``ValidationError`` for those (then nothing is stored); the worker's :func:`dataset_inspect`
    makes it ``ready`` or ``rejected`` with the reason.
    """
    if upload is None:
        raise ValidationError("upload a dataset file: a .npz of arrays or a .zip of images")
    dataset = Dataset(uid=uuid.uuid4(), owner=owner)
    stored = None
    try:
        with tempfile.TemporaryDirectory(prefix="condense-dataset-") as tmp:
            local_path = Path(tmp) / (Path(upload.name or "").name or "dataset")
            dataset.size_bytes = copy_upload(upload, local_path)
            dataset.format = _upload_format(local_path)
            dataset.name = (name or Path(local_path.name).stem)[:200]
            stored = storage_push(local_path, dataset.file.field.generate_filename(dataset, local_path.name))
            dataset.file.name = stored
        with transaction.atomic():
            dataset.save()
            inspection_enqueue(Dataset, INSPECT_DATASET_TASK, dataset.pk)
    except Exception:
        if stored:
            storage_delete(stored)
        raise
    dataset.refresh_from_db()
    return dataset


def _upload_format(path: Path) -> str:
    """npz or image_zip from the name and the first bytes; both are zip archives."""
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first entry, or an empty zip
            raise ValidationError("file: this file is neither a .npz archive nor a .zip: a dataset is a .npz of "
                                  "arrays (numpy.savez) or a .zip of images in class folders")
    return Dataset.Format.NPZ if path.suffix.lower() == ".npz" else Dataset.Format.IMAGE_ZIP


def dataset_inspect(dataset_id: int) -> Dataset | None:
    """Read and describe a stored upload in a child process under the operator's budget (in a worker on the
    ``inspect`` queue): ``ready`` with its summary, or ``rejected`` with the reason (its file deleted).
    Idempotent: a dataset that is not waiting for inspection, or that another worker holds, is left alone.

        >>> dataset_inspect(dataset.pk).summary["samples"]
        120
    """
    if not inspection_claim(Dataset, dataset_id):
        return None
    dataset = Dataset.objects.get(pk=dataset_id)
    with tempfile.TemporaryDirectory(prefix=f"condense-inspect-dataset-{dataset_id}-") as tmp:
        try:
            path = storage_fetch(dataset.file.name, Path(tmp) / posixpath.basename(dataset.file.name))
            request = IntakeRequest(kind="dataset", workdir=tmp, path=str(path), limits=intake_limits())
            outcome = intake_in_sandbox(request, intake_budget())
        except IntakeRefused as exc:
            return _dataset_reject(dataset, str(exc))
    if not inspection_finish(Dataset, dataset_id, status=IntakeStatus.READY, format=outcome["summary"]["format"],
                             summary=outcome["summary"]):
        return None
    return Dataset.objects.get(pk=dataset_id)


def _dataset_reject(dataset: Dataset, reason: str) -> Dataset | None:
    logger.info("dataset upload %s rejected: %s", dataset.pk, reason)
    if not inspection_finish(Dataset, dataset.pk, status=IntakeStatus.REJECTED, reason=reason, file=""):
        return None
    storage_delete_prefix(posixpath.dirname(dataset.file.name))
    return Dataset.objects.get(pk=dataset.pk)


def dataset_inspection_sweep() -> tuple[list[int], list[int]]:
    """The workers' sweep of dataset uploads (:func:`~webapp.common.intake.inspection_sweep`)."""
    return inspection_sweep(Dataset, INSPECT_DATASET_TASK, _dataset_reject)


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its file, unless a queued or running job still needs it.

    Finished jobs keep their results; their link to the dataset is cleared.
    Raises :class:`ServiceConflict` (HTTP 409) while a job uses it.
    """
    with transaction.atomic():
        # Locks the row, so a job created at the same moment waits and then
        # finds the dataset gone (see jobs.services.job_create).
        locked = Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        if locked is None:
            return
        # Through the reverse relation: jobs sit above datasets and datahub does not import them. A job is
        # queued or running exactly while it has no finished_at (every terminal transition sets it).
        active = list(locked.jobs.filter(finished_at__isnull=True).values_list("pk", flat=True))
        if active:
            jobs = ", ".join(f"#{pk}" for pk in active)
            raise ServiceConflict(
                f"{'job' if len(active) == 1 else 'jobs'} {jobs} {'is' if len(active) == 1 else 'are'} queued or "
                "running on this dataset; cancel or let them end, then delete the dataset"
            )
        folder = posixpath.dirname(locked.file.name) if locked.file else None  # a rejected upload has none
        locked.delete()
        if folder:
            transaction.on_commit(lambda: storage_delete_prefix(folder))
