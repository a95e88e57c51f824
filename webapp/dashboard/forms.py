"""Dashboard forms. They only turn browser input into the values the services
take (parsing JSON, shapes, checkboxes); every rule about models and jobs is
checked by ``webapp.modelhub.services`` / ``webapp.jobs.services``."""

from __future__ import annotations

import json
import re

from django import forms

from compression_core import registry
from compression_core.architectures import architecture_choices
from compression_core.datasets import BUILTIN_DATASETS
from webapp.jobs.models import Job
from webapp.modelhub import selectors as model_selectors
from webapp.modelhub.models import ModelArtifact

DEFAULT_CONFIG_LIST = '[{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]'


class ModelUploadForm(forms.Form):
    name = forms.CharField(
        max_length=200, required=False, help_text="Defaults to the file name or the architecture."
    )
    source = forms.ChoiceField(
        choices=ModelArtifact.Source.choices, initial=ModelArtifact.Source.ONNX, widget=forms.RadioSelect
    )
    file = forms.FileField(
        required=False,
        help_text="ONNX: the model file. Built-in: optional weights (safetensors or a weights-only state_dict); "
        "without a file the network starts from random weights, which is enough for a demo.",
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


# -- jobs ------------------------------------------------------------------------

# Form fields of the job form; an algorithm parameter with one of these names gets
# a "param_" prefix.
_FIXED_FIELDS = {"name", "model", "algorithm", "config_list", "speedup", "dataset", "device"}


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


class JobForm(forms.Form):
    model = forms.ModelChoiceField(queryset=ModelArtifact.objects.none(), empty_label=None)
    algorithm = forms.ChoiceField()
    config_list = forms.CharField(
        initial=DEFAULT_CONFIG_LIST,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
        help_text='NNI config list (JSON): which layers to compress and how much, e.g. '
        '[{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]. "sparsity" is accepted as an alias.',
    )
    speedup = forms.BooleanField(
        required=False, initial=True, label="Speed up",
        help_text="Physically remove pruned channels, so the model gets smaller and faster.",
    )
    dataset = forms.ChoiceField(required=False, label="Evaluation dataset")
    device = forms.ChoiceField(
        choices=[(value, value.upper()) for value in Job.Device.values], initial=Job.Device.CPU,
        help_text="Where the job runs and latency is measured; GPU jobs go to GPU workers.",
    )
    name = forms.CharField(max_length=200, required=False, help_text="Optional; defaults to algorithm and model.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = model_selectors.model_list(user=user)
        self.fields["model"].label_from_instance = lambda m: f"{m.name} (#{m.pk})"
        self.algorithms = registry.all_algorithms()
        groups: dict[str, list] = {}
        for spec in self.algorithms:
            groups.setdefault(spec.kind.capitalize(), []).append((spec.name, spec.name))
        self.fields["algorithm"].choices = list(groups.items())
        if self.algorithms and "L1NormPruner" in {s.name for s in self.algorithms}:
            self.fields["algorithm"].initial = "L1NormPruner"
        self.fields["dataset"].choices = [("", "None (random inputs)")] + [
            (name, f"{name} \u2014 {spec.description}") for name, spec in BUILTIN_DATASETS.items()
        ]

        # One field per scalar parameter of any algorithm (besides config_list);
        # the page shows those of the chosen algorithm.
        self.param_fields: dict[str, str] = {}  # parameter -> form field name
        self.param_algorithms: dict[str, list[str]] = {}
        for spec in self.algorithms:
            for prop, schema in spec.params_schema.get("properties", {}).items():
                if prop == "config_list":
                    continue
                if prop in self.param_fields:
                    self.param_algorithms[prop].append(spec.name)
                    continue
                field = _param_field(schema)
                if field is None:
                    continue
                field.label = prop.replace("_", " ").capitalize()
                field_name = f"param_{prop}" if prop in _FIXED_FIELDS else prop
                self.fields[field_name] = field
                self.param_fields[prop] = field_name
                self.param_algorithms[prop] = [spec.name]

    def param_bound_fields(self):
        """(bound field, space-separated algorithm names) for the template."""
        return [
            (self[field_name], " ".join(self.param_algorithms[prop]))
            for prop, field_name in self.param_fields.items()
        ]

    def algorithm_infos(self):
        return [spec.as_dict() for spec in self.algorithms]

    def clean_config_list(self):
        text = self.cleaned_data["config_list"]
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"The config list is not valid JSON: {exc}")
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise forms.ValidationError(
                'The config list must be a JSON list of objects, e.g. [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}].'
            )
        return value

    def params(self) -> dict:
        """The chosen algorithm's ``params``: the config list plus the parameters
        its schema names (empty number fields are left to the schema default)."""
        data = self.cleaned_data
        spec = next(s for s in self.algorithms if s.name == data["algorithm"])
        params = {"config_list": data["config_list"]}
        for prop in spec.params_schema.get("properties", {}):
            field_name = self.param_fields.get(prop)
            if field_name is None:
                continue
            value = data.get(field_name)
            if value is None or value == "":
                continue
            params[prop] = value
        return params

    def service_kwargs(self) -> dict:
        """Keyword arguments for ``webapp.jobs.services.job_create`` (besides owner)."""
        data = self.cleaned_data
        return {
            "model": data["model"],
            "algorithm": data["algorithm"],
            "params": self.params(),
            "speedup": data["speedup"],
            "dataset": data["dataset"] or "",
            "device": data["device"],
            "name": data["name"],
        }
