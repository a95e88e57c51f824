"""``load_model`` / ``save_model``: the safe front door for model files."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..models import ARCHITECTURES, build_architecture
from ..speedup import apply_pruning_plan, plan_from_state_dict
from .detect import detect_format
from .errors import (
    PICKLE_REFUSED_MESSAGE,
    TORCH_EXPORT_REFUSED_MESSAGE,
    TORCHSCRIPT_REFUSED_MESSAGE,
    ModelFormatError,
)
from .onnx import DEFAULT_OPSET, consolidate_onnx, example_inputs_for, export_onnx, load_onnx
from ..data.limits import IntakeLimits
from .weights import (
    NotWeightsOnly,
    extract_state_dict,
    infer_num_classes,
    load_state_dict_checked,
    plan_path_for,
    read_safetensors,
    read_torch_state_dict,
    save_safetensors,
)

__all__ = ["load_model", "save_model", "LOAD_OPTIONS"]

PathLike = Union[str, os.PathLike]

#: Extra keyword options accepted by :func:`load_model` and their defaults.
LOAD_OPTIONS: Dict[str, Any] = {
    "verify": False,         # ONNX: compare with onnxruntime on random input (ModelFormatError if not equal)
    "atol": 1e-4,            # ONNX: tolerance of that check
    "external_data": False,  # ONNX: read tensors stored in files next to the model (only from that folder)
    "external_data_dir": None,  # ONNX: the folder holding the model's external-data files (only from there)
    "fixed_inputs": None,    # ONNX: {input name: value} made constants at import (folds If nodes they decide)
    "input_shapes": None,    # ONNX: {input name: [size or None per dim]} fixes dynamic dims (folds length checks)
    "limits": None,          # IntakeLimits: caps checked before anything is built (None: the defaults)
    "max_zip_entries": None,  # ONNX zip: most files the archive may hold (None: limits.max_zip_entries)
    "max_unpacked_bytes": None,  # ONNX zip: most bytes it may unpack to (None: limits.max_unpacked_bytes)
    "plan": None,            # weights: pruning plan (dict or JSON path); None = use <stem>.plan.json if present, False = never
    "map_location": "cpu",   # trusted pickles / TorchScript
}

ARCHITECTURE_METADATA_KEY = "condense.architecture"
NUM_CLASSES_METADATA_KEY = "condense.num_classes"


def _name(path: PathLike) -> str:
    return Path(path).name or str(path)


def load_model(
    path: PathLike,
    *,
    architecture: Optional[str] = None,
    num_classes: Optional[int] = None,
    trusted: bool = False,
    **options: Any,
) -> nn.Module:
    """Load a model file, recognising its format from the content; return an eval-mode ``nn.Module``.

    - **ONNX** -> ``torch.fx.GraphModule`` (onnx2torch, opset 11 and newer,
      weights stored as ``Constant`` nodes accepted). ``verify=True`` also
      checks it against onnxruntime. A model with external data (the dynamo
      exporter's ``m.onnx`` + ``m.onnx.data``) loads from a **.zip** of both,
      a **folder** holding one ``.onnx`` and its data, or the ``.onnx`` with
      ``external_data_dir=``; locations are read only from inside that folder.
      ``fixed_inputs={"sr": 16000}`` makes those inputs constants (a setting
      such as silero-vad's sample rate), so the ``If`` nodes they decide fold
      and the model no longer takes them; ``input_shapes={"input": [None, 512]}``
      fixes dynamic dims, which folds ``If`` nodes that check a sequence length.
    - **safetensors** or a **weights-only state_dict** (``torch.save(model.state_dict())``,
      read with ``torch.load(weights_only=True)``) -> ``build_architecture(architecture, num_classes)``
      with the weights loaded strictly. ``num_classes`` defaults to what the
      classifier weights say. A pruning plan (``plan=`` or ``<stem>.plan.json``
      beside the file; ``ModelSpeedup.plan`` or ``{"modules": [names]}``) first
      gives the layers it names their pruned shapes.
    - **pickled models, TorchScript, torch.export archives** are refused with
      :class:`ModelFormatError` unless ``trusted=True`` (then loaded with
      ``torch.load(weights_only=False)`` / ``torch.jit.load`` / ``torch.export.load``).

    Other options: see :data:`LOAD_OPTIONS`. ``limits=IntakeLimits(...)``
    bounds what reading the file may cost: ONNX structure (nodes, declared
    tensor sizes), zips (central directory, bytes inflated), safetensors headers
    (see :class:`~compression_core.data.limits.IntakeLimits`). Anything
    unreadable raises :class:`ModelFormatError` with a message for the uploader.

    Example::

        >>> model = load_model("resnet18.onnx")                                   # ONNX
        >>> model = load_model("export.zip")                  # m.onnx + m.onnx.data (torch.onnx.export's default)
        >>> vad = load_model("silero_vad.onnx", fixed_inputs={"sr": 16000})     # If(sr == 16000) folded
        >>> model = load_model("weights.safetensors", architecture="resnet18")    # weights
        >>> load_model("model.pt")        # torch.save(model): refused
        Traceback (most recent call last):
        ModelFormatError: This file is a Python pickle (torch.save of a whole model); ...
    """
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise TypeError(
            f"load_model() got unexpected option(s) {', '.join(unknown)}; accepted: {', '.join(LOAD_OPTIONS)}"
        )
    opts = {**LOAD_OPTIONS, **options}
    opts["limits"] = _intake_limits(opts)
    path = Path(path)
    name = _name(path)
    if path.is_dir() or (path.is_file() and opts["external_data_dir"] is not None):
        return _load_onnx_bundle(path, opts)
    if not path.is_file():
        raise ModelFormatError(f"{name} does not exist or is not a file")

    fmt = detect_format(path)
    if fmt == "onnx":
        return load_onnx(path, verify=bool(opts["verify"]), atol=float(opts["atol"]),
                         external_data=bool(opts["external_data"]), fixed_inputs=opts["fixed_inputs"],
                         input_shapes=opts["input_shapes"], limits=opts["limits"])
    if fmt == "onnx_zip":
        return _load_onnx_bundle(path, opts)

    if fmt == "safetensors":
        state_dict, metadata = read_safetensors(path, opts["limits"])
        return _weights_into_architecture(path, state_dict, metadata, architecture, num_classes, opts["plan"])

    if fmt in ("torch_zip", "pickle"):
        try:
            obj = read_torch_state_dict(path, limits=opts["limits"])
        except NotWeightsOnly:
            if not trusted:
                raise ModelFormatError(PICKLE_REFUSED_MESSAGE) from None
            return _trusted_pickle(path, architecture, num_classes, opts)
        state_dict = extract_state_dict(obj)
        if state_dict is None:
            raise ModelFormatError(
                f"{name} holds a {type(obj).__name__}, not a state_dict (a dict of parameter name -> tensor). "
                "Save it with torch.save(model.state_dict(), path) or safetensors."
            )
        return _weights_into_architecture(path, state_dict, {}, architecture, num_classes, opts["plan"])

    if fmt == "torchscript":
        if not trusted:
            raise ModelFormatError(TORCHSCRIPT_REFUSED_MESSAGE)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(path), map_location=opts["map_location"])
        except Exception as exc:  # noqa: BLE001
            raise ModelFormatError(f"{name} is not a loadable TorchScript archive: {exc}") from exc
        return module.eval()

    if fmt == "torch_export":
        if not trusted:
            raise ModelFormatError(TORCH_EXPORT_REFUSED_MESSAGE)
        try:
            module = torch.export.load(str(path)).module()
        except Exception as exc:  # noqa: BLE001
            raise ModelFormatError(f"{name} is not a loadable torch.export archive: {exc}") from exc
        return module

    if path.suffix.lower() == ".onnx":
        # Named .onnx but not even the start of one: say so in ONNX terms.
        raise ModelFormatError(f"{name} is not a valid ONNX model: its content is not an ONNX protobuf")
    raise ModelFormatError(
        f"{name} is not an ONNX model, safetensors file or state_dict (torch.save(model.state_dict())). "
        "Upload an ONNX export, or weights for a built-in architecture."
    )


def _intake_limits(opts: Dict[str, Any]) -> IntakeLimits:
    """``opts["limits"]`` with the zip caps given as their own options."""
    limits = opts["limits"] or IntakeLimits()
    if not isinstance(limits, IntakeLimits):
        raise TypeError(f"load_model(limits=...) takes an IntakeLimits, got {type(limits).__name__}")
    if opts["max_zip_entries"] is not None:
        limits = replace(limits, max_zip_entries=int(opts["max_zip_entries"]))
    if opts["max_unpacked_bytes"] is not None:
        limits = replace(limits, max_unpacked_bytes=int(opts["max_unpacked_bytes"]))
    return limits


def _load_onnx_bundle(path: Path, opts: Dict[str, Any]) -> nn.Module:
    """An ONNX model with external data (a zip, a folder, or a file and its data folder), made one file first."""
    with tempfile.TemporaryDirectory(prefix="condense-onnx-") as tmp:
        target = Path(tmp) / (path.name if path.suffix.lower() == ".onnx" else "model.onnx")
        single = consolidate_onnx(path, target, external_data_dir=opts["external_data_dir"], limits=opts["limits"])
        return load_onnx(single, verify=bool(opts["verify"]), atol=float(opts["atol"]),
                         fixed_inputs=opts["fixed_inputs"], input_shapes=opts["input_shapes"], limits=opts["limits"])


def _read_plan(path: Path, plan) -> Optional[dict]:
    if plan is False:
        return None
    if plan is None:
        candidate = plan_path_for(path)
        if not candidate.is_file():
            return None
        plan = candidate
    if isinstance(plan, (str, os.PathLike)):
        try:
            plan = json.loads(Path(plan).read_text())
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"the pruning plan {_name(plan)} cannot be read: {exc}") from exc
    if not isinstance(plan, dict):
        raise ModelFormatError("a pruning plan must be a JSON object")
    return plan


def _is_speedup_plan(plan: dict) -> bool:
    """``ModelSpeedup.plan``: ``{module_or_tensor_name: {"type": ..., ...}}``."""
    return bool(plan) and all(isinstance(v, dict) and "type" in v for v in plan.values())


def _plan_module_names(plan: dict) -> list:
    modules = plan.get("modules")
    if isinstance(modules, dict):
        return list(modules)
    if isinstance(modules, list):
        return [m if isinstance(m, str) else m.get("name") for m in modules]
    return []


def _apply_plan(model: nn.Module, plan: dict, state_dict, source: str) -> None:
    """Give a fresh architecture the pruned shapes recorded in ``plan``.

    A plan from :class:`compression_core.speedup.ModelSpeedup` (``speedup.plan``)
    is replayed by ``apply_pruning_plan``; a plan of the form ``{"modules": [names]}``
    first becomes one that gives the named Conv/Linear/norm/attention layers the
    shapes found in the weights (``plan_from_state_dict``).
    """
    if not _is_speedup_plan(plan):
        plan = plan_from_state_dict(model, state_dict, _plan_module_names(plan))
    try:
        apply_pruning_plan(model, plan)
    except ValueError as exc:  # SpeedupError
        raise ModelFormatError(f"The pruning plan for {source} does not fit the architecture: {exc}") from exc


def _weights_into_architecture(path: Path, state_dict, metadata, architecture, num_classes, plan_option) -> nn.Module:
    name = _name(path)
    plan = _read_plan(path, plan_option)
    plan_info = plan if plan is not None and not _is_speedup_plan(plan) else {}
    if architecture is None:
        architecture = metadata.get(ARCHITECTURE_METADATA_KEY) or plan_info.get("architecture")
    if architecture is None:
        raise ModelFormatError(
            f"{name} holds only weights (a state_dict); choose its architecture "
            f"(architecture=...) from: {', '.join(sorted(ARCHITECTURES))}."
        )
    if architecture not in ARCHITECTURES:
        raise ModelFormatError(
            f"Unknown architecture {architecture!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    if num_classes is None:
        stored = metadata.get(NUM_CLASSES_METADATA_KEY) or plan_info.get("num_classes")
        try:
            num_classes = int(stored) if stored else None
        except (TypeError, ValueError):
            num_classes = None
    model = build_architecture(architecture, num_classes)
    if num_classes is None:
        inferred = infer_num_classes(model, state_dict)
        if inferred is not None:
            model = build_architecture(architecture, inferred)
    if plan is not None:
        _apply_plan(model, plan, state_dict, name)
        model.condense_plan = plan
    load_state_dict_checked(model, state_dict, source=name, architecture=architecture)
    return model.eval()


def _trusted_pickle(path: Path, architecture, num_classes, opts) -> nn.Module:
    name = _name(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location=opts["map_location"], weights_only=False)
    except Exception as exc:  # noqa: BLE001 - missing classes, corrupt data
        raise ModelFormatError(f"{name} could not be unpickled: {exc}") from exc
    if isinstance(obj, nn.Module):
        return obj.eval()
    state_dict = extract_state_dict(obj)
    if state_dict is not None:
        return _weights_into_architecture(path, state_dict, {}, architecture, num_classes, opts["plan"])
    raise ModelFormatError(f"{name} holds a {type(obj).__name__}, not a model or a state_dict")


def save_model(
    model: nn.Module,
    path: PathLike,
    *,
    example_inputs=None,
    plan: Optional[dict] = None,
    opset: int = DEFAULT_OPSET,
) -> dict:
    """Save ``model`` in the format named by the suffix of ``path``; return ``{"path", "bytes", "format", ...}``.

    - ``.onnx``: ``torch.onnx.export`` (opset 17, dynamic batch axis, constant
      folding), then loaded and run in onnxruntime. ``example_inputs`` defaults
      to random inputs of ``model.condense_input_shapes`` when the model has it
      (models from :func:`load_model` / ``build_architecture`` do).
    - ``.safetensors``: the state_dict (contiguous, tied tensors cloned). With
      ``plan`` (a JSON-serialisable dict, e.g. the pruning plan) also writes
      ``<stem>.plan.json`` next to it (its path is returned as ``plan_path``).

    - ``.pt``: a TorchScript archive (``torch.jit.trace`` on ``example_inputs``),
      the form PyTorch ships int8 models in: ``torch.jit.load(path)`` runs it
      without Condense (``load_model(path, trusted=True)`` reads it back; being
      code, it is refused otherwise). The archive is loaded and checked
      against ``model``; ``max_abs_diff`` is returned.

    Other suffixes raise ``ValueError``.

    Example::

        >>> save_model(model, "out/model.onnx", example_inputs=torch.randn(1, 3, 224, 224))
        {'path': 'out/model.onnx', 'bytes': 46712345, 'format': 'onnx', 'opset': 17, 'max_abs_diff': 2e-06}
        >>> save_model(model, "out/model.safetensors", plan={"modules": {...}})["plan_path"]
        'out/model.plan.json'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if example_inputs is None:
            example_inputs = example_inputs_for(model)
            if example_inputs is None:
                raise ValueError("save_model(..., '.onnx') needs example_inputs for this model")
        path.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(model, path, example_inputs, opset=opset)
    if suffix == ".safetensors":
        if plan is not None:
            try:
                plan_text = json.dumps(plan, indent=2, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"plan must be JSON-serialisable: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt"}
        arch = getattr(model, "condense_architecture", None)
        if isinstance(arch, str):
            metadata[ARCHITECTURE_METADATA_KEY] = arch
            classes = _classifier_outputs(model)
            if classes is not None:
                metadata[NUM_CLASSES_METADATA_KEY] = str(classes)
        size = save_safetensors(model, path, metadata)
        result = {"path": str(path), "bytes": size, "format": "safetensors"}
        if plan is not None:
            plan_file = plan_path_for(path)
            plan_file.write_text(plan_text)
            result["plan_path"] = str(plan_file)
        return result
    if suffix == ".pt":
        if example_inputs is None:
            raise ValueError("save_model(..., '.pt') traces the model: give example_inputs")
        path.parent.mkdir(parents=True, exist_ok=True)
        return _save_torchscript(model, path, example_inputs)
    raise ValueError(f"cannot save a model as {path.name!r}: use a .onnx, .safetensors or .pt (TorchScript) file name")


def _save_torchscript(model: nn.Module, path: Path, example_inputs) -> dict:
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the archive is what users load
            scripted = torch.jit.trace(model, inputs, check_trace=False)
            torch.jit.save(scripted, str(path))
            loaded = torch.jit.load(str(path), map_location="cpu")
            expected, got = model(*inputs), loaded(*inputs)
    except Exception as exc:
        raise RuntimeError(f"TorchScript export of the model failed: {str(exc).splitlines()[0]}") from exc
    finally:
        model.train(was_training)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    got = got[0] if isinstance(got, (tuple, list)) else got
    diff = float((expected.float() - got.float()).abs().max()) if expected.numel() else 0.0
    return {"path": str(path), "bytes": path.stat().st_size, "format": "torchscript", "max_abs_diff": diff}


def _classifier_outputs(model: nn.Module) -> Optional[int]:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return None if last is None else int(last.out_features)
