"""Quantization: real int8 models through PyTorch's maintained int8 path, NNI's quantizers.

- :class:`PostTrainingQuantizer`: static (calibrated) or dynamic int8, converted
  to ``torch.ao.nn.quantized`` modules (x86 CPU kernels).
- :class:`QATQuantizer`: quantization-aware training (fake quantization, BN folding)
  through a TorchEvaluator, converted to the same real int8 model.
- :class:`NaiveQuantizer`: NNI's data-free weight quantizer (simulated: the
  weights are rounded to the int8 grid, the model keeps its structure).
- :class:`DoReFaQuantizer`: NNI's DoReFa-Net weight quantization (1 to 8 bits,
  one scale per layer) learnt through a TorchEvaluator (simulated).
- :class:`BNNQuantizer`: NNI's binarized networks: +1/-1 weights and chosen
  activations learnt through a TorchEvaluator (simulated).
- :func:`export_calibration`: scales, zero points and bits per layer as JSON.
- :func:`save_packed` / :func:`load_packed`: a simulated quantizer's weights
  stored at their bit width (1-bit BNN weights: a 32nd of float32).

int8 ONNX files (onnxruntime's quantization) are written by
:func:`compression_core.io.export_int8_onnx`.

Example::

    from compression_core.quantization import PostTrainingQuantizer, export_calibration
    quantizer = PostTrainingQuantizer(model, [{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}],
                                      calibration_data=images)
    int8_model, calibration_config = quantizer.compress()
    export_calibration(calibration_config, "calibration.json")
"""

from .calibration import export_calibration, is_int8_module
from .lowbit import BNNQuantizer, DoReFaQuantizer
from .naive import NaiveQuantizer
from .packing import load_packed, save_packed
from .ptq import PostTrainingConfig, PostTrainingQuantizer
from .qat import QATQuantizer

# NNI's own names, so that scripts port by replacing the import (NNI 3.0: PtqQuantizer; NNI 2.x: QAT_Quantizer).
PtqQuantizer = PostTrainingQuantizer
QAT_Quantizer = QATQuantizer
from .report import QuantizationReport, serialized_bytes
from ..config.quantization import DEFAULT_OP_TYPES, LayerQuantSpec, TargetSpec, parse_quant_config_list, resolve_layers

__all__ = [
    "BNNQuantizer",
    "DEFAULT_OP_TYPES",
    "DoReFaQuantizer",
    "LayerQuantSpec",
    "NaiveQuantizer",
    "PostTrainingConfig",
    "PostTrainingQuantizer",
    "PtqQuantizer",
    "QATQuantizer",
    "QAT_Quantizer",
    "QuantizationReport",
    "TargetSpec",
    "export_calibration",
    "is_int8_module",
    "load_packed",
    "parse_quant_config_list",
    "resolve_layers",
    "save_packed",
    "serialized_bytes",
]
