"""Post-training quantization to a real int8 model (PyTorch's FX graph mode, x86 CPU kernels).

- ``mode="static"``: weights and activations int8. The model is traced with
  torch.fx, Conv/Linear + BatchNorm + ReLU fused (also any ``fuse_names``
  groups), observers are run over calibration data (per-channel weight
  scales by default), then converted to ``torch.ao.nn.quantized`` modules.
- ``mode="dynamic"``: Linear / LSTM / GRU weights int8, activations
  quantized on the fly per batch (``torch.ao.quantization.quantize_dynamic``);
  no data needed.

A selected layer that cannot become int8 (no int8 kernel for its type, a
conversion error, code torch.fx cannot trace) is a ``ValueError`` naming it
and saying what to change, unless ``allow_float=True``: then it stays
float32 and :attr:`PostTrainingQuantizer.report` lists it with the reason.

The quantizer sets ``torch.backends.quantized.engine`` to ``backend``:
the converted model's packed weights run on that engine.

Example::

    >>> config_list = [{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}]
    >>> quantizer = PostTrainingQuantizer(model, config_list, calibration_data=images)  # doctest: +SKIP
    >>> int8_model, calibration_config = quantizer.compress()  # doctest: +SKIP
    >>> print(quantizer.report.summary())  # resnet18, 32 images  # doctest: +SKIP
    static (x86): 21 layers quantized, 0 kept float, 0 fused; 1 calibration batches
      size: 46835019 -> 11838303 bytes (3.96x smaller)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.ao.quantization import QConfigMapping, fuse_modules, quantize_dynamic
from torch.ao.quantization.backend_config import get_native_backend_config
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

from ..config.quantization import LayerQuantSpec, fuse_groups, parse_quant_config_list, resolve_layers
from ..data import first_batch
from ..evaluation.evaluator import TorchEvaluator
from .calibrate import calibrate
from .calibration import converted_records, is_int8_module, merge_records, observed_records
from .qconfig import (
    OBSERVERS,
    activation_qconfig,
    check_backend,
    check_int8,
    dynamic_qconfig,
    int8_qconfig,
    quiet_torch_ao,
)
from .report import QuantizationReport, serialized_bytes
from .tracing import _first_line, plan_regions

MODES = ("static", "dynamic")
DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


@dataclass(frozen=True)
class PostTrainingConfig:
    """Options of :class:`PostTrainingQuantizer` (besides the model, config_list and data).

    - ``mode``: ``static`` (weights and activations int8, needs calibration
      data) or ``dynamic`` (Linear/LSTM/GRU weights int8, no data; recurrent
      layers get one weight scale per tensor, as PyTorch's dynamic RNN kernels take).
    - ``backend``: PyTorch's quantized engine, ``x86`` (default), ``fbgemm``,
      ``onednn`` or ``qnnpack``.
    - ``observer``: how activation ranges are measured: ``histogram``
      (PyTorch's default, minimises the quantization error), ``minmax``,
      ``moving_average_minmax``.
    - ``allow_float``: keep layers that cannot become int8 in float32 (and
      report them) instead of raising.
    - ``reduce_range``: 7-bit activations, which avoids overflow on CPUs
      without VNNI (PyTorch's default for x86/fbgemm).
    - ``calibration_batch_size`` / ``max_calibration_batches``: how a
      calibration tensor is split, and how many batches are used.
    - ``max_calibration_steps``: steps of an evaluator's training loop when
      it has no ``evaluating_func`` (its optimizer step is skipped).
    """

    mode: str = "static"
    backend: str = "x86"
    observer: str = "histogram"
    allow_float: bool = False
    reduce_range: bool = True
    calibration_batch_size: int = 32
    max_calibration_batches: int | None = None
    max_calibration_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_backend(self.backend)
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}, got {self.observer!r}")
        if self.calibration_batch_size < 1:
            raise ValueError("calibration_batch_size must be >= 1")
        for name in ("max_calibration_batches", "max_calibration_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None for all)")


@functools.lru_cache(maxsize=1)
def static_int8_types() -> frozenset[type]:
    """Module types with a static int8 kernel in PyTorch's native backend config (x86/fbgemm/onednn)."""
    types = set()
    for config in get_native_backend_config().configs:
        pattern = config.pattern
        static = any(dc.input_dtype == torch.quint8 and not dc.is_dynamic for dc in config.dtype_configs)
        if static and isinstance(pattern, type) and issubclass(pattern, nn.Module):
            types.add(pattern)
    return frozenset(types)


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _depth(name: str) -> tuple[int, str]:
    return (0 if not name else name.count(".") + 1, name)


def _relative(name: str, region: str) -> str | None:
    if not region:
        return name
    if name == region:
        return ""
    return name[len(region) + 1:] if name.startswith(region + ".") else None


def _is_leaf(module: nn.Module) -> bool:
    """A module FX quantization keeps whole (torch.nn layers), which must be wrapped to be a region."""
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, nn.Sequential)


class _LeafRegion(nn.Module):
    """Holds one layer, so that ``prepare_fx`` sees it as a call of a module (and swaps in its int8 twin)."""

    ATTRIBUTE = "layer"

    def __init__(self, layer: nn.Module, num_inputs: int):
        super().__init__()
        if not 1 <= num_inputs <= 3:
            raise ValueError(f"a {type(layer).__name__} called with {num_inputs} inputs cannot be quantized alone")
        self.layer = layer
        self.num_inputs = num_inputs

    def forward(self, a: Any, b: Any = None, c: Any = None) -> Any:  # fixed arity: torch.fx cannot trace *args
        if self.num_inputs == 1:
            return self.layer(a)
        if self.num_inputs == 2:
            return self.layer(a, b)
        return self.layer(a, b, c)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``name`` in ``root``; returns the new root (``module`` itself when name is "")."""
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
    return root


class PostTrainingQuantizer:
    """Post-training int8 quantization (NNI's ``PtqQuantizer``), converted to a real int8 model.

    ``config_list`` selects layers (NNI keys; default every Conv /
    ConvTranspose / Linear, in dynamic mode every Linear / LSTM / GRU) and their settings (see
    :mod:`compression_core.config.quantization`); real int8 takes 8 bits,
    signed weights (per-channel or per-tensor) and unsigned per-tensor
    activations. Layers with weights that the config does not select stay
    float32; operations without weights (add, pooling, ReLU) are quantized
    where their neighbours are.

    Calibration data (static mode): ``calibration_data`` (a tensor split into
    batches, or an iterable of batches / ``(inputs, labels)`` pairs, such as
    a DataLoader) or ``evaluator`` (a :class:`~compression_core.TorchEvaluator`;
    its ``evaluating_func`` is run on the observed model). Options: see
    :class:`PostTrainingConfig` (same names as keywords, or :meth:`from_config`).

    ``compress()`` returns ``(int8_model, calibration_config)``; the input
    model is not modified.
    """

    def __init__(
        self,
        model: nn.Module,
        config_list: Iterable[Mapping[str, Any]] | None = None,
        evaluator: TorchEvaluator | None = None,
        *,
        calibration_data: Any = None,
        mode: str = "static",
        backend: str = "x86",
        observer: str = "histogram",
        allow_float: bool = False,
        reduce_range: bool = True,
        calibration_batch_size: int = 32,
        max_calibration_batches: int | None = None,
        max_calibration_steps: int | None = None,
    ):
        self.config = PostTrainingConfig(
            mode=mode, backend=backend, observer=observer, allow_float=allow_float, reduce_range=reduce_range,
            calibration_batch_size=calibration_batch_size, max_calibration_batches=max_calibration_batches,
            max_calibration_steps=max_calibration_steps)
        self.model = model
        default_types = ("input", "weight") if self.config.mode == "dynamic" else ("input", "weight", "output")
        if config_list is None and self.config.mode == "dynamic":
            config_list = [{"op_types": [t.__name__ for t in DYNAMIC_TYPES]}]
        self.config_list = parse_quant_config_list(config_list, default_quant_types=default_types)
        self.evaluator = evaluator
        self.calibration_data = calibration_data
        self.fuse_names = fuse_groups(self.config_list, model)
        self.layers = resolve_layers(model, self.config_list)
        if not self.layers:
            raise ValueError("config_list selects no layer of the model; check op_types / op_names "
                             f"(layer types here: {', '.join(sorted({type(m).__name__ for m in model.modules()}))})")
        modules = dict(model.named_modules())
        self._unsupported: dict[str, str] = {}
        self._wrapped: set[str] = set()
        dynamic = self.config.mode == "dynamic"
        for name, spec in self.layers.items():
            module = modules[name]
            check_int8(spec, f"layer {name!r} ({type(module).__name__})", dynamic=dynamic)
            reason = self._unsupported_reason(module)
            if reason:
                self._unsupported[name] = reason
        if self._unsupported and not self.config.allow_float:
            raise ValueError(self._cannot_message(self._unsupported))
        if not dynamic and calibration_data is None and evaluator is None:
            first_batch(None, None)  # raises the "no calibration data" message
        self.report = QuantizationReport(mode=self.config.mode, backend=self.config.backend)
        #: Static mode, after ``compress()``: the simulated model (float kernels between quantize/dequantize
        #: steps with the int8 model's scales, so it computes what the int8 model computes).
        self.simulated_model: nn.Module | None = None

    # -- public API ------------------------------------------------------------
    @classmethod
    def from_config(cls, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None,
                    config: PostTrainingConfig, *, evaluator: TorchEvaluator | None = None,
                    calibration_data: Any = None) -> PostTrainingQuantizer:
        """The quantizer with the options of a :class:`PostTrainingConfig`."""
        return cls(model, config_list, evaluator, calibration_data=calibration_data, **asdict(config))

    @property
    def calibration_config(self) -> dict[str, Any]:
        return self.report.calibration_config

    def compress(self) -> tuple[nn.Module, dict[str, Any]]:
        """Quantize a copy of the model; return ``(int8_model, calibration_config)``."""
        torch.backends.quantized.engine = self.config.backend
        self.report = QuantizationReport(mode=self.config.mode, backend=self.config.backend,
                                         kept_float=dict(self._unsupported))
        model = copy.deepcopy(self.model).eval()
        self.simulated_model = None
        with quiet_torch_ao():
            if self.config.mode == "dynamic":
                quantized = self._compress_dynamic(model)
            else:
                quantized = self._compress_static(model)
        self.report.float_bytes = serialized_bytes(self.model)
        self.report.quantized_bytes = serialized_bytes(quantized)
        return quantized, self.report.calibration_config

    # -- checks ------------------------------------------------------------------
    def _unsupported_reason(self, module: nn.Module) -> str | None:
        kind = type(module).__name__
        if self.config.mode == "dynamic":
            if not isinstance(module, DYNAMIC_TYPES):
                return (f"dynamic int8 covers {', '.join(t.__name__ for t in DYNAMIC_TYPES)}, not {kind}; "
                        "use mode='static' for it")
            return None
        if type(module) not in static_int8_types() and _has_own_parameters(module):
            hint = "; mode='dynamic' quantizes its weights" if isinstance(module, DYNAMIC_TYPES) else ""
            return f"the {self.config.backend} backend has no static int8 kernel for {kind}{hint}"
        return None

    def _cannot_message(self, failures: Mapping[str, str]) -> str:
        modules = dict(self.model.named_modules())
        listed = "; ".join(
            f"{name!r}" + (f" ({type(modules[name]).__name__})" if name in modules else "") + f": {reason}"
            for name, reason in failures.items())
        names = ", ".join(repr(n) for n in failures if n)
        return (f"cannot quantize {len(failures)} layer(s) to int8: {listed}. Exclude them from the config_list "
                f"(e.g. {{'exclude_op_names': [{names}]}}) or pass allow_float=True to keep them in float32")

    # -- dynamic -----------------------------------------------------------------
    def _compress_dynamic(self, model: nn.Module) -> nn.Module:
        modules = dict(model.named_modules())
        spec = {name: dynamic_qconfig(s, recurrent=not isinstance(modules[name], nn.Linear))
                for name, s in self.layers.items() if name not in self._unsupported}
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        self._record_outcome(quantized, set(), {})
        self.report.calibration_config = converted_records(quantized)
        return quantized

    # -- static ------------------------------------------------------------------
    def _qconfig_mapping(self, region: str, disabled: set[str], only: str | None = None) -> QConfigMapping:
        """The region's QConfigMapping over the layer names of the model as it was before ``prepare_fx``."""
        mapping = QConfigMapping().set_global(self._global_qconfig())
        cache: dict[tuple, Any] = {}

        def qconfig_of(spec: LayerQuantSpec):
            key = spec.key()
            if key not in cache:
                cache[key] = self._layer_qconfig(spec)
            return cache[key]

        for name, has_parameters in self._module_names:
            relative = _relative(name, region)
            if relative == "" and region in self._wrapped:
                relative = _LeafRegion.ATTRIBUTE
            if not relative:
                continue
            spec = self.layers.get(name)
            if spec is not None and name not in disabled and name not in self._unsupported and \
                    (only is None or name == only):
                mapping.set_module_name(relative, qconfig_of(spec))
            elif spec is not None or has_parameters:
                mapping.set_module_name(relative, None)
        return mapping

    # The steps a quantization-aware trainer does differently (see qat.py).
    def _global_qconfig(self):
        return activation_qconfig(self.config.observer, reduce_range=self.config.reduce_range)

    def _layer_qconfig(self, spec: LayerQuantSpec):
        return int8_qconfig(spec, self.config.observer, reduce_range=self.config.reduce_range)

    def _fuse(self, model: nn.Module) -> None:
        fuse_modules(model, self.fuse_names, inplace=True)

    def _prepare(self, module: nn.Module, mapping: QConfigMapping, example: tuple,
                 custom: PrepareCustomConfig) -> nn.Module:
        return prepare_fx(module, mapping, example, prepare_custom_config=custom)

    def _keep_observed(self, observed: nn.Module) -> None:
        """Keep what the observed (or trained) model gives besides the int8 and simulated models."""

    def _observe(self, model: nn.Module) -> int:
        """Run the observed model over the data; returns the number of batches (or steps)."""
        cfg = self.config
        return calibrate(model, self.calibration_data, self.evaluator, batch_size=cfg.calibration_batch_size,
                         max_batches=cfg.max_calibration_batches, max_steps=cfg.max_calibration_steps)

    def _compress_static(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        if self.fuse_names:
            try:
                self._fuse(model)
            except Exception as exc:  # noqa: BLE001 - torch raises AssertionError for unknown patterns
                raise ValueError(f"fuse_names {self.fuse_names}: these layers cannot be fused ({_first_line(exc)}); "
                                 "PyTorch fuses Conv/Linear + BatchNorm + ReLU sequences only") from exc
        self._module_names = [(name, _has_own_parameters(m)) for name, m in model.named_modules() if name]
        example = first_batch(self.calibration_data, self.evaluator, batch_size=cfg.calibration_batch_size)
        regions, untraceable = plan_regions(model, set(self.layers))
        self.report.untraceable = dict(untraceable)
        if untraceable and not cfg.allow_float:
            listed = "; ".join(f"{n or '(the model itself)'!r}: {e}" for n, e in untraceable.items())
            raise ValueError(
                f"torch.fx cannot trace {len(untraceable)} module(s), so their code cannot be quantized: {listed}. "
                "Make their forward traceable (no control flow on tensor values, no len() or .item() of tensors), "
                "or pass allow_float=True to run them in float32 and quantize the layers inside them")
        inputs = self._region_inputs(model, [r for r in regions if r], example)
        inputs[""] = example

        prepared: dict[str, nn.Module] = {}
        self._wrapped = {region for region in regions if _is_leaf(model.get_submodule(region))}
        for region in sorted(regions, key=_depth):
            submodule = model.get_submodule(region) if region else model
            if region in self._wrapped:
                submodule = _LeafRegion(submodule, len(inputs[region]))
            custom = PrepareCustomConfig().set_non_traceable_module_names(regions[region])
            observed = self._prepare(submodule, self._qconfig_mapping(region, set()), inputs[region], custom)
            prepared[region] = observed
            model = _set_submodule(model, region, observed)

        self.report.calibration_batches = self._observe(model)
        model.eval()
        observed_copy = copy.deepcopy(model)  # becomes the simulated model once the real conversion is done
        self._keep_observed(observed_copy)
        observed_config: dict[str, dict] = {}
        for region, observed in prepared.items():
            observed_config.update(observed_records(observed, region))

        failures: dict[str, str] = {}
        for region in sorted(prepared, key=_depth, reverse=True):  # innermost first: outer copies hold them
            converted, failed = self._convert_region(model, region, prepared[region], inputs[region])
            failures.update(failed)
            model = _set_submodule(model, region, converted)
        with torch.no_grad():
            model(*example)
        self.simulated_model = self._reference_model(observed_copy, list(prepared), failures)
        self._record_outcome(model, set(untraceable), failures)
        if self.report.kept_float and not cfg.allow_float:
            raise ValueError(self._cannot_message(self.report.kept_float))
        rename = {f"{region}.{_LeafRegion.ATTRIBUTE}": region for region in self._wrapped}
        observed_config = {rename.get(k, k): v for k, v in observed_config.items()}
        converted_config = {rename.get(k, k): v for k, v in converted_records(model).items()}
        self.report.calibration_config = merge_records(
            {k: v for k, v in observed_config.items() if k in self.report.quantized}, converted_config)
        return model

    def _reference_model(self, observed: nn.Module, regions: list[str], failures: Mapping[str, str]) -> nn.Module:
        """The observed model as PyTorch's "reference" quantized model: float kernels between quantize and
        dequantize steps with the int8 model's scales, so it computes what the int8 model computes."""
        for region in sorted(regions, key=_depth, reverse=True):
            module = observed.get_submodule(region) if region else observed
            reference = convert_to_reference_fx(module, qconfig_mapping=self._qconfig_mapping(region, set(failures)))
            observed = _set_submodule(observed, region, reference)
        return observed.eval()

    def _region_inputs(self, model: nn.Module, regions: list[str], example: tuple) -> dict[str, tuple]:
        """The positional inputs each region's module receives on ``example`` (for ``prepare_fx``)."""
        captured: dict[str, tuple] = {}
        handles = []
        for region in regions:
            def hook(module, args, region=region):
                captured.setdefault(region, tuple(args))
            handles.append(model.get_submodule(region).register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                model(*example)
        finally:
            for handle in handles:
                handle.remove()
        for region in regions:
            captured.setdefault(region, example)  # never called on this input: any example will do
        return captured

    def _convert_region(self, model: nn.Module, region: str, observed: nn.Module,
                        example: tuple) -> tuple[nn.Module, dict[str, str]]:
        """``convert_fx`` one region; layers whose conversion or int8 forward fails are found and kept float."""
        def attempt(disabled: set[str], only: str | None = None) -> nn.Module:
            mapping = self._qconfig_mapping(region, disabled, only)
            converted = convert_fx(copy.deepcopy(observed), qconfig_mapping=mapping)
            with torch.no_grad():
                converted(*example)
            return converted

        try:
            return attempt(set()), {}
        except Exception as first_error:  # noqa: BLE001 - locate the layer(s) below
            names = [n for n in self.layers if _relative(n, region) not in (None, "") and n not in self._unsupported]
            failed: dict[str, str] = {}
            for name in names:
                try:
                    attempt(set(), only=name)
                except Exception as exc:  # noqa: BLE001
                    failed[name] = f"int8 conversion failed: {_first_line(exc)}"
            if not failed:
                raise RuntimeError(f"int8 conversion of {region or 'the model'!r} failed and no single layer "
                                   f"explains it: {_first_line(first_error)}") from first_error
            try:
                return attempt(set(failed)), failed
            except Exception as exc:  # noqa: BLE001
                raise RuntimeError(f"int8 conversion of {region or 'the model'!r} failed even with "
                                   f"{', '.join(failed)} kept float: {_first_line(exc)}") from exc

    # -- outcome -------------------------------------------------------------------
    def _record_outcome(self, quantized: nn.Module, untraceable: set[str], failures: Mapping[str, str]) -> None:
        modules = dict(quantized.named_modules(remove_duplicate=False))
        report = self.report
        for name in self.layers:
            if name in report.kept_float:
                continue
            module = modules.get(name)
            if name in self._wrapped and module is not None:
                module = getattr(module, _LeafRegion.ATTRIBUTE, module)
            if name in failures:
                report.kept_float[name] = failures[name]
            elif module is not None and is_int8_module(module):
                report.quantized[name] = type(module).__name__
            elif module is None:
                report.fused.append(name)
            elif name in untraceable:
                report.kept_float[name] = f"torch.fx cannot trace it: {self.report.untraceable[name]}"
            else:
                report.kept_float[name] = ("PyTorch left it float32 (its input or output could not be quantized "
                                           "with this config)")
