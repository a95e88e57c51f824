"""Loading and saving models in safe formats.

In: ONNX (-> ``torch.fx.GraphModule``), safetensors or weights-only state_dicts
for a built-in architecture, each checked against :class:`IntakeLimits` from its
structure and headers before anything is built (:func:`onnx_structure_check`,
:func:`safetensors_header_check`); pickles, TorchScript and ``.pt2`` archives only in
trusted mode. Out: ONNX (checked in onnxruntime), int8 ONNX (onnxruntime's
quantization) and safetensors (+ a JSON pruning plan). Everything ONNX lives in
:mod:`compression_core.io.onnx`.

Example::

    >>> from compression_core.io import load_model, save_model
    >>> model = load_model("upload.onnx")
    >>> save_model(model, "out/model.onnx", example_inputs=torch.randn(1, 3, 224, 224))
"""

from ..data.limits import SETTING_NAMES, IntakeLimits
from .api import LOAD_OPTIONS, load_model, save_model
from .detect import FORMATS, detect_format
from .errors import (
    PICKLE_REFUSED_MESSAGE,
    TORCH_EXPORT_REFUSED_MESSAGE,
    TORCHSCRIPT_REFUSED_MESSAGE,
    ModelFormatError,
)
from .onnx import (
    consolidate_onnx,
    constants_to_initializers,
    cpu_has_vnni,
    export_dynamic_int8_onnx,
    export_int8_onnx,
    export_onnx,
    literal_reshapes,
    load_onnx,
    onnx_input_shapes,
    onnx_structure_check,
    onnx_session,
    onnx_to_torch,
    preprocess_onnx,
    random_onnx_inputs,
    read_onnx,
    unsupported_operators,
    verify_onnx_conversion,
)
from .weights import (
    compare_state_dicts,
    extract_state_dict,
    load_state_dict_checked,
    plan_path_for,
    save_safetensors,
    safetensors_header_check,
    state_dict_bytes,
)

__all__ = [
    "IntakeLimits",
    "SETTING_NAMES",
    "ModelFormatError",
    "PICKLE_REFUSED_MESSAGE",
    "TORCHSCRIPT_REFUSED_MESSAGE",
    "TORCH_EXPORT_REFUSED_MESSAGE",
    "FORMATS",
    "LOAD_OPTIONS",
    "detect_format",
    "load_model",
    "save_model",
    "load_onnx",
    "literal_reshapes",
    "read_onnx",
    "consolidate_onnx",
    "onnx_to_torch",
    "preprocess_onnx",
    "constants_to_initializers",
    "unsupported_operators",
    "onnx_input_shapes",
    "onnx_structure_check",
    "safetensors_header_check",
    "random_onnx_inputs",
    "verify_onnx_conversion",
    "export_onnx",
    "export_int8_onnx",
    "export_dynamic_int8_onnx",
    "onnx_session",
    "cpu_has_vnni",
    "compare_state_dicts",
    "extract_state_dict",
    "load_state_dict_checked",
    "save_safetensors",
    "state_dict_bytes",
    "plan_path_for",
]
