"""Inputs whose value the user fixes at import: :func:`fix_input_values`.

Some models take a setting as an input, e.g. silero-vad's scalar ``sr`` (sample
rate), and choose a branch from it with an ``If`` (``If(sr == 16000)``), which
onnx2torch cannot convert. Fixing the value turns the input into a constant of
its declared type and shape, so :func:`~.passes.preprocess_onnx` folds the
condition and :func:`~.fold_if.fold_constant_ifs` keeps the branch it takes.
The converted model then no longer takes that input.

Example::

    >>> proto = read_onnx("silero_vad.onnx")
    >>> fix_input_values(proto, {"sr": 16000}, "silero_vad.onnx")
    {'sr': array(16000)}
    >>> [i.name for i in proto.graph.input]
    ['input', 'state']
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from onnx import ModelProto, helper, numpy_helper

__all__ = ["fix_input_values", "fix_input_shapes", "declared_dims", "FIXED_INPUTS_OPTION", "INPUT_SHAPES_OPTION"]

#: The ``load_model`` option that fixes input values (named in refusal messages).
FIXED_INPUTS_OPTION = "fixed_inputs"
#: The ``load_model`` option that fixes dynamic dims of input shapes (e.g. an audio model's sequence length).
INPUT_SHAPES_OPTION = "input_shapes"


def declared_dims(value) -> Optional[List[Optional[int]]]:
    """The declared dims of a graph input (``None`` where dynamic), or ``None`` when it declares no shape."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]


def _shown(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _as_input_array(value: Any, input_name: str, dtype: np.dtype, dims, name: str) -> np.ndarray:
    """``value`` as an array of the input's dtype and declared shape, or a ValueError saying why not."""
    try:
        given = np.asarray(value)
        array = given.astype(dtype)
        exact = given.dtype != object and np.array_equal(array.astype(given.dtype), given)
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact:
        raise ValueError(
            f"{FIXED_INPUTS_OPTION}[{input_name!r}] = {value!r} is not a value of the {dtype.name} input "
            f"{input_name!r} of {name}; give a number (or array) of that type."
        )
    if dims is not None:
        fits = array.ndim == len(dims) and all(d is None or d == s for d, s in zip(dims, array.shape))
        if not fits:
            declared = _shown(dims)
            raise ValueError(
                f"{FIXED_INPUTS_OPTION}[{input_name!r}] has shape {list(array.shape)} but input {input_name!r} "
                f"of {name} is declared with shape {declared}; give a value of that shape"
                f"{' (a plain number for a scalar input)' if not dims else ''}."
            )
    return array


def fix_input_values(model: ModelProto, fixed: Mapping[str, Any], name: str = "model") -> Dict[str, np.ndarray]:
    """Turn the graph inputs named in ``fixed`` into initializers holding the given values (in place).

    Each value is cast to the input's declared type (only when that loses
    nothing) and must have its declared rank and fixed dims. Returns the
    arrays, by input name. An unknown name or a value that does not fit raises
    a ``ValueError`` with one sentence for the user.

    Example::

        >>> fix_input_values(proto, {"sr": 16000}, "silero_vad.onnx")
        {'sr': array(16000)}
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {value.name: value for value in graph.input if value.name not in initializers}
    unknown = [key for key in fixed if key not in inputs]
    if unknown:
        listed = ", ".join(repr(n) for n in inputs) or "none"
        raise ValueError(
            f"{FIXED_INPUTS_OPTION} names {', '.join(repr(n) for n in unknown)}, which {name} does not take as "
            f"an input (its inputs: {listed})."
        )
    arrays: Dict[str, np.ndarray] = {}
    for input_name, value in fixed.items():
        declared = inputs[input_name]
        dtype = helper.tensor_dtype_to_np_dtype(declared.type.tensor_type.elem_type)
        arrays[input_name] = _as_input_array(value, input_name, dtype, declared_dims(declared), name)
    if model.ir_version >= 4:  # before IR 4 every initializer is listed as a graph input as well
        kept = [value for value in graph.input if value.name not in arrays]
        del graph.input[:]
        graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(array, input_name) for input_name, array in arrays.items())
    return arrays


def fix_input_shapes(model: ModelProto, shapes: Mapping[str, Sequence[Optional[int]]], name: str = "model") -> None:
    """Give the dynamic dims of the named graph inputs the sizes in ``shapes`` (``None`` keeps a dim dynamic).

    ``If`` nodes that check a sequence length (``x.shape[-1] == 1``) then fold
    for that length. The rank and the declared fixed dims must be kept; an
    unknown name or a shape that does not fit raises a ``ValueError``.

    Example::

        >>> fix_input_shapes(proto, {"input": [None, 512]}, "silero_vad.onnx")   # batch stays dynamic
    """
    initializers = {t.name for t in model.graph.initializer}
    inputs = {value.name: value for value in model.graph.input if value.name not in initializers}
    unknown = [key for key in shapes if key not in inputs]
    if unknown:
        listed = ", ".join(repr(n) for n in inputs) or "none"
        raise ValueError(
            f"{INPUT_SHAPES_OPTION} names {', '.join(repr(n) for n in unknown)}, which {name} does not take as "
            f"an input (its inputs: {listed})."
        )
    for input_name, shape in shapes.items():
        declared = declared_dims(inputs[input_name])
        wanted = [None if d is None else int(d) for d in shape]
        fits = declared is not None and len(wanted) == len(declared) and all(
            w is None or w > 0 and (d is None or d == w) for d, w in zip(declared, wanted))
        if not fits:
            shown = "unknown" if declared is None else _shown(declared)
            raise ValueError(
                f"{INPUT_SHAPES_OPTION}[{input_name!r}] = {list(shape)} does not fit input {input_name!r} of {name}, "
                f"declared with shape {shown}; give one size or None per dim, keeping the fixed ones."
            )
        dims = inputs[input_name].type.tensor_type.shape.dim
        for dim, size in zip(dims, wanted):
            if size is not None:
                dim.Clear()
                dim.dim_value = size
