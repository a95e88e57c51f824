from django.conf import settings
from django.db import models

from webapp.common.intake import InspectedUpload


def _upload_path(instance: "Dataset", filename: str) -> str:
    return f"datasets/{instance.owner_id}/{instance.uid}/{filename}"


class Dataset(InspectedUpload):
    """An uploaded dataset file (.npz or a .zip of images) and what inspection found in it.

    Built-in datasets are not rows: they live in ``compression_core.data``.
    """

    class Format(models.TextChoices):
        NPZ = "npz", "NumPy arrays (.npz)"
        IMAGE_ZIP = "image_zip", "Images (.zip)"

    uid = models.UUIDField(unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=16, choices=Format.choices)
    file = models.FileField(upload_to=_upload_path, max_length=500)
    size_bytes = models.BigIntegerField(default=0)
    summary = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
