"""ONNX in and out: read and check, convert to ``torch.fx``, verify, export, int8 export.

- :mod:`.structure`: :func:`onnx_structure_check`, what a file declares (nodes, tensor sizes, what
  ConstantOfShape / Expand / Tile / Range build) against :class:`~compression_core.data.limits.IntakeLimits`,
  before anything is built; every read below runs it first.
- :mod:`.read`: :func:`read_onnx`, :func:`consolidate_onnx`, :func:`check_onnx`, :func:`weightless_copy`,
  :func:`onnx_input_shapes`, :func:`random_onnx_inputs`; :mod:`.external`: external-data files read only
  from inside the upload (:func:`inline_external_data`, :func:`unpack_onnx_zip`); :mod:`.literal_report`:
  :func:`literal_reshapes`, the Reshape targets that pin the batch or a channel count.
- :mod:`.passes`: :func:`preprocess_onnx` (graph rewrites before conversion, from onnx_ir
  where it has them), :func:`constants_to_initializers`; with :mod:`.fold_if` (``If`` nodes
  the declared input shape decides) and :mod:`.literal_shapes` (``Reshape`` targets that
  wrote the traced batch or a channel count as numbers).
- :mod:`.fixed_inputs`: ``load_model``'s ``fixed_inputs`` (input values made constants, e.g. a sample
  rate) and ``input_shapes`` (dynamic dims given a size), so the ``If`` nodes they decide fold.
- :mod:`.convert`: :func:`onnx_to_torch`, :func:`load_onnx`, :func:`unsupported_operators`;
  :mod:`.compat` makes onnx2torch 1.5.15 convert current exporters' files, with the modules
  of :mod:`.layers` (literal reshapes and splits speedup can resize, BatchNorm of unknown
  rank, Pad of any rank, Clip with computed bounds) and :mod:`.rnn` (LSTM, GRU). The
  converted module's ``onnx_nodes`` maps each module name to its ONNX node and op.
- :mod:`.verify`: :func:`verify_onnx_conversion` against onnxruntime
  (:func:`onnx_session` in :mod:`.runtime`).
- :mod:`.export`: :func:`export_onnx`, :func:`example_inputs_for`.
- :mod:`.int8`: :func:`export_int8_onnx`, :func:`export_dynamic_int8_onnx`, :func:`cpu_has_vnni`.

Example::

    >>> from compression_core.io.onnx import load_onnx, export_onnx
    >>> module = load_onnx("resnet18.onnx", verify=True)
    >>> export_onnx(module, "again.onnx", torch.randn(1, 3, 224, 224))["format"]
    'onnx'
"""

from .convert import load_onnx, onnx_to_torch, unsupported_operators
from .external import external_locations, inline_external_data, unpack_onnx_zip
from .export import DEFAULT_OPSET, example_inputs_for, export_onnx
from .int8 import cpu_has_vnni, export_dynamic_int8_onnx, export_int8_onnx
from .passes import constants_to_initializers, preprocess_onnx
from .read import check_onnx, consolidate_onnx, onnx_input_shapes, random_onnx_inputs, read_onnx, weightless_copy
from .runtime import onnx_session
from .structure import OnnxStructure, check_onnx_structure, onnx_structure_check
from .literal_report import literal_reshapes
from .verify import verify_onnx_conversion

__all__ = [
    "DEFAULT_OPSET",
    "OnnxStructure",
    "check_onnx_structure",
    "check_onnx",
    "consolidate_onnx",
    "constants_to_initializers",
    "cpu_has_vnni",
    "example_inputs_for",
    "export_dynamic_int8_onnx",
    "export_int8_onnx",
    "export_onnx",
    "external_locations",
    "inline_external_data",
    "literal_reshapes",
    "load_onnx",
    "onnx_input_shapes",
    "onnx_session",
    "onnx_structure_check",
    "onnx_to_torch",
    "preprocess_onnx",
    "random_onnx_inputs",
    "read_onnx",
    "unpack_onnx_zip",
    "unsupported_operators",
    "verify_onnx_conversion",
    "weightless_copy",
]
