"""What the model page and the API show of an uploaded model: input shape, layer table, totals, prunability,
and whether jobs can run on it (batch sizes, literal shapes, agreement with onnxruntime).

A job trains, evaluates and measures in batches, so a model that only runs at
batch 1 would fail after it was queued; :func:`batch_report` says so at upload,
with the fix, and records ``fixed_batch`` so that jobs are refused up front.

Example::

    >>> summary = inspect_model(ModelSource(path="upload/model.onnx"))
    >>> summary["batch"]["fixed_batch"], summary["batch"]["runs"][1]["torch"]
    (None, 'ok')
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from ..analysis import model_summary
from ..io import IntakeLimits, detect_format, literal_reshapes, onnx_input_shapes, onnx_session, read_onnx
from ..pruning.base import PRUNABLE_TYPES
from ..speedup import SpeedupError, prunability_report
from ..tensors import flatten_tensors
from .recipe import ModelSource

#: The batch sizes every upload is run at (in onnxruntime and in the imported model).
CHECKED_BATCHES = (1, 2)
#: Largest output difference from onnxruntime at batch 1 for which an ONNX upload is accepted.
IMPORT_ATOL = 1e-4

DYNAMIC_EXPORT_HINT = (
    "re-export it with a dynamic batch: torch.onnx.export(model, (x,), path, dynamo=False, "
    "input_names=['input'], dynamic_axes={'input': {0: 'batch'}}) or torch.onnx.export(model, (x,), path, "
    "dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch')},), external_data=False), and write "
    "x.flatten(1) or x.view(x.size(0), -1) rather than a literal batch size"
)


def inspect_model(
    source: ModelSource, input_shape: list[int] | None = None, model: nn.Module | None = None
) -> dict[str, Any]:
    """Describe a model (loaded from ``source`` unless given): input shape, layer table, totals, prunability,
    and its :func:`batch_report` under ``"batch"``.

    An ONNX file is also run in onnxruntime: ``"onnxruntime_max_abs_diff"`` is
    the import's largest output difference at batch 1. Raises ``ValueError``
    (``ModelFormatError`` is one) with a message fit for the user when the
    model cannot be loaded or run at batch 1, or its import does not match
    onnxruntime there.

    Example::

        >>> summary = inspect_model(ModelSource(architecture="digits_cnn"))
        >>> summary["input_shape"], summary["prunable_layers"]
        ([1, 8, 8], ['conv1', 'conv2', 'fc1', 'fc2'])
    """
    model = model if model is not None else source.load()
    shape = list(input_shape) if input_shape else source.default_input_shape()
    if not shape:
        raise ValueError("the model's input shape is dynamic; give the input shape (e.g. [3, 224, 224])")
    example = torch.randn(1, *shape)
    try:
        summary = model_summary(model, example)
    except Exception as exc:
        raise ValueError(f"the model does not run on an input of shape {[1, *shape]}: {exc}") from exc
    summary["input_shape"] = shape
    summary["prunable_layers"] = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        summary["prunability"] = prunability_report(model, example)
    except SpeedupError as exc:
        # Still a usable model (fine-grained pruning needs no graph); say why
        # channel pruning cannot be planned.
        summary["prunability"] = {"error": str(exc), "groups": [], "unprunable": [], "warnings": []}
    onnx_path = source.path if source.path and detect_format(source.path) == "onnx" else None
    report = batch_report(model, shape, onnx_path, limits=source.intake_limits())
    summary["batch"] = report
    if onnx_path is not None:
        first = report["runs"][0]
        if first["onnxruntime"] != "ok":
            raise ValueError(f"{Path(onnx_path).name} does not run in onnxruntime at batch 1: {first['onnxruntime']}")
        if first["max_abs_diff"] is None or first["max_abs_diff"] > IMPORT_ATOL:
            found = first["comparison"] or f"max abs difference {first['max_abs_diff']:.3g} > {IMPORT_ATOL:g}"
            raise ValueError(f"{Path(onnx_path).name}: the converted PyTorch model does not reproduce "
                             f"onnxruntime's output at batch 1 ({found})")
        summary["onnxruntime_max_abs_diff"] = first["max_abs_diff"]
    return summary


def batch_report(model: nn.Module, input_shape: list[int], onnx_path: str | Path | None = None,
                 limits: IntakeLimits = IntakeLimits()) -> dict[str, Any]:
    """Run ``model`` (and the ONNX file it came from, in onnxruntime) at batch 1 and 2; say what that means for jobs.

    Returns ``{"declared_batch", "runs", "literal_reshapes", "fixed", "fixed_batch", "advice"}``:

    - ``declared_batch``: the batch size the ONNX input declares (``None``: dynamic, or not ONNX);
    - ``runs``: per batch size ``{"batch", "torch", "onnxruntime", "max_abs_diff", "comparison"}``,
      each runtime ``"ok"`` or the error (an output whose batch is not the input's is one),
      ``onnxruntime`` ``None`` without a file. When the input declares a fixed batch,
      onnxruntime runs the other size on a copy whose batch dimension is freed, so that what
      fails there is the graph itself, not the declaration;
    - ``literal_reshapes``: Reshape nodes whose literal target pins the batch or a channel count;
    - ``fixed``: the declared batch is fixed, or batch 2 fails in either runtime;
    - ``fixed_batch``: ``1`` when the imported model (what jobs run) fails at batch 2, else ``None``;
    - ``advice``: sentences for the user, each with its fix.

    Example::

        >>> batch_report(module, [1, 8, 8], "static.onnx")["fixed_batch"]
        1
    """
    proto = read_onnx(onnx_path, check=False, limits=limits) if onnx_path is not None else None
    declared = None
    if proto is not None:
        shapes = onnx_input_shapes(proto)
        declared = shapes[0][0] if shapes and shapes[0] else None
    inputs = {batch: torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(batch))
              for batch in CHECKED_BATCHES}
    torch_outputs = {batch: _run_torch(model, x) for batch, x in inputs.items()}
    ort_outputs = _run_onnxruntime(proto, onnx_path, declared, inputs) if proto is not None else {}
    runs = []
    for batch in CHECKED_BATCHES:
        mine, ref = torch_outputs[batch], ort_outputs.get(batch)
        run = {"batch": batch, "torch": mine if isinstance(mine, str) else "ok",
               "onnxruntime": None if ref is None else (ref if isinstance(ref, str) else "ok"),
               "max_abs_diff": None, "comparison": None}
        if run["torch"] == "ok" and run["onnxruntime"] == "ok":
            run["max_abs_diff"], run["comparison"] = _compare(mine, ref)
        runs.append(run)
    literals = literal_reshapes(proto) if proto is not None else []
    torch_fails = runs[1]["torch"] != "ok"
    ort_fails = runs[1]["onnxruntime"] not in (None, "ok")
    report = {
        "declared_batch": declared,
        "runs": runs,
        "literal_reshapes": literals,
        "fixed": declared is not None or torch_fails or ort_fails,
        "fixed_batch": 1 if torch_fails else None,
    }
    report["advice"] = _advice(report)
    return report


def fixed_batch_message(report: dict[str, Any]) -> str | None:
    """The sentence that refuses a job on a model whose import runs at batch 1 only (``None``: jobs can run)."""
    if not report or not report.get("fixed_batch"):
        return None
    runs = report.get("runs") or []
    error = next((r["torch"] for r in runs if r.get("batch") == 2 and r.get("torch") != "ok"), "it fails")
    pinned = [r for r in report.get("literal_reshapes", []) if r.get("pins_batch")]
    where = f" (Reshape {_names(pinned)} has a literal batch size)" if pinned else ""
    return (f"this model runs at batch 1 only{where}: at batch 2 {error}; jobs train, evaluate and measure in "
            f"batches, so upload it again after you {DYNAMIC_EXPORT_HINT}.")


def _names(literals: list[dict[str, Any]], limit: int = 4) -> str:
    shown = [f"{r['node']} {r['shape']}" for r in literals[:limit]]
    more = f" and {len(literals) - limit} more" if len(literals) > limit else ""
    return ", ".join(shown) + more


def _advice(report: dict[str, Any]) -> list[str]:
    advice = []
    declared, runs = report["declared_batch"], report["runs"]
    blocked = fixed_batch_message(report)
    if blocked:
        advice.append(blocked[0].upper() + blocked[1:])
    elif declared is not None:
        ort_second = runs[1]["onnxruntime"]
        graph = ("onnxruntime also runs the graph at batch 2 once that declaration is freed" if ort_second == "ok"
                 else f"with that declaration freed, onnxruntime still fails at batch 2 ({ort_second})")
        advice.append(f"The ONNX input declares batch {declared}, so the file as uploaded runs at that batch only; "
                      f"{graph}. Jobs run the imported PyTorch model, which runs batch 2, and export the compressed "
                      f"model with a dynamic batch. To run the original at any batch size, {DYNAMIC_EXPORT_HINT}.")
    elif runs[1]["onnxruntime"] not in (None, "ok"):
        advice.append(f"onnxruntime fails at batch 2 ({runs[1]['onnxruntime']}), while the imported model runs it; "
                      f"jobs run the imported model. To run the file itself at any batch size, {DYNAMIC_EXPORT_HINT}.")
    second = runs[1]
    if second["max_abs_diff"] is not None and second["max_abs_diff"] > IMPORT_ATOL:
        advice.append(f"At batch 2 the imported model differs from onnxruntime by {second['max_abs_diff']:.3g} "
                      f"(batch 1: {runs[0]['max_abs_diff']:.3g}); results of jobs at larger batches may differ "
                      "from the uploaded file's.")
    elif second["comparison"]:
        advice.append(f"At batch 2 the imported model does not match onnxruntime: {second['comparison']}.")
    pinning = [r for r in report["literal_reshapes"] if r["pins_channels"]]
    if pinning:
        advice.append(f"Reshape {_names(pinning)} fixes a size after the batch dimension; unless the importer "
                      "rewrote it (see the prunability report), the layers feeding it keep their channels.")
    return advice


def _run_torch(model: nn.Module, x: torch.Tensor) -> list[np.ndarray] | str:
    try:
        with torch.inference_mode():
            outputs = [t.detach().cpu().float().numpy() for t in flatten_tensors(model(x))]
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported as such
        return _one_line(exc)
    return _wrong_batch(outputs, len(x)) or outputs


def _wrong_batch(outputs: list[np.ndarray], batch: int) -> str | None:
    """A model that folds its batch away (``view(1, -1)`` before a pooling) runs, but answers for one sample."""
    if outputs and outputs[0].ndim and outputs[0].shape[0] != batch:
        return f"it returns an output of shape {list(outputs[0].shape)} for a batch of {batch}"
    return None


def _run_onnxruntime(proto: onnx.ModelProto, path, declared: int | None,
                     inputs: dict[int, torch.Tensor]) -> dict[int, list[np.ndarray] | str]:
    """onnxruntime's outputs per batch (or the error): the file itself at its declared batch, and where
    that is fixed, a copy whose batch is free at the other sizes."""
    import onnxruntime as ort  # heavy native library: loaded when a model is run, as onnx_session does

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing batch is reported in the summary, not logged as an error
    results: dict[int, list[np.ndarray] | str] = {}
    with tempfile.TemporaryDirectory(prefix="condense-batch-") as tmp:
        sessions: dict[bool, Any] = {}
        for batch, x in inputs.items():
            freed = declared is not None and batch != declared
            try:
                if freed not in sessions:
                    run_path = path
                    if freed:
                        run_path = Path(tmp) / "free-batch.onnx"
                        onnx.save(_free_batch(proto, declared), str(run_path))
                    sessions[freed] = onnx_session(run_path)
                session = sessions[freed]
                name = session.get_inputs()[0].name
                outputs = [np.asarray(out) for out in session.run(None, {name: x.numpy()}, quiet)]
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
                results[batch] = _one_line(exc)
                continue
            results[batch] = _wrong_batch(outputs, batch) or outputs
    return results


def _free_batch(proto: onnx.ModelProto, declared: int) -> onnx.ModelProto:
    """A copy whose first input and the outputs that declare the same batch have a symbolic batch dimension."""
    free = onnx.ModelProto()
    free.CopyFrom(proto)
    del free.graph.value_info[:]  # the exporter's intermediate shapes still say batch 1
    initializers = {t.name for t in free.graph.initializer}
    graph_inputs = [value for value in free.graph.input if value.name not in initializers]
    for value in graph_inputs[:1] + list(free.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == declared:
            dims[0].dim_param = "batch"
    return free


def _compare(mine: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float | None, str | None]:
    """Largest absolute output difference, or why the outputs cannot be compared."""
    if len(mine) != len(ref):
        return None, f"the import returns {len(mine)} outputs, onnxruntime {len(ref)}"
    worst = 0.0
    for index, (a, b) in enumerate(zip(mine, ref)):
        if a.shape != b.shape:
            return None, f"output {index} has shape {list(a.shape)} after import, {list(b.shape)} in onnxruntime"
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        if not np.array_equal(np.isnan(a64), np.isnan(b64)):
            return float("inf"), f"output {index} has NaN where the other runtime has a number"
        worst = max(worst, float(np.max(np.where(both_nan, 0.0, np.abs(a64 - b64)))))
    return worst, None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The error in one line, without onnxruntime's error code and C++ source location."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    if "Status Message:" in text:
        head, detail = text.split("Status Message:", 1)
        text = head.strip() + " " + (detail.split(" was false. ", 1)[1] if " was false. " in detail else detail.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
