"""API input/output shapes. Inputs are validated here only for form; rules live in services."""

import json

from rest_framework import serializers

from webapp.jobs.models import Job, JobLog
from webapp.modelhub.models import ModelArtifact


class ModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelArtifact
        fields = [
            "id", "name", "source", "architecture", "num_classes", "file_format",
            "size_bytes", "input_shape", "summary", "created_at",
        ]


class ModelListSerializer(serializers.ModelSerializer):
    params = serializers.IntegerField(source="summary.params", read_only=True)
    flops = serializers.IntegerField(source="summary.flops", read_only=True)

    class Meta:
        model = ModelArtifact
        fields = ["id", "name", "source", "architecture", "file_format", "size_bytes", "input_shape",
                  "params", "flops", "created_at"]


class JsonListField(serializers.Field):
    """Accepts a JSON list, or a string holding one (multipart forms)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return None
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise serializers.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list, e.g. [3, 224, 224]")
        return data

    def to_representation(self, value):
        return value


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    source = serializers.ChoiceField(choices=ModelArtifact.Source.choices)
    file = serializers.FileField(required=False, allow_null=True)
    architecture = serializers.CharField(required=False, allow_blank=True, default="")
    num_classes = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    input_shape = JsonListField(required=False, allow_null=True)


class JobOutputSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id", "name", "model", "model_name", "algorithm", "params", "speedup", "dataset", "device",
            "status", "progress", "stage", "error", "cancel_requested", "attempts",
            "metrics", "layers", "warnings", "artifacts", "created_at", "started_at", "finished_at",
        ]


class JobListSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "name", "model", "model_name", "algorithm", "status", "progress", "stage",
                  "error", "created_at", "finished_at"]


class JobCreateSerializer(serializers.Serializer):
    model = serializers.IntegerField()
    algorithm = serializers.CharField()
    params = serializers.JSONField()
    speedup = serializers.BooleanField(default=True)
    dataset = serializers.CharField(required=False, allow_blank=True, default="")
    device = serializers.ChoiceField(choices=Job.Device.choices, default=Job.Device.CPU)
    name = serializers.CharField(required=False, allow_blank=True, default="")


class JobLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLog
        fields = ["id", "created_at", "level", "message"]
