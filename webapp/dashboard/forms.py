"""Dashboard forms. They only turn browser input into the values the services
take (parsing JSON, shapes, checkboxes); every rule about models, datasets and
jobs is checked by ``webapp.modelhub.services`` / ``webapp.datahub.services`` /
``webapp.jobs.services``."""

from __future__ import annotations

import json
import re

from django import forms

from django.conf import settings

from compression_core.algorithms import AlgorithmKind, all_algorithms
from compression_core.evaluation import TRAINING_SCHEMA
from compression_core.models import architecture_choices
from compression_core.data import BUILTIN_DATASETS
from webapp.common.bounded_json import loads_bounded
from webapp.datahub import selectors as dataset_selectors
from webapp.fleet.selectors import gpu_worker_alive
from webapp.jobs.models import Job
from webapp.modelhub import selectors as model_selectors
from webapp.modelhub.models import ModelArtifact

DEFAULT_CONFIG_LIST = '[{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]'
# The config list the form starts from, per algorithm kind (the page swaps them as the algorithm changes).
DEFAULT_CONFIG_LISTS = {
    "pruning": DEFAULT_CONFIG_LIST,
    "analysis": DEFAULT_CONFIG_LIST,
    "quantization": '[{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}]',
}


class ModelUploadForm(forms.Form):
    name = forms.CharField(
        max_length=200, required=False, help_text="Defaults to the file name or the architecture."
    )
    source = forms.ChoiceField(
        choices=ModelArtifact.Source.choices, initial=ModelArtifact.Source.ONNX, widget=forms.RadioSelect
    )
    file = forms.FileField(
        required=False,
        help_text="ONNX: the .onnx file, or a .zip holding it and its external-data file (torch.onnx.export "
        "writes m.onnx plus m.onnx.data by default: zip both). Built-in: optional weights (safetensors or a "
        "weights-only state_dict); without a file the network starts from random weights, which is enough for a demo.",
    )
    architecture = forms.ChoiceField(required=False, help_text="Only for a built-in architecture.")
    num_classes = forms.IntegerField(
        required=False, min_value=1, help_text="Only for a built-in architecture; empty keeps its default."
    )
    input_shape = forms.CharField(
        required=False,
        max_length=100,
        help_text='Without the batch dimension, e.g. "3,224,224". Empty: read from the model.',
        widget=forms.TextInput(attrs={"placeholder": "3,224,224"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.architectures = architecture_choices()
        self.fields["architecture"].choices = [("", "Choose an architecture")] + [
            (a["name"], f"{a['name']} \u2014 {a['description']}") for a in self.architectures
        ]

    def clean_input_shape(self) -> list[int] | None:
        text = self.cleaned_data["input_shape"].strip().strip("[]()")
        if not text:
            return None
        parts = [p for p in re.split(r"[\s,x\u00d7]+", text) if p]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise forms.ValidationError('Write the input shape as numbers separated by commas, e.g. "3,224,224".')

    def clean(self):
        data = super().clean()
        if data.get("source") == ModelArtifact.Source.ONNX:
            # The architecture fields belong to the other choice of the radio button.
            data["architecture"] = ""
            data["num_classes"] = None
        return data

    def service_kwargs(self) -> dict:
        """Keyword arguments for ``webapp.modelhub.services.model_create``."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "source": data["source"],
            "upload": data.get("file"),
            "architecture": data["architecture"],
            "num_classes": data["num_classes"],
            "input_shape": data["input_shape"],
        }


# -- datasets --------------------------------------------------------------------


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    file = forms.FileField(
        help_text="A .npz with an input array x (float, or uint8 images) and optional integer labels y; "
        "or a .zip of images (png, jpg, bmp, gif, webp) in one folder per class, or without folders "
        "for unlabelled data.",
        widget=forms.ClearableFileInput(attrs={"accept": ".npz,.zip"}),
    )

    def service_kwargs(self) -> dict:
        """Keyword arguments for ``webapp.datahub.services.dataset_create`` (besides owner)."""
        return {"name": self.cleaned_data["name"], "upload": self.cleaned_data["file"]}


def _dataset_label(dataset) -> str:
    summary = dataset.summary
    shape = " \u00d7 ".join(str(d) for d in summary.get("sample_shape", []))
    labels = f"{summary.get('num_classes')} classes" if summary.get("labelled") else "unlabelled"
    return f"{dataset.name} \u2014 {summary.get('samples')} samples of {shape}, {labels}"


# -- jobs ------------------------------------------------------------------------

# Form fields of the job form; an algorithm parameter with one of these names gets
# a "param_" prefix.
_FIXED_FIELDS = {"name", "model", "algorithm", "config_list", "speedup", "dataset", "device", "quantize_after",
                 "quantize_params", "tags"}



def _param_field(schema: dict) -> forms.Field | None:
    """A form field for one property of an algorithm's parameter schema, or None
    when the form cannot express it (lists, objects: they go in JSON)."""
    help_text = schema.get("description", "")
    if "enum" in schema:
        values = list(schema["enum"])
        choices = [(str(v), str(v)) for v in values]
        if "default" not in schema:
            choices = [("", "(default)")] + choices
        return forms.TypedChoiceField(
            choices=choices,
            required=False,
            initial=str(schema["default"]) if "default" in schema else "",
            help_text=help_text,
            coerce=lambda text: next((v for v in values if str(v) == text), text),
            empty_value=None,
        )
    kind = schema.get("type")
    if kind == "boolean":
        return forms.BooleanField(required=False, initial=schema.get("default", False), help_text=help_text)
    if kind in ("integer", "number"):
        field_class = forms.IntegerField if kind == "integer" else forms.FloatField
        attrs = {}
        if kind == "number":
            attrs["step"] = "any"
        field = field_class(required=False, initial=schema.get("default"), help_text=help_text,
                            min_value=schema.get("minimum"), max_value=schema.get("maximum"))
        field.widget.attrs.update(attrs)
        return field
    if kind == "string":
        return forms.CharField(required=False, initial=schema.get("default", ""), help_text=help_text)
    return None


def _properties(spec) -> dict:
    return spec.params_schema.get("properties", {})


def _config_entry_keys(spec) -> set[str]:
    return set(_properties(spec).get("config_list", {}).get("items", {}).get("properties", {}))


def algorithm_sections(spec) -> list[str]:
    """The optional parts of the job form that ``spec`` uses, read from its registry entry:

    - ``sparsity`` / ``bits``: its config list entries take ``sparse_ratio`` / ``quant_bits``;
    - ``layers``: they select layers by name (``op_names``);
    - ``training``: its schema has ``training`` (the evaluator of data-dependent pruners, QAT);
      ``finetune``: fine-tuning after pruning, for all of those but quantizers (they train for their ``epochs``);
    - ``quantize_after``: its schema has ``quantization`` (prune, then quantize the smaller model);
    - ``speedup``: a pruner removing whole channels (``granularity`` out_channel), which speed-up takes out.

    Example::

        >>> algorithm_sections(get_algorithm("L1NormPruner"))
        ['sparsity', 'layers', 'training', 'finetune', 'quantize_after', 'speedup']
        >>> algorithm_sections(get_algorithm("NaiveQuantizer"))
        ['bits', 'layers']
    """
    keys = _config_entry_keys(spec)
    properties = _properties(spec)
    sections = []
    if "sparse_ratio" in keys:
        sections.append("sparsity")
    if "quant_bits" in keys:
        sections.append("bits")
    if "op_names" in keys:
        sections.append("layers")
    if "training" in properties:
        sections.append("training")
        if spec.kind != AlgorithmKind.QUANTIZATION:
            sections.append("finetune")
    if "quantization" in properties:
        sections.append("quantize_after")
    if spec.kind == AlgorithmKind.PRUNING and spec.granularity == "out_channel":
        sections.append("speedup")
    return sections


def quant_bits_choices(spec) -> list[int]:
    """The widths a quantizer takes, widest first, from its registry entry (none for other algorithms).

    Example::

        >>> quant_bits_choices(get_algorithm("PostTrainingQuantizer"))
        [8]
        >>> quant_bits_choices(get_algorithm("BNNQuantizer"))
        [1]
    """
    return list(spec.bit_widths) if spec.kind == AlgorithmKind.QUANTIZATION else []


def model_layer_picks(summary: dict) -> list[dict]:
    """The layers a config list can name, from a model's inspection summary: ``{"name", "type", "reason",
    "note"}`` per prunable layer (Conv*/Linear). From the prunability report: ``reason`` says why speed-up
    keeps all its channels (its group is not prunable; "" when it can remove some), ``note`` names an
    operation that keeps some of them.

    Example::

        >>> model_layer_picks(digits_model.summary)[-1]
        {'name': 'fc2', 'type': 'Linear', 'reason': 'model output', 'note': ''}
    """
    types = {layer.get("name"): layer.get("type", "") for layer in summary.get("layers", [])}
    report = summary.get("prunability") or {}
    reasons: dict[str, str] = {}
    for group in report.get("groups", []):
        if not group.get("prunable", True):
            for name in group.get("layers", []):
                reasons.setdefault(name, group.get("reason") or "its channels cannot be removed")
    notes: dict[str, str] = {}
    for item in report.get("unprunable", []):
        if item.get("layer"):
            notes.setdefault(item["layer"], item.get("reason") or "")
    fallback = f"channel pruning cannot be planned: {report['error']}" if report.get("error") else ""
    return [{"name": name, "type": types.get(name, ""), "reason": reasons.get(name, fallback),
             "note": notes.get(name, "")} for name in summary.get("prunable_layers", [])]


def _initial_value(field: forms.Field, value):
    # A choice field's options are the strings of the schema's values (see _param_field).
    return str(value) if isinstance(field, forms.ChoiceField) and value is not None else value


class _DeviceSelect(forms.Select):
    """A select whose options in ``unavailable`` are shown but cannot be chosen."""

    def __init__(self, *args, unavailable=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.unavailable = set(unavailable)

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex=subindex, attrs=attrs)
        if value in self.unavailable:
            option["attrs"]["disabled"] = True
        return option


NO_GPU_HINT = "no GPU worker is running"


class JobForm(forms.Form):
    model = forms.ModelChoiceField(queryset=ModelArtifact.objects.none(), empty_label=None)
    algorithm = forms.ChoiceField()
    config_list = forms.CharField(
        initial=DEFAULT_CONFIG_LIST,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
        help_text='NNI config list (JSON): which layers to compress and how much, e.g. '
        '[{"op_types": ["Conv2d"], "sparse_ratio": 0.5}] ("sparsity" is an alias) for a pruner, '
        '[{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}] for a quantizer. The controls above write it.',
    )
    quantize_after = forms.ChoiceField(
        required=False, label="Then quantize with",
        help_text="After pruning, fine-tuning and speed-up, quantize the smaller model (needs a dataset, "
        "except NaiveQuantizer and dynamic post-training int8).",
    )
    quantize_params = forms.CharField(
        required=False, label="Quantizer parameters",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "code"}),
        help_text='JSON, e.g. {"mode": "static", "config_list": [{"op_types": ["Conv2d", "Linear"]}]}; '
        "empty for the defaults (every Conv and Linear to int8).",
    )
    speedup = forms.BooleanField(
        required=False, initial=True, label="Speed up",
        help_text="Physically remove pruned channels, so the model gets smaller and faster.",
    )
    dataset = forms.ChoiceField(
        required=False, label="Dataset",
        help_text="Measures accuracy, feeds data-dependent pruners and fine-tuning; random inputs without one. "
        "Only the datasets that fit the chosen model are listed.",
    )
    device = forms.ChoiceField(
        initial=Job.Device.AUTO,
        help_text="Where the job runs and latency is measured. Auto: a GPU worker when one is running, else a "
                  "CPU worker (see Workers).",
    )
    tags = forms.CharField(
        required=False, max_length=500,
        help_text="Comma-separated labels to find and compare runs by, e.g. baseline, 50%; at most 10.",
    )
    name = forms.CharField(max_length=200, required=False, help_text="Optional; defaults to algorithm and model.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = model_selectors.model_ready_list(user=user)
        self.fields["model"].label_from_instance = lambda m: f"{m.name} (#{m.pk})"
        self.algorithms = all_algorithms()
        # The bits control's options, widest first; the page enables those the chosen quantizer takes.
        self.quant_bits = sorted({bits for spec in self.algorithms for bits in spec.bit_widths}, reverse=True)
        groups: dict[str, list] = {}
        for spec in self.algorithms:
            groups.setdefault(spec.kind.capitalize(), []).append((spec.name, spec.name))
        self.fields["algorithm"].choices = list(groups.items())
        if self.algorithms and "L1NormPruner" in {s.name for s in self.algorithms}:
            self.fields["algorithm"].initial = "L1NormPruner"
        self._setup_datasets(user)
        self._setup_device()

        # One field per scalar parameter of any algorithm (besides config_list and
        # training); algorithms whose parameter has the same schema share it, one
        # with another default or choices gets its own. The page shows those of
        # the chosen algorithm.
        self.spec_fields: dict[str, dict[str, str]] = {}  # algorithm -> parameter -> form field name
        self.param_algorithms: dict[str, list[str]] = {}  # form field name -> algorithms
        by_schema: dict[tuple[str, str], str] = {}
        for spec in self.algorithms:
            fields = self.spec_fields.setdefault(spec.name, {})
            for prop, schema in spec.params_schema.get("properties", {}).items():
                if prop in ("config_list", "training"):
                    continue
                key = (prop, json.dumps(schema, sort_keys=True))
                if key in by_schema:
                    fields[prop] = by_schema[key]
                    self.param_algorithms[by_schema[key]].append(spec.name)
                    continue
                field = _param_field(schema)
                if field is None:
                    continue
                field.label = prop.replace("_", " ").capitalize()
                field_name = f"param_{prop}" if prop in _FIXED_FIELDS else prop
                if field_name in self.fields:
                    field_name = f"{field_name}__{spec.name}"
                self.fields[field_name] = field
                by_schema[key] = field_name
                fields[prop] = field_name
                self.param_algorithms[field_name] = [spec.name]
        self.sections = {spec.name: algorithm_sections(spec) for spec in self.algorithms}
        self.fields["quantize_after"].choices = [("", "Nothing (no quantization)")] + [
            (s.name, s.name) for s in self.algorithms if s.kind == AlgorithmKind.QUANTIZATION]
        self.training_fields: dict[str, str] = {}
        for prop, schema in TRAINING_SCHEMA["properties"].items():
            field = _param_field(schema)
            field.label = prop.replace("_", " ").capitalize()
            self.fields[f"training_{prop}"] = field
            self.training_fields[prop] = f"training_{prop}"
        for field_name in self.training_fields.values():
            if field_name in self.initial:
                self.initial[field_name] = _initial_value(self.fields[field_name], self.initial[field_name])
        for prop, value in (self.initial.get("params") or {}).items():
            field_name = self.spec_fields.get(self.initial.get("algorithm"), {}).get(prop)
            if field_name is not None:
                self.initial[field_name] = _initial_value(self.fields[field_name], value)

    def _setup_datasets(self, user) -> None:
        # Uploads are "upload:<id>" among the built-in names; only the user's own are offered, and of
        # those (and the built-in ones) the page lists the ones that fit the chosen model.
        self.uploaded_datasets = {
            f"upload:{dataset.pk}": dataset for dataset in dataset_selectors.dataset_ready_list(user=user)
        }
        dataset_choices = [("", "None (random inputs)"), ("Built-in", [
            (name, f"{name} \u2014 {spec.description}") for name, spec in BUILTIN_DATASETS.items()
        ])]
        if self.uploaded_datasets:
            dataset_choices.append(("Your uploads", [
                (key, _dataset_label(dataset)) for key, dataset in self.uploaded_datasets.items()
            ]))
        self.fields["dataset"].choices = dataset_choices
        if not self.is_bound and self.initial.get("dataset") is None:
            model = self._initial_model()
            self.initial["dataset"] = self.dataset_fit(model)["default"] if model is not None else ""

    def _initial_model(self):
        models = self.fields["model"].queryset
        chosen = self.initial.get("model")
        if chosen not in (None, ""):
            try:
                return models.get(pk=getattr(chosen, "pk", chosen))
            except (ModelArtifact.DoesNotExist, ValueError, TypeError):
                pass
        return models.first()

    def _setup_device(self) -> None:
        self.gpu_available = settings.CONDENSE_GPU_JOBS_WAIT or gpu_worker_alive()
        gpu_label = "GPU" if self.gpu_available else f"GPU ({NO_GPU_HINT})"
        field = self.fields["device"]
        # The choice stays valid, so a GPU asked for anyway gets job_create's message naming the fix.
        field.choices = [(Job.Device.AUTO, "Auto"), (Job.Device.CPU, "CPU"), (Job.Device.GPU, gpu_label)]
        field.widget = _DeviceSelect(choices=field.choices,
                                     unavailable=() if self.gpu_available else (Job.Device.GPU,))
        if not self.gpu_available:
            field.help_text += f" GPU: {NO_GPU_HINT}; start one to offer it (see Workers)."

    def dataset_fit(self, model) -> dict:
        """``{"datasets": [choice values that fit model], "default": the value to start from}``: a built-in
        dataset that fits, else the user's upload whose samples have the model's input shape, else one that
        fits, else "" (random inputs)."""
        shape = list(model.input_shape)
        builtin = [name for name in BUILTIN_DATASETS
                   if not dataset_selectors.dataset_fit_error(shape, builtin=name)]
        uploads = [key for key, upload in self.uploaded_datasets.items()
                   if not dataset_selectors.dataset_fit_error(shape, upload=upload)]
        # Samples of the model's own shape first: the others fit by resizing or reshaping.
        exact = [key for key in uploads if self.uploaded_datasets[key].summary.get("sample_shape") == shape]
        return {"datasets": builtin + uploads, "default": (builtin + exact + uploads + [""])[0]}

    def model_infos(self) -> dict:
        """Per ready model (by id): its input shape, the layers the picker offers and the datasets that fit;
        the page reads it as JSON (``json_script``) when the model changes."""
        return {str(model.pk): {"input_shape": list(model.input_shape),
                                "layers": model_layer_picks(model.summary or {}), **self.dataset_fit(model)}
                for model in self.fields["model"].queryset}

    def algorithm_infos(self):
        return [{**spec.as_dict(), "when_to_use": spec.when_to_use,
                 "default_config_list": DEFAULT_CONFIG_LISTS.get(spec.kind, DEFAULT_CONFIG_LIST)}
                for spec in self.algorithms]

    def algorithm_controls(self) -> dict:
        """Per algorithm: the sections it uses (:func:`algorithm_sections`), the bit widths it takes and its
        granularity (a channel pruner cannot pick the layers whose channels stay); the page reads it as JSON
        (``json_script``)."""
        return {spec.name: {"sections": self.sections[spec.name], "bits": quant_bits_choices(spec),
                            "granularity": spec.granularity}
                for spec in self.algorithms}

    def param_bound_fields(self):
        """(bound field, space-separated algorithm names) for the template."""
        return [(self[field_name], " ".join(names)) for field_name, names in self.param_algorithms.items()]

    def training_bound_fields(self):
        """(bound field, section: "finetune" for fine-tuning after pruning, else "training") for the template."""
        return [(self[field_name], "finetune" if prop == "finetune_epochs" else "training")
                for prop, field_name in self.training_fields.items()]

    def clean_quantize_params(self):
        text = self.cleaned_data["quantize_params"].strip()
        if not text:
            return {}
        try:
            value = loads_bounded(text)
        except ValueError as exc:  # JSONDecodeError, or nested too deeply
            raise forms.ValidationError(f"The quantizer parameters are not valid JSON: {exc}")
        if not isinstance(value, dict):
            raise forms.ValidationError('The quantizer parameters must be a JSON object, e.g. {"mode": "static"}.')
        return value

    def clean_config_list(self):
        text = self.cleaned_data["config_list"]
        try:
            value = loads_bounded(text)
        except ValueError as exc:  # JSONDecodeError, or nested too deeply
            raise forms.ValidationError(f"The config list is not valid JSON: {exc}")
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise forms.ValidationError(
                'The config list must be a JSON list of objects, e.g. [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}].'
            )
        return value

    def clean_tags(self) -> list[str]:
        # Comma-separated; job_create strips them and checks their count and length.
        return self.cleaned_data["tags"].split(",")

    def clean(self):
        data = super().clean()
        model, dataset = data.get("model"), data.get("dataset")
        if model is not None and dataset:
            upload = self.uploaded_datasets.get(dataset)
            error = dataset_selectors.dataset_fit_error(
                list(model.input_shape), builtin="" if upload is not None else dataset, upload=upload)
            if error:
                self.add_error("dataset", error)
        return data

    def params(self) -> dict:
        """The chosen algorithm's ``params``: the config list plus the parameters
        its schema names (empty number fields are left to the schema default)."""
        data = self.cleaned_data
        sections = self.sections[data["algorithm"]]
        params = {"config_list": data["config_list"]}
        for prop, field_name in self.spec_fields[data["algorithm"]].items():
            value = data.get(field_name)
            if value is None or value == "":
                continue
            params[prop] = value
        if "training" in sections:
            training = {prop: data.get(field_name) for prop, field_name in self.training_fields.items()
                        if prop != "finetune_epochs" or "finetune" in sections}
            training = {prop: value for prop, value in training.items() if value is not None and value != ""}
            if training:
                params["training"] = training
        if data.get("quantize_after") and "quantize_after" in sections:
            params["quantization"] = {"algorithm": data["quantize_after"], "params": data.get("quantize_params") or {}}
        return params

    def service_kwargs(self) -> dict:
        """Keyword arguments for ``webapp.jobs.services.job_create`` (besides owner)."""
        data = self.cleaned_data
        upload = self.uploaded_datasets.get(data["dataset"])
        return {
            "model": data["model"],
            "algorithm": data["algorithm"],
            "params": self.params(),
            "speedup": data["speedup"] and "speedup" in self.sections[data["algorithm"]],
            "dataset": "" if upload is not None else (data["dataset"] or ""),
            "dataset_upload": upload,
            "device": data["device"],
            "name": data["name"],
            "tags": data["tags"],
        }


def job_form_initial(job: Job) -> dict:
    """The job form's initial values that make ``job`` again (clone): its model, algorithm, config list,
    parameters, training, quantizer after, dataset, device, speed-up and tags, named "<name> (copy)"."""
    params = dict(job.params)
    initial = {
        "model": job.model_id,
        "algorithm": job.algorithm,
        "config_list": json.dumps(params.pop("config_list", []), indent=1),
        "speedup": job.speedup,
        "dataset": f"upload:{job.dataset_upload_id}" if job.dataset_upload_id else job.dataset,
        "device": job.device,
        "tags": ", ".join(job.tags or []),
        "name": f"{job.name} (copy)" if job.name else "",
    }
    quantization = params.pop("quantization", None)
    if quantization:
        initial["quantize_after"] = quantization.get("algorithm", "")
        initial["quantize_params"] = json.dumps(quantization.get("params") or {})
    for prop, value in (params.pop("training", None) or {}).items():
        initial[f"training_{prop}"] = value
    initial["params"] = params  # the algorithm's own: JobForm puts them in the fields it made for them
    return initial
