"""NNI 2.x's low-bit quantization-aware trainers: ``DoReFaQuantizer`` and ``BNNQuantizer`` (simulated).

Both train a copy of the model through a :class:`~compression_core.TorchEvaluator`
with the selected weights (and, for BNN, activations) on a low-bit grid in
the forward pass, while the optimizer updates a latent float weight through
a straight-through estimator (STE). After training the model is *baked*:
every selected weight holds its grid value, the latent weights and the
``torch.nn.utils.parametrize`` machinery used for training are gone, and the
``state_dict()`` keys (and their order) are those of the input model. The
input model is not modified. Being simulated, the model stays float32; the
grid is described per layer in ``calibration_config`` for a backend that
packs the integers.

DoReFa-Net (Zhou et al. 2016, https://arxiv.org/abs/1606.06160), weights only
as in NNI: ``g = 2 * quantize_k(tanh(w) / (2 * max|tanh(w)|) + 0.5) - 1`` puts
the weight on ``2**k`` evenly spaced levels in ``[-1, 1]``; rounding passes
its gradient straight through, tanh and the max are differentiated. NNI
stops there, which throws away each layer's scale: a pretrained layer
without a BatchNorm after it (a classifier, say) then outputs garbage and
fine-tuning must relearn its scale from scratch. Here the layer's weight is
``s * g`` with one scalar ``s`` per layer, the least-squares fit
``s = <w, g> / <g, g>`` of the grid to the latent weight (recomputed at every
forward, no gradient through it). It is still a ``k``-bit grid with one scale
per layer, a pretrained model starts close to itself, and at ``k = 1`` the
fit is exactly the paper's ``E(|w|)``: 1-bit weights are
``mean(|w|) * sign(w)`` with an identity STE, as in the paper. The grid is
symmetric and has no zero level: ``calibration_config`` gives it as
``scale * (q - zero_point)``, ``q`` in ``[0, 2**k - 1]`` and
``zero_point = (2**k - 1) / 2`` (a half-integer).

BNN (Courbariaux, Hubara et al. 2016, https://arxiv.org/abs/1602.02830):
weights are ``sign(w)`` (``+1`` / ``-1``, no scale, as in the paper and NNI),
gradient passed where ``|w| <= 1``, and the latent weights are clipped to
``[-1, 1]`` after every optimizer step. Layers whose config entry has
``"quant_types": ["output"]`` get their output binarized the same way
(gradient where ``|x| <= 1``); NNI's example selects the ``Hardtanh``
activations that way and the Conv/Linear layers with ``["weight"]``. The
output of a ReLU-like activation is never negative, so its sign is ``+1``
everywhere: selecting one is an error (binarize the layer before it). The
binarization stays in the model as a forward hook on the layer (a
module-level function, so ``copy.deepcopy``, pickling, ``torch.fx`` and the
ONNX exporter all keep it) rather than a wrapper module, which would rename
the layer's parameters.

Example::

    >>> config_list = [{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": 4}]
    >>> quantizer = DoReFaQuantizer(model, config_list, evaluator)  # doctest: +SKIP
    >>> model4, calibration_config = quantizer.compress(max_epochs=3)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..evaluation.evaluator import TorchEvaluator
from .report import QuantizationReport
from ..config.quantization import LayerQuantSpec, TargetSpec, parse_quant_config_list, resolve_layers

DOREFA_MAX_BITS = 8
# Keys whose choices the two algorithms fix themselves (one scale per layer, symmetric, no fusion).
_FIXED_KEYS = ("quant_dtype", "quant_scheme", "granularity", "fuse_names")
# Activations whose output is never negative: sign() of it is +1 everywhere.
_NON_NEGATIVE = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Softmax, nn.Softplus)


# -- straight-through estimators ---------------------------------------------------------
class _RoundSTE(torch.autograd.Function):
    """``round(x)`` forward, identity backward (DoReFa's quantize_k)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SignSTE(torch.autograd.Function):
    """``scale * (+1 where x >= 0, else -1)``; gradient passed as is, where ``|x| <= 1`` (``clip``) or everywhere."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip: bool = True, scale: torch.Tensor | None = None) -> torch.Tensor:
        ctx.clip = clip
        if clip:
            ctx.save_for_backward(x)
        # where(), not sign(): a zero must still become one of the two levels.
        signs = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        return signs if scale is None else signs * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if not ctx.clip:
            return grad, None, None
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None, None


def binarize(x: torch.Tensor) -> torch.Tensor:
    """BNN's sign with the hardtanh straight-through gradient (``+1`` for zero)."""
    return _SignSTE.apply(x, True)


def _binarize_output(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
    """Forward hook of the layers whose output BNN binarizes (module-level: deepcopy and pickle keep it)."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"BNNQuantizer binarizes a layer's output tensor, but this {type(module).__name__} "
                        f"returned a {type(output).__name__}")
    return binarize(output)


def dorefa_grid(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, s)``: DoReFa's levels ``g`` in ``[-1, 1]`` (``2**bits`` of them) and the layer scale ``s``.

    ``g`` carries the straight-through gradient (rounding passed through,
    tanh and the max differentiated); ``s``, the least-squares fit of
    ``s * g`` to ``weight``, carries none.
    """
    if bits == 1:
        g = _SignSTE.apply(weight, False)
    else:
        t = torch.tanh(weight)
        unit = t / (2 * t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)) + 0.5
        levels = 2**bits - 1
        g = 2 * (_RoundSTE.apply(unit * levels) / levels) - 1
    with torch.no_grad():
        # <g, g> > 0: no level is zero (2**bits - 1 is odd). For 1 bit this is the paper's E(|w|).
        s = ((weight * g).sum() / (g * g).sum()).clamp_min(torch.finfo(weight.dtype).tiny)
    return g, s


def dorefa_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The weight DoReFa trains with: ``s * g`` of :func:`dorefa_grid`."""
    g, s = dorefa_grid(weight, bits)
    if bits == 1:  # the paper's 1-bit rule: E(|w|) * sign(w), gradient passed to w unchanged
        return _SignSTE.apply(weight, False, s)
    return s * g


class _DoReFaWeight(nn.Module):
    """The parametrization that DoReFa trains through: latent weight -> ``s * g``."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return dorefa_weight(weight, self.bits)


class _BinaryWeight(nn.Module):
    """The parametrization that BNN trains through: latent weight -> ``sign(w)``."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return binarize(weight)


def _grid_record(bits: int, step: float) -> dict[str, Any]:
    """The symmetric, zero-free ``bits``-bit grid ``step * (q - zero_point)`` in NaiveQuantizer's record format."""
    levels = 2**bits - 1
    return {"quant_bits": bits, "quant_dtype": f"uint{bits}", "quant_scheme": "per_tensor_symmetric",
            "scale": step, "zero_point": levels / 2, "quant_min": 0, "quant_max": levels}


# -- the shared trainer --------------------------------------------------------------------
class _LowBitQuantizer:
    """Parse and check the config, train a parametrized copy through the evaluator, bake it."""

    NAME = ""
    MODE = ""
    TRAINS = ""  # completes "{NAME} trains the model with ..."

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None,
                 evaluator: TorchEvaluator | None):
        if not isinstance(evaluator, TorchEvaluator):
            raise ValueError(f"{self.NAME} trains the model with {self.TRAINS}: give "
                             "evaluator=TorchEvaluator(training_func, optimizers, training_step)")
        self.model = model
        self.evaluator = evaluator
        entries = parse_quant_config_list(config_list, default_quant_types=("weight",))
        self.config_list = [self._entry_defaults(entry, index) for index, entry in enumerate(entries)]
        self.layers: dict[str, LayerQuantSpec] = resolve_layers(model, self.config_list)
        self._check_entries_select(model)
        if not self.layers:  # every selected layer excluded again
            raise ValueError("config_list selects no layer of the model; check op_types / op_names "
                             f"(layer types here: {_layer_types(model)})")
        modules = dict(model.named_modules())
        for name, spec in self.layers.items():
            self._check_layer(name, modules[name], spec)
        self.report = QuantizationReport(mode=self.MODE, backend="none")

    @property
    def calibration_config(self) -> dict[str, Any]:
        return self.report.calibration_config

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None) -> tuple[nn.Module, dict]:
        """Train a copy with quantized weights (the evaluator's loop), bake it; return ``(model, calibration_config)``.

        With ``max_steps`` and ``max_epochs`` both None the evaluator's own loop decides how long.
        """
        self.report = QuantizationReport(mode=self.MODE, backend="none")
        model = copy.deepcopy(self.model)
        modules = dict(model.named_modules())
        type_names = {name: type(module).__name__ for name, module in self.model.named_modules()}
        weighted = {name: modules[name] for name, spec in self.layers.items() if "weight" in spec.targets}
        parameter_order = {name: list(module._parameters) for name, module in weighted.items()}
        for name, module in weighted.items():
            parametrize.register_parametrization(module, "weight",
                                                 self._weight_transform(self.layers[name].targets["weight"]))
        for name, spec in self.layers.items():
            if "output" in spec.targets:
                modules[name].register_forward_hook(_binarize_output)

        self.report.calibration_batches = self.evaluator.train(
            model, max_steps=max_steps, max_epochs=max_epochs, after_step=self._after_step(weighted))

        config: dict[str, Any] = {}
        with torch.no_grad():
            for name, spec in self.layers.items():
                module = modules[name]
                record: dict[str, Any] = {"module_type": type_names[name]}
                if name in weighted:
                    latent = module.parametrizations.weight.original
                    record["weight"] = self._weight_record(latent, spec.targets["weight"].bits)
                    # Writes the grid values into the latent Parameter and puts it back as `weight`.
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
                    for key in parameter_order[name]:  # re-registration appended `weight`: restore the order
                        module._parameters[key] = module._parameters.pop(key)
                if "output" in spec.targets:
                    record["output"] = _grid_record(1, 2.0)
                config[name] = record
                self.report.quantized[name] = type_names[name]
        self.report.calibration_config = config
        return model, config

    # -- what each algorithm sets ---------------------------------------------------------
    def _entry_defaults(self, entry: dict[str, Any], index: int) -> dict[str, Any]:
        for key in _FIXED_KEYS:
            if key in entry:
                raise ValueError(f"config_list[{index}]: {self.NAME} does not take {key!r} (its grid is fixed: "
                                 "one scale per layer, symmetric); remove it and set the width with quant_bits")
        return entry

    def _check_layer(self, name: str, module: nn.Module, spec: LayerQuantSpec) -> None:
        if "input" in spec.targets:
            raise ValueError(self._input_message(spec.entry))
        if "weight" in spec.targets:
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or not weight.is_floating_point():
                raise ValueError(f"config_list[{spec.entry}]: layer {name!r} ({type(module).__name__}) has no float "
                                 f"weight parameter to quantize; select layers such as Conv2d or Linear"
                                 f"{self._no_weight_hint()}")

    def _input_message(self, index: int) -> str:
        raise NotImplementedError

    def _no_weight_hint(self) -> str:
        return ""

    def _weight_transform(self, setting: TargetSpec) -> nn.Module:
        raise NotImplementedError

    def _weight_record(self, latent: torch.Tensor, bits: int) -> dict[str, Any]:
        raise NotImplementedError

    def _after_step(self, weighted: Mapping[str, nn.Module]) -> list[Callable[[nn.Module], None]]:
        return []

    def _check_entries_select(self, model: nn.Module) -> None:
        """Each (non-exclude) entry must select some layer: an entry that matches nothing is a mistake."""
        for index, entry in enumerate(self.config_list):
            if entry.get("exclude"):
                continue
            if not resolve_layers(model, [entry]):
                raise ValueError(f"config_list[{index}] selects no layer of the model; check its op_types / "
                                 f"op_names (layer types here: {_layer_types(model)})")


