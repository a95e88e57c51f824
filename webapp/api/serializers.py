"""API input/output shapes. Inputs are validated here only for form; rules live in services."""

from django.http import QueryDict
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from webapp.common.bounded_json import BoundedJSONField, loads_bounded
from webapp.common.intake import IntakeStatus
from webapp.datahub.models import Dataset
from webapp.jobs.models import Job, JobLog
from webapp.jobs.selectors import job_elapsed_s, job_eta_s
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


@extend_schema_field({"type": "array", "items": {"type": "integer"}, "nullable": True})
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


class JsonTypedSerializer(serializers.Serializer):
    """An input whose JSON body must give each field the type the schema says: DRF alone takes ``5`` for a
    string, ``"5"`` or ``5.0`` for an integer and ``"yes"`` for a boolean. A form body (a ``QueryDict``)
    carries only strings and is parsed as before."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {name: [message] for name, field in self.fields.items()
                      if name in data and data[name] is not None and not field.read_only
                      and (message := _json_type_error(field, data[name]))}
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _json_type_error(field: serializers.Field, value) -> str | None:
    for field_class, types, expected in _JSON_TYPES:
        if isinstance(field, field_class):
            # bool is an int in Python, not in JSON
            if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
                return None
            return f"must be {expected} in a JSON body, got {type(value).__name__} {str(value)[:40]!r}"
    return None


class ModelCreateSerializer(JsonTypedSerializer):
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


class _OnnxModelCreateSerializer(ModelCreateSerializer):
    """``source: onnx``: the file is required; the architecture comes from it."""

    source = serializers.ChoiceField(choices=[ModelArtifact.Source.ONNX])  # OnnxSourceEnum in the schema
    file = serializers.FileField(help_text=ModelCreateSerializer().fields["file"].help_text)
    architecture = None

    class Meta:
        ref_name = "OnnxModelCreate"


class _BuiltinModelCreateSerializer(ModelCreateSerializer):
    """``source: builtin``: a built-in architecture (see /architectures/), optionally with its weights."""

    source = serializers.ChoiceField(choices=[ModelArtifact.Source.BUILTIN])  # BuiltinSourceEnum
    architecture = serializers.CharField(help_text="a name from GET /architectures/, e.g. resnet18")
    data = None

    class Meta:
        ref_name = "BuiltinModelCreate"


class _BuiltinModelCreateWithoutFileSerializer(_BuiltinModelCreateSerializer):
    """A JSON or url-encoded body carries no file: a built-in architecture with its initial weights."""

    file = None

    class Meta:
        ref_name = "BuiltinModelCreateWithoutFile"


#: ``POST /models/`` in the schema: what is required depends on ``source`` (the view validates with
#: :class:`ModelCreateSerializer`, the services the rest); only a multipart body carries files.
MODEL_CREATE_REQUEST = {
    "multipart/form-data": PolymorphicProxySerializer(
        component_name="ModelCreate", resource_type_field_name="source",
        serializers={"onnx": _OnnxModelCreateSerializer, "builtin": _BuiltinModelCreateSerializer},
    ),
    "application/x-www-form-urlencoded": _BuiltinModelCreateWithoutFileSerializer,
    "application/json": _BuiltinModelCreateWithoutFileSerializer,
}


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


class DatasetCreateSerializer(JsonTypedSerializer):
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


PROGRESS_DETAIL_SCHEMA = {
    "type": "object",
    "description": "Where the run stands, as its worker last reported: stage (load | measure_original | analyse | "
                   "dependency_groups | prune | speedup | finetune | measure_compressed | quantize | "
                   "measure_quantized | export_int8_onnx | export | measure_latency | done), done of total units of "
                   "it (unit: epoch, step, trial, row or null), batch of batches inside an epoch, stage_started_at "
                   "and updated_at (ISO 8601), eta_s (the worker's estimate of the seconds left then, null until it "
                   "has measured enough); empty before the first report. See docs/architecture.md.",
    "properties": {
        "stage": {"type": "string"}, "done": {"type": "integer"}, "total": {"type": "integer"},
        "unit": {"type": "string", "nullable": True}, "batch": {"type": "integer"}, "batches": {"type": "integer"},
        "stage_started_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"}, "eta_s": {"type": "number", "nullable": True},
    },
}


@extend_schema_field(PROGRESS_DETAIL_SCHEMA)
class ProgressDetailField(serializers.JSONField):
    pass


class JobOutputSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    metrics = serializers.JSONField(read_only=True, help_text=METRICS_HELP)
    dataset_id = serializers.IntegerField(source="dataset_upload_id", read_only=True, allow_null=True)
    dataset_name = serializers.SerializerMethodField()
    progress_detail = ProgressDetailField(read_only=True)
    elapsed_s = serializers.SerializerMethodField(
        help_text="Seconds the run has taken: from started_at to finished_at, or to now while it runs; null before "
                  "it starts")
    eta_s = serializers.SerializerMethodField(
        help_text="Estimated seconds left while the job runs (progress_detail.eta_s less the time since that "
                  "report); null when not running or not yet estimated")

    class Meta:
        model = Job
        fields = [
            "id", "name", "model", "model_name", "algorithm", "params", "speedup", "dataset", "dataset_id",
            "dataset_name", "device", "queue", "time_limit_s",
            "status", "progress", "stage", "error", "cancel_requested", "attempts", "attempt_history", "worker",
            "metrics", "layers", "warnings", "artifacts", "created_at", "started_at", "finished_at",
            "progress_detail", "elapsed_s", "eta_s",
        ]

    def get_dataset_name(self, job) -> str:
        return job.dataset_upload.name if job.dataset_upload_id else job.dataset

    def get_elapsed_s(self, job) -> float | None:
        return job_elapsed_s(job=job)

    def get_eta_s(self, job) -> float | None:
        return job_eta_s(job=job)


@extend_schema_field({"type": "object", "additionalProperties": True,
                      "description": "the algorithm's parameters, as its params_schema in GET /algorithms/ says, e.g. "
                                     '{"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}; a multipart '
                                     "form sends them as a JSON string"})
class JobParamsField(BoundedJSONField):
    """A JSON object (or a string holding one: multipart forms)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError('must be a JSON object, e.g. {"config_list": [...]}')
        return value


