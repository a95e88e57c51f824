from dataclasses import dataclass

from django.conf import settings
from django.shortcuts import get_object_or_404

from compression_core.data import DatasetSource, check_input_fit, dataset_choices

from webapp.common.intake import IntakeStatus

from .models import Dataset


def dataset_list(*, user):
    return Dataset.objects.filter(owner=user)


def dataset_ready_list(*, user):
    """The user's datasets that jobs can use (inspected and accepted)."""
    return dataset_list(user=user).filter(status=IntakeStatus.READY)


def dataset_get(*, user, dataset_id) -> Dataset:
    return get_object_or_404(Dataset, pk=dataset_id, owner=user)


@dataclass
class InspectedDataset(DatasetSource):
    """A stored dataset as a job's validation sees it: the sample shape its inspection recorded stands in for
    the file, which stays in storage (validation only checks that shape against the model's input, so a
    request never downloads a dataset). ``path`` is the storage name; nothing opens it."""

    sample_shape: list[int] | None = None

    def resolved_format(self) -> str:
        return self.format

    def check_fits(self, input_shape) -> None:
        if self.format == Dataset.Format.NPZ:
            check_input_fit(self.sample_shape, input_shape)
        else:
            super().check_fits(input_shape)  # images: decided by the model's input alone


def dataset_validation_source(dataset: Dataset) -> InspectedDataset:
    """The dataset for ``validate_recipe`` in a web request, without fetching its file.

    Example::

        >>> validate_recipe(Recipe(..., dataset=dataset_validation_source(dataset)))
    """
    return InspectedDataset(
        path=dataset.file.name, format=dataset.format, sample_shape=dataset.summary.get("sample_shape"),
        max_uncompressed_bytes=settings.CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES,
        max_images=settings.CONDENSE_DATASET_MAX_IMAGES,
    )


def dataset_fit_error(input_shape, *, builtin: str = "", upload: Dataset | None = None) -> str:
    """Why a built-in dataset or an upload cannot feed a model taking ``input_shape``, or "" when it can.

    The rule is the engine's (``DatasetSource.check_fits``, which ``validate_recipe`` applies when
    ``job_create`` refuses a job), asked of the same sources: the job form lists only what passes.

    Example::

        >>> dataset_fit_error([1, 8, 8], builtin="digits")
        ''
        >>> dataset_fit_error([3, 32, 32], builtin="digits")
        "dataset 'digits' gives inputs of shape [1, 8, 8], but the model takes [3, 32, 32]"
    """
    source = dataset_validation_source(upload) if upload is not None else DatasetSource(builtin=builtin)
    try:
        source.check_fits(input_shape)
    except ValueError as exc:
        return str(exc)
    return ""


def builtin_dataset_list() -> list[dict]:
    """The built-in datasets in the shape the API lists uploads in (``id`` None, ``builtin`` True)."""
    rows = []
    for spec in dataset_choices():
        rows.append({
            "id": None,
            "name": spec["name"],
            "status": IntakeStatus.READY.value,
            "status_reason": "",
            "builtin": True,
            "format": "builtin",
            "description": spec["description"],
            "input_shape": spec["input_shape"],
            "num_classes": spec["num_classes"],
            "has_labels": spec["has_labels"],
            "size_bytes": None,
            "created_at": None,
            "summary": {
                "format": "builtin",
                "samples": spec["sizes"].get("all"),
                "sample_shape": spec["input_shape"],
                "labelled": spec["has_labels"],
                "num_classes": spec["num_classes"],
                "splits": spec["sizes"],
            },
        })
    return rows