def _layer_types(model: nn.Module) -> str:
    return ", ".join(sorted({type(m).__name__ for name, m in model.named_modules() if name}))


class DoReFaQuantizer(_LowBitQuantizer):
    """DoReFa-Net weight quantization, 1 to 8 bits, learnt through a :class:`~compression_core.TorchEvaluator`.

    NNI 2.x's ``DoReFaQuantizer`` (``quant_types: ["weight"]``, any
    ``quant_bits`` from 1 to 8, default 8), with one least-squares scale per
    layer so that pretrained models keep their scale (see the module
    docstring). ``compress(max_steps=None, max_epochs=None)`` trains a copy of
    the model through the evaluator and returns ``(model, calibration_config)``:
    each selected weight holds at most ``2**bits`` distinct values, the model
    keeps its structure and ``state_dict`` keys; ``calibration_config[layer]
    ["weight"]`` gives the grid as ``scale * (q - zero_point)``. The input
    model is not modified.

    Example::

        >>> config_list = [{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": 4}]
        >>> quantizer = DoReFaQuantizer(model, config_list, evaluator)  # doctest: +SKIP
        >>> model4, calibration_config = quantizer.compress(max_epochs=3)  # doctest: +SKIP
        >>> model4.conv1.weight.unique().numel() <= 16  # doctest: +SKIP
        True
    """

    NAME = "DoReFaQuantizer"
    MODE = "dorefa (simulated)"
    TRAINS = "DoReFa-quantized weights"

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None = None,
                 evaluator: TorchEvaluator | None = None):
        super().__init__(model, config_list, evaluator)

    def _check_layer(self, name: str, module: nn.Module, spec: LayerQuantSpec) -> None:
        if "output" in spec.targets:
            raise ValueError(f"config_list[{spec.entry}]: DoReFaQuantizer quantizes weights only (NNI's "
                             "DoReFaQuantizer); remove 'output' from quant_types, or use QATQuantizer for int8 "
                             "activations or BNNQuantizer for binary ones")
        super()._check_layer(name, module, spec)
        bits = spec.targets["weight"].bits
        if not 1 <= bits <= DOREFA_MAX_BITS:
            raise ValueError(f"config_list[{spec.entry}]: DoReFaQuantizer takes quant_bits from 1 to "
                             f"{DOREFA_MAX_BITS} for the weight (layer {name!r}), got {bits}")

    def _input_message(self, index: int) -> str:
        return (f"config_list[{index}]: DoReFaQuantizer quantizes weights only (NNI's DoReFaQuantizer); remove "
                "'input' from quant_types, or use QATQuantizer / PostTrainingQuantizer for int8 activations")

    def _weight_transform(self, setting: TargetSpec) -> nn.Module:
        return _DoReFaWeight(setting.bits)

    def _weight_record(self, latent: torch.Tensor, bits: int) -> dict[str, Any]:
        _, s = dorefa_grid(latent, bits)
        # levels g = 2q / (2**bits - 1) - 1, so s * g = step * (q - zero_point) with step = 2s / (2**bits - 1)
        return _grid_record(bits, float(2 * s / (2**bits - 1)))


