"""Per-layer quantization settings -> torch.ao ``QConfig`` for PyTorch's int8 kernels.

Real int8 (``torch.ao.nn.quantized`` modules, the x86/fbgemm/onednn CPU
backends) has fixed limits, checked here with messages that say what to
change: 8 bits only, unsigned activations, signed weights, per-channel
schemes on weights only.

Example::

    >>> from compression_core.config.quantization import parse_entry
    >>> qconfig = int8_qconfig(parse_entry({"op_types": ["Conv2d"]}), "histogram")
    >>> qconfig.weight().qscheme
    torch.per_channel_symmetric
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch.ao.quantization import (
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    QConfig,
)

from ..config.quantization import DEFAULT_ACTIVATION, DEFAULT_WEIGHT, LayerQuantSpec, TargetSpec

BACKENDS = ("x86", "fbgemm", "onednn", "qnnpack")
OBSERVERS = {
    "histogram": HistogramObserver,
    "minmax": MinMaxObserver,
    "moving_average_minmax": MovingAverageMinMaxObserver,
}
_QSCHEMES = {
    "per_tensor_affine": torch.per_tensor_affine,
    "per_tensor_symmetric": torch.per_tensor_symmetric,
    "per_channel_affine": torch.per_channel_affine,
    "per_channel_symmetric": torch.per_channel_symmetric,
}
SIMULATED_HINT = "NaiveQuantizer: 2 to 8 bits, DoReFaQuantizer: 1 to 8, BNNQuantizer: 1"


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (it points to torchao's pt2e flow) while converting."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max")
        yield


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown int8 backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"this PyTorch build has no {backend!r} quantized engine; available: "
                         f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')}")
    return backend


def check_int8(spec: LayerQuantSpec, where: str, *, dynamic: bool = False) -> None:
    """Raise ``ValueError`` if ``spec`` asks for something PyTorch's int8 kernels cannot run."""
    entry = f"config_list[{spec.entry}]"
    for target, setting in spec.targets.items():
        if setting.bits != 8:
            raise ValueError(
                f"{entry}: quant_bits {setting.bits} for {target!r} of {where}: real int8 conversion (PyTorch's "
                f"int8 kernels) supports 8 bits only; set quant_bits to 8, or use a simulated quantizer for other "
                f"widths ({SIMULATED_HINT})")
        if target == "weight" and setting.dtype != "int":
            raise ValueError(f"{entry}: quant_dtype {setting.dtype!r} for the weight of {where}: PyTorch's int8 "
                             "kernels take signed 8-bit weights; use quant_dtype 'int' for 'weight'")
        if target != "weight" and setting.dtype != "uint":
            raise ValueError(f"{entry}: quant_dtype {setting.dtype!r} for the {target} of {where}: PyTorch's x86 int8 "
                             f"kernels take unsigned 8-bit activations; use quant_dtype 'uint' for {target!r}")
    if "weight" not in spec.targets:
        raise ValueError(f"{entry}: quant_types {list(spec.quant_types)} for {where}: an int8 layer needs its weight "
                         "quantized; add 'weight' to quant_types")
    if dynamic:
        if "output" in spec.targets:
            raise ValueError(f"{entry}: dynamic int8 returns float outputs; remove 'output' from quant_types for "
                             f"{where}, or use mode='static'")
    elif set(spec.targets) != {"input", "weight", "output"}:
        missing = sorted({"input", "output"} - set(spec.targets))
        raise ValueError(f"{entry}: static int8 quantizes a layer's input and output with its weight; add "
                         f"{', '.join(map(repr, missing))} to quant_types for {where}, or use mode='dynamic' "
                         "(Linear/LSTM: weights int8, activations quantized on the fly)")
    elif spec.targets["input"] != spec.targets["output"]:
        raise ValueError(f"{entry}: PyTorch's int8 layers observe input and output activations alike; give 'input' "
                         f"and 'output' the same quant_scheme and quant_dtype for {where}")


def weight_observer(setting: TargetSpec, *, ch_axis: int = 0):
    qscheme = _QSCHEMES[setting.scheme]
    if setting.per_channel:
        return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=qscheme, ch_axis=ch_axis)
    return MinMaxObserver.with_args(dtype=torch.qint8, qscheme=qscheme)


def activation_observer(setting: TargetSpec, observer: str, *, reduce_range: bool = True):
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[observer].with_args(dtype=torch.quint8, qscheme=_QSCHEMES[setting.scheme],
                                         quant_min=0, quant_max=127 if reduce_range else 255)


def int8_qconfig(spec: LayerQuantSpec, observer: str = "histogram", *, reduce_range: bool = True) -> QConfig:
    """The static-int8 ``QConfig`` of a layer: its input/output observer and weight observer.

    ``reduce_range`` (PyTorch's default on x86/fbgemm) keeps activations to 7
    bits, which avoids overflow in the int16 accumulation of CPUs without VNNI.
    """
    check_int8(spec, "the layer")
    return QConfig(
        activation=activation_observer(spec.targets["output"], observer, reduce_range=reduce_range),
        weight=weight_observer(spec.targets["weight"]),
    )


def activation_qconfig(observer: str = "histogram", *, reduce_range: bool = True) -> QConfig:
    """For operations without weights (add, cat, pooling): activations as :data:`DEFAULT_ACTIVATION`."""
    return QConfig(
        activation=activation_observer(DEFAULT_ACTIVATION, observer, reduce_range=reduce_range),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )


def dynamic_qconfig(spec: LayerQuantSpec, *, recurrent: bool = False) -> QConfig:
    """Dynamic int8: weights observed once, activations quantized per batch at run time."""
    check_int8(spec, "the layer", dynamic=True)
    weight = spec.targets["weight"]
    if recurrent and weight.per_channel:
        scheme = "per_tensor_symmetric" if weight.symmetric else "per_tensor_affine"
        weight = TargetSpec(weight.bits, weight.dtype, scheme)
    return QConfig(
        activation=PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True),
        weight=weight_observer(weight),
    )


def _fake_quantize(setting: TargetSpec, *, weight: bool, reduce_range: bool):
    if weight:
        observer = MovingAveragePerChannelMinMaxObserver if setting.per_channel else MovingAverageMinMaxObserver
        extra = {"ch_axis": 0} if setting.per_channel else {}
        return FusedMovingAvgObsFakeQuantize.with_args(observer=observer, quant_min=-128, quant_max=127,
                                                       dtype=torch.qint8, qscheme=_QSCHEMES[setting.scheme], **extra)
    return FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                                   quant_max=127 if reduce_range else 255, dtype=torch.quint8,
                                                   qscheme=_QSCHEMES[setting.scheme])


def qat_qconfig(spec: LayerQuantSpec, *, reduce_range: bool = True) -> QConfig:
    """Quantization-aware training: fake quantization (moving-average ranges) on the layer's activations and weight."""
    check_int8(spec, "the layer")
    return QConfig(activation=_fake_quantize(spec.targets["output"], weight=False, reduce_range=reduce_range),
                   weight=_fake_quantize(spec.targets["weight"], weight=True, reduce_range=reduce_range))


def qat_activation_qconfig(*, reduce_range: bool = True) -> QConfig:
    """For operations without weights during quantization-aware training."""
    return QConfig(activation=_fake_quantize(DEFAULT_ACTIVATION, weight=False, reduce_range=reduce_range),
                   weight=_fake_quantize(DEFAULT_WEIGHT, weight=True, reduce_range=reduce_range))