class JsonStringField(serializers.CharField):
    """A string that stays one: a list item in a JSON body, which :class:`JsonTypedSerializer` does not
    reach, is refused as a number rather than turned into its text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, got {type(data).__name__} {str(data)[:40]!r}")
        return super().to_internal_value(data)


#: JSON types of the input fields, checked by :class:`JsonTypedSerializer` (first match wins).
_JSON_TYPES = (
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "a whole number"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (JobParamsField, (dict,), "a JSON object"),
    (JsonListField, (list,), "a list"),
)


class JobCreateSerializer(JsonTypedSerializer):
    model = serializers.IntegerField()
    algorithm = serializers.CharField()
    params = JobParamsField()
    speedup = serializers.BooleanField(default=True)
    dataset = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="a built-in dataset's name (see /datasets/)")
    dataset_id = serializers.IntegerField(required=False, allow_null=True, default=None,
                                          help_text="an uploaded dataset's id, instead of 'dataset'")
    device = serializers.ChoiceField(
        choices=Job.Device.choices, default=Job.Device.AUTO,
        help_text="auto: a GPU worker when one is alive, else a CPU worker; gpu is refused when no GPU worker is alive")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    tags = serializers.ListField(child=JsonStringField(allow_blank=True, max_length=40, trim_whitespace=False),
                                 max_length=10, required=False, default=list,
                                 help_text="free labels to filter and compare runs by: at most 10, 40 characters each")
    time_limit_s = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=60, max_value=7 * 24 * 3600,
        help_text="seconds the job may run (default: the server's CONDENSE_JOB_TIME_LIMIT_S, 8 hours)")


class JobLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLog
        fields = ["id", "created_at", "level", "message"]


class ArtifactSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the file name, e.g. model.onnx")
    kind = serializers.CharField(help_text="e.g. onnx, safetensors, onnx-int8, plan")
    bytes = serializers.IntegerField()
    url = serializers.URLField(help_text="where to download it (GET)")


class AlgorithmSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["pruning", "quantization", "analysis"],
                                   help_text="what a job delivers: a pruned model, a quantized one, or measurements")
    description = serializers.CharField()
    paper = serializers.CharField()
    paper_url = serializers.CharField()
    params_schema = serializers.DictField(help_text="the JSON Schema of the job's params")
    needs_data = serializers.BooleanField(help_text="the algorithm trains or calibrates: the job needs a dataset")
    granularity = serializers.CharField(help_text="what it removes by default, e.g. out_channel, fine_grained")


class ArchitectureSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    input_shape = serializers.ListField(child=serializers.IntegerField())
    num_classes = serializers.IntegerField()
