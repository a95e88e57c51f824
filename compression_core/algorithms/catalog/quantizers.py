"""The built-in quantizers' registry entries: names, papers, parameter schemas, capabilities.

:func:`register_quantizers` is called by the ``condense.algorithms`` entry
point (see :mod:`compression_core.algorithms.catalog`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...config import parse_quant_config_list
from ...quantization import BNNQuantizer, DoReFaQuantizer, NaiveQuantizer, PostTrainingQuantizer, QATQuantizer
from ...quantization.lowbit import DOREFA_MAX_BITS
from ...quantization.naive import MAX_BITS as NAIVE_MAX_BITS
from ...quantization.qconfig import OBSERVERS
from ..registry import AlgorithmKind, AlgorithmSpec, QuantizedForm
from .guidance import WHEN_TO_USE
from .schemas import INT8_OPTIONS, TRAINING_OPTIONS, quantization_schema


def _checked_config(config_list: Any) -> Any:
    """Checked here (the message names the key); each quantizer fills its own defaults."""
    parse_quant_config_list(config_list)
    return config_list


JACOB = ("Jacob et al., Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only "
         "Inference (CVPR 2018)", "https://arxiv.org/abs/1712.05877")


def register_quantizers(register: Callable[[AlgorithmSpec], AlgorithmSpec]) -> None:
    register(AlgorithmSpec(
        name="PostTrainingQuantizer", kind=AlgorithmKind.QUANTIZATION, canonical_config=_checked_config,
        when_to_use=WHEN_TO_USE["PostTrainingQuantizer"],
        description="Post-training int8: static (activation ranges calibrated on data, per-channel weight scales, "
                    "Conv/Linear+BN+ReLU fused) or dynamic (Linear/LSTM weights, no data), converted to a real "
                    "int8 model on PyTorch's x86 kernels.",
        paper=JACOB[0], paper_url=JACOB[1], factory=PostTrainingQuantizer,
        params_schema=quantization_schema({
            "mode": {"type": "string", "enum": ["static", "dynamic"], "default": "static",
                     "description": "static: weights and activations int8 (needs data); dynamic: weights only"},
            **INT8_OPTIONS,
            "observer": {"type": "string", "enum": list(OBSERVERS), "default": "histogram",
                         "description": "How activation ranges are measured"},
            "max_calibration_batches": {"type": "integer", "minimum": 1, "maximum": 100_000,
                                        "description": "Calibration batches to use (default: all)"},
        }),
        needs_data=True, data_free_when={"mode": "dynamic"}, granularity="per_channel",
        quantized_form=QuantizedForm.INT8, bit_widths=(8,),
    ))
    register(AlgorithmSpec(
        name="QATQuantizer", kind=AlgorithmKind.QUANTIZATION, canonical_config=_checked_config,
        when_to_use=WHEN_TO_USE["QATQuantizer"],
        description="Quantization-aware training: fine-tunes with fake-quantized weights and activations "
                    "(BatchNorm folded into the convolutions), then converts to a real int8 model.",
        paper=JACOB[0], paper_url=JACOB[1], factory=QATQuantizer,
        params_schema=quantization_schema({
            "quant_start_step": {"type": "integer", "minimum": 0, "maximum": 10**6, "default": 0,
                                 "description": "Optimizer steps in float (ranges tracked) before fake "
                                                "quantization starts"},
            "freeze_bn_step": {"type": "integer", "minimum": 1, "maximum": 10**6,
                               "description": "Step after which BatchNorm statistics stop updating"},
            **INT8_OPTIONS,
            **TRAINING_OPTIONS,
        }),
        needs_data=True, granularity="per_channel", trains=True, quantized_form=QuantizedForm.INT8,
        bit_widths=(8,),
    ))
    register(AlgorithmSpec(
        name="NaiveQuantizer", kind=AlgorithmKind.QUANTIZATION, canonical_config=_checked_config,
        when_to_use=WHEN_TO_USE["NaiveQuantizer"],
        description="Rounds the weights of the selected layers to an 8-bit grid (one scale per output channel), "
                    "no data; the model keeps its float structure and the scales are exported.",
        paper="NNI NaiveQuantizer (Microsoft NNI 2.x)",
        paper_url="https://nni.readthedocs.io/en/v2.10/compression/quantizer.html", factory=NaiveQuantizer,
        params_schema=quantization_schema(), needs_data=False, granularity="per_channel",
        quantized_form=QuantizedForm.SIMULATED, bit_widths=tuple(range(NAIVE_MAX_BITS, 1, -1)),
    ))
    register(AlgorithmSpec(
        name="DoReFaQuantizer", kind=AlgorithmKind.QUANTIZATION, canonical_config=_checked_config,
        when_to_use=WHEN_TO_USE["DoReFaQuantizer"],
        description="Weights at 1 to 8 bits (DoReFa's tanh transform, one scale per layer), learnt by training "
                    "with straight-through gradients; simulated: the weights lie on the grid, stored in float32.",
        paper="Zhou et al., DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth "
              "Gradients (2016)",
        paper_url="https://arxiv.org/abs/1606.06160", factory=DoReFaQuantizer,
        params_schema=quantization_schema(TRAINING_OPTIONS), needs_data=True, granularity="per_layer",
        trains=True, quantized_form=QuantizedForm.SIMULATED, bit_widths=tuple(range(DOREFA_MAX_BITS, 0, -1)),
    ))
    register(AlgorithmSpec(
        name="BNNQuantizer", kind=AlgorithmKind.QUANTIZATION, canonical_config=_checked_config,
        when_to_use=WHEN_TO_USE["BNNQuantizer"],
        description="Binary (+1/-1) weights, and binary outputs of the layers a config entry gives "
                    "\"quant_types\": [\"output\"], learnt by training with straight-through gradients; simulated.",
        paper="Hubara, Courbariaux et al., Binarized Neural Networks (NeurIPS 2016)",
        paper_url="https://arxiv.org/abs/1602.02830", factory=BNNQuantizer,
        params_schema=quantization_schema(TRAINING_OPTIONS), needs_data=True, granularity="per_layer",
        trains=True, quantized_form=QuantizedForm.SIMULATED, bit_widths=(1,),
    ))