class BNNQuantizer(_LowBitQuantizer):
    """Binarized neural network training: weights, and chosen outputs, to ``+1`` / ``-1``.

    NNI 2.x's ``BNNQuantizer``: entries with ``quant_types: ["weight"]``
    binarize the weights of Conv/Linear layers (latent weights clipped to
    ``[-1, 1]`` after each optimizer step), entries with ``["output"]``
    binarize a layer's output (e.g. ``Hardtanh``); ``quant_bits`` must be 1
    (the default here). Pure ``+1`` / ``-1``: no scale. Keeping the first and
    the last layer in float, as the paper and NNI's example do, usually costs
    much less accuracy. ``compress(max_steps=None, max_epochs=None)`` trains a
    copy through the evaluator and returns ``(model, calibration_config)``;
    the binarized outputs stay in the returned model as forward hooks, which
    ``copy.deepcopy`` and the ONNX export keep. The input model is not modified.

    Example::

        >>> config_list = [{"op_names": ["features.3", "classifier.0"], "quant_types": ["weight"], "quant_bits": 1},
        ...                {"op_types": ["Hardtanh"], "quant_types": ["output"], "quant_bits": 1}]
        >>> quantizer = BNNQuantizer(model, config_list, evaluator)  # doctest: +SKIP
        >>> binary, calibration_config = quantizer.compress(max_epochs=20)  # doctest: +SKIP
        >>> binary.features[3].weight.unique().tolist()  # doctest: +SKIP
        [-1.0, 1.0]
    """

    NAME = "BNNQuantizer"
    MODE = "bnn (simulated)"
    TRAINS = "binarized weights and activations"

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None = None,
                 evaluator: TorchEvaluator | None = None):
        super().__init__(model, config_list, evaluator)

    def _entry_defaults(self, entry: dict[str, Any], index: int) -> dict[str, Any]:
        entry = super()._entry_defaults(entry, index)
        bits = entry.get("quant_bits")
        # 1 is the only width; the generic default (8) would only produce an error.
        if bits is None:
            entry = {**entry, "quant_bits": 1}
        elif isinstance(bits, Mapping):
            entry = {**entry, "quant_bits": {**{t: 1 for t in entry.get("quant_types", ())}, **bits}}
        return entry

    def _check_layer(self, name: str, module: nn.Module, spec: LayerQuantSpec) -> None:
        super()._check_layer(name, module, spec)
        for target, setting in spec.targets.items():
            if setting.bits != 1:
                raise ValueError(f"config_list[{spec.entry}]: BNNQuantizer binarizes (+1/-1), so quant_bits must "
                                 f"be 1 for the {target} of layer {name!r}, got {setting.bits}; use "
                                 "DoReFaQuantizer for multi-bit weights")
        if "output" in spec.targets and isinstance(module, _NON_NEGATIVE):
            raise ValueError(f"config_list[{spec.entry}]: layer {name!r} is a {type(module).__name__}, whose output "
                             "is never negative, so binarizing it gives +1 everywhere; binarize the output of the "
                             "layer before it (e.g. its Conv2d or BatchNorm2d) instead, or use Hardtanh as the "
                             "activation (NNI's BNN example)")

    def _input_message(self, index: int) -> str:
        return (f"config_list[{index}]: BNNQuantizer binarizes weights and outputs, not inputs; remove 'input' "
                "from quant_types and binarize the output of the layer that feeds this one instead")

    def _no_weight_hint(self) -> str:
        return ", or binarize its output only (quant_types ['output'])"

    def _weight_transform(self, setting: TargetSpec) -> nn.Module:
        return _BinaryWeight()

    def _weight_record(self, latent: torch.Tensor, bits: int) -> dict[str, Any]:
        return _grid_record(1, 2.0)  # q in {0, 1} -> 2 * (q - 0.5) = -1, +1

    def _after_step(self, weighted: Mapping[str, nn.Module]) -> list[Callable[[nn.Module], None]]:
        latents = [module.parametrizations.weight.original for module in weighted.values()]

        def clip_latent_weights(_: nn.Module) -> None:
            # Past +-1 the sign cannot change and the STE passes no gradient: keep the latent weights in range.
            with torch.no_grad():
                for latent in latents:
                    latent.clamp_(-1.0, 1.0)

        return [clip_latent_weights]
