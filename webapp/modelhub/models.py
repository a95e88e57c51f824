from django.conf import settings
from django.db import models

from webapp.common.intake import InspectedUpload


def _upload_path(instance: "ModelArtifact", filename: str) -> str:
    return f"models/{instance.owner_id}/{instance.uid}/{filename}"


class ModelArtifact(InspectedUpload):
    """An uploaded (or built-in) network and what inspection found in it (``status``: inspecting, ready or
    rejected with ``status_reason``)."""

    class Source(models.TextChoices):
        ONNX = "onnx", "ONNX file"
        BUILTIN = "builtin", "Built-in architecture"

    uid = models.UUIDField(unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.choices)
    architecture = models.CharField(max_length=64, blank=True)
    num_classes = models.PositiveIntegerField(null=True, blank=True)
    file = models.FileField(upload_to=_upload_path, blank=True, max_length=500)
    file_format = models.CharField(max_length=32, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    input_shape = models.JSONField(default=list)
    #: Storage names of the external-data files received beside the ``.onnx`` (``file``), until inspection
    #: has made them one file.
    received_files = models.JSONField(default=list, blank=True)
    summary = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
