"""Writes for uploaded datasets. A dataset row exists only if inspection succeeded."""

from __future__ import annotations

import logging
import posixpath
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from compression_core.data import DatasetSource, inspect_dataset

from webapp.common.exceptions import ServiceConflict
from webapp.common.storage import storage_delete, storage_delete_prefix, storage_fetch, storage_push
from webapp.common.uploads import copy_upload

from .models import Dataset

logger = logging.getLogger(__name__)


def _limits() -> dict:
    return {
        "max_uncompressed_bytes": settings.CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES,
        "max_images": settings.CONDENSE_DATASET_MAX_IMAGES,
    }


def dataset_source(dataset: Dataset, workdir: Path) -> DatasetSource:
    """The engine's view of a stored dataset (plain values, no Django objects), its file fetched into ``workdir``.

    Example::

        >>> dataset_source(dataset, Path("/tmp/job-7/inputs")).path
        '/tmp/job-7/inputs/dataset/digits.npz'
    """
    path = storage_fetch(dataset.file.name, workdir / "dataset" / posixpath.basename(dataset.file.name))
    return DatasetSource(path=str(path), format=dataset.format, **_limits())


def dataset_create(*, owner, name: str = "", upload=None) -> Dataset:
    """Inspect an uploaded .npz or .zip of images and store it.

    Raises ``ValidationError`` with the engine's message when the file cannot
    be used; then nothing is stored (no row, no file).
    """
    if upload is None:
        raise ValidationError("upload a dataset file: a .npz of arrays or a .zip of images")
    with tempfile.TemporaryDirectory(prefix="condense-dataset-") as tmp:
        local_path = Path(tmp) / (Path(upload.name or "").name or "dataset")
        size = copy_upload(upload, local_path)
        try:
            summary = inspect_dataset(local_path, **_limits())
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        except (RuntimeError, OSError, MemoryError) as exc:
            # Still the user's file (an archive the readers choke on): a 400 that
            # says what happened, not a 500.
            logger.exception("dataset inspection failed")
            raise ValidationError(f"the dataset could not be read: {type(exc).__name__}: {exc}") from exc

        dataset = Dataset(
            uid=uuid.uuid4(),
            owner=owner,
            name=(name or Path(local_path.name).stem)[:200],
            format=summary["format"],
            size_bytes=size,
            summary=summary,
        )
        dataset.file.name = storage_push(local_path, dataset.file.field.generate_filename(dataset, local_path.name))
        try:
            dataset.save()
        except Exception:
            storage_delete(dataset.file.name)
            raise
    return dataset


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
        folder = posixpath.dirname(locked.file.name)
        locked.delete()
        transaction.on_commit(lambda: storage_delete_prefix(folder))
