"""API input/output shapes. Inputs are validated here only for form; rules live in services."""

from rest_framework import serializers

from webapp.common.bounded_json import BoundedJSONField, loads_bounded
from webapp.common.intake import IntakeStatus
from webapp.datahub.models import Dataset
from webapp.jobs.models import Job, JobLog
from webapp.modelhub.models import ModelArtifact
from webapp.modelhub.services import MAX_CLASSES


class ModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelArtifact
        fields = [
            "id", "name", "status", "status_reason", "source", "architecture", "num_classes", "file_format",
            "size_bytes", "input_shape", "summary", "created_at",
        ]


class ModelListSerializer(serializers.ModelSerializer):
    # Null until the upload's inspection has counted them.
    params = serializers.IntegerField(source="summary.params", read_only=True, allow_null=True)
    flops = serializers.IntegerField(source="summary.flops", read_only=True, allow_null=True)

    class Meta:
        model = ModelArtifact
        fields = ["id", "name", "status", "status_reason", "source", "architecture", "file_format", "size_bytes",
                  "input_shape", "params", "flops", "created_at"]


class JsonListField(serializers.Field):
    """Accepts a JSON list, or a string holding one (multipart forms)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return None
            try:
                data = loads_bounded(data)
            except ValueError as exc:  # JSONDecodeError, or nested too deeply
                raise serializers.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list, e.g. [3, 224, 224]")
        return data

    def to_representation(self, value):
        return value


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    source = serializers.ChoiceField(choices=ModelArtifact.Source.choices)
    file = serializers.FileField(
        required=False, allow_null=True,
        help_text="ONNX: a .onnx file, or a .zip holding one .onnx and its external-data files (m.onnx.data). "
        "Built-in: optional weights (safetensors or a weights-only state_dict).",
    )
    data = serializers.ListField(
        child=serializers.FileField(), required=False, default=list,
        help_text="ONNX only: the model's external-data files (e.g. m.onnx.data), one part each, named as the "
        "model refers to them; instead of a zip.",
    )
    architecture = serializers.CharField(required=False, allow_blank=True, default="")
    num_classes = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_CLASSES)
    input_shape = JsonListField(required=False, allow_null=True)


class DatasetOutputSerializer(serializers.ModelSerializer):
    builtin = serializers.SerializerMethodField()
    description = serializers.SerializerMethodField()
    # Null until the upload's inspection has read them.
    input_shape = serializers.ListField(source="summary.sample_shape", child=serializers.IntegerField(), read_only=True,
                                        allow_null=True)
    num_classes = serializers.IntegerField(source="summary.num_classes", read_only=True, allow_null=True)
    has_labels = serializers.BooleanField(source="summary.labelled", read_only=True, allow_null=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "status", "status_reason", "builtin", "format", "description", "input_shape",
                  "num_classes", "has_labels", "size_bytes", "summary", "created_at"]

    def get_builtin(self, dataset) -> bool:
        return False

    def get_description(self, dataset) -> str:
        if dataset.status != IntakeStatus.READY:
            return f"{dataset.get_format_display()}: {dataset.get_status_display().lower()}"
        summary = dataset.summary
        labels = f"{summary['num_classes']} classes" if summary.get("labelled") else "unlabelled"
        return f"{dataset.get_format_display()}: {summary.get('samples')} samples, {labels}"


class DatasetListItemSerializer(serializers.Serializer):
    """One row of ``GET /datasets/``: a built-in dataset (``id`` null, ``builtin`` true) or an upload."""

    id = serializers.IntegerField(allow_null=True)
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=IntakeStatus.choices)
    status_reason = serializers.CharField(allow_blank=True)
    builtin = serializers.BooleanField()
    format = serializers.CharField()
    description = serializers.CharField()
    input_shape = serializers.ListField(child=serializers.IntegerField())
    num_classes = serializers.IntegerField()
    has_labels = serializers.BooleanField()
    size_bytes = serializers.IntegerField(allow_null=True)
    summary = serializers.JSONField()
    created_at = serializers.DateTimeField(allow_null=True)


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    file = serializers.FileField(help_text="a .npz (arrays x and optional y) or a .zip of images in class folders")


#: What ``metrics`` holds, for the OpenAPI schema (docs/measurement.md says it at length).
METRICS_HELP = (
    "The job's measurements: before / after (params, flops, onnx_bytes, weights_bytes, accuracy, and "
    "latency_{cpu|gpu}_b{N}_ms: the paired medians), fidelity, and by job kind finetune, auto, pruned, "
    "quantization, sensitivity. metrics.latency holds the paired timings: machine {cpu, logical_cores, "
    "available_cores, threads, torch, onnxruntime, gpu, load_start, load_end}; rows [{runtime "
    "(pytorch-cpu | onnxruntime-cpu | pytorch-cuda | onnxruntime-cuda), form (compressed | int8_pytorch | "
    "int8_onnx | simulated | float16_gpu), label, batch, before and after {median_ms, p10_ms, p90_ms, rounds, "
    "repeats, chunks}, ratio {value, low, high} (before / after with its 95% interval; null for a simulated "
    "quantizer), flags (noisy, implausible, regression), notes, verdict (faster | no-change | noisy | "
    "implausible | regression | simulated), headline (the deliverable's figure), load}]; skipped [{runtime, "
    "reason}]; fastest {batch: {runtime, form, label, median_ms}}. See docs/measurement.md."
)


class JobOutputSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    metrics = serializers.JSONField(read_only=True, help_text=METRICS_HELP)
    dataset_id = serializers.IntegerField(source="dataset_upload_id", read_only=True, allow_null=True)
    dataset_name = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "name", "model", "model_name", "algorithm", "params", "speedup", "dataset", "dataset_id",
            "dataset_name", "device", "queue", "time_limit_s",
            "status", "progress", "stage", "error", "cancel_requested", "attempts", "attempt_history", "worker",
            "metrics", "layers", "warnings", "artifacts", "created_at", "started_at", "finished_at",
        ]

    def get_dataset_name(self, job) -> str:
        return job.dataset_upload.name if job.dataset_upload_id else job.dataset


class JobListSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "name", "model", "model_name", "algorithm", "status", "progress", "stage",
                  "error", "created_at", "finished_at"]


class JobCreateSerializer(serializers.Serializer):
    model = serializers.IntegerField()
    algorithm = serializers.CharField()
    params = BoundedJSONField()
    speedup = serializers.BooleanField(default=True)
    dataset = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="a built-in dataset's name (see /datasets/)")
    dataset_id = serializers.IntegerField(required=False, allow_null=True, default=None,
                                          help_text="an uploaded dataset's id, instead of 'dataset'")
    device = serializers.ChoiceField(
        choices=Job.Device.choices, default=Job.Device.AUTO,
        help_text="auto: a GPU worker when one is alive, else a CPU worker; gpu is refused when no GPU worker is alive")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    time_limit_s = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=60, max_value=7 * 24 * 3600,
        help_text="seconds the job may run (default: the server's CONDENSE_JOB_TIME_LIMIT_S, 8 hours)")


class JobLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLog
        fields = ["id", "created_at", "level", "message"]
