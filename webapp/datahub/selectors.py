from django.shortcuts import get_object_or_404

from compression_core.data import dataset_choices

from .models import Dataset


def dataset_list(*, user):
    return Dataset.objects.filter(owner=user)


def dataset_get(*, user, dataset_id) -> Dataset:
    return get_object_or_404(Dataset, pk=dataset_id, owner=user)


def builtin_dataset_list() -> list[dict]:
    """The built-in datasets in the shape the API lists uploads in (``id`` None, ``builtin`` True)."""
    rows = []
    for spec in dataset_choices():
        rows.append({
            "id": None,
            "name": spec["name"],
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
