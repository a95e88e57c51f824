"""What a failed job tells its user: one sentence, by class of failure, naming the layer it happened in.

:func:`explain_failure` turns any exception into that sentence; :func:`run_job
<.runner.run_job>` raises :class:`JobFailed` carrying it (and the stage it failed
in), so the worker, the API and the command line all show the same words. The
traceback is for the log, never for the sentence.

The layer (and ONNX node) a failure happened in comes from
:func:`~.failure_location.locate_failure`.

Example::

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
    >>> try:
    ...     model(torch.zeros(4, 144))
    ... except RuntimeError as exc:
    ...     print(explain_failure(exc, stage="measure_original", model=model))
    layer `1` (Linear) expects 100 input features but receives 144 while measuring the original model: check
    that the job's input shape matches the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .failure_location import Location, locate_failure
from .stages import JobCancelled

__all__ = ["JobFailed", "explain_failure"]

#: What the job was doing in each stage of :data:`~.stages.STAGES`, as the end of "... while <phrase>".
#: ``load`` covers what the runner does before measuring: loading, the full validation and one pass over the data.
STAGE_PHRASES: dict[str, str] = {
    "load": "loading the model and its data",
    "measure_original": "measuring the original model",
    "analyse": "running the sensitivity analysis",
    "dependency_groups": "finding the coupled layers",
    "prune": "pruning",
    "speedup": "removing the pruned channels",
    "finetune": "fine-tuning",
    "measure_compressed": "measuring the compressed model",
    "quantize": "quantizing",
    "measure_quantized": "measuring the quantized model",
    "export_int8_onnx": "exporting the int8 ONNX model",
    "export": "exporting the compressed model",
    "measure_latency": "timing the compressed model against the original",
    "done": "finishing the job",
}

#: The setting that sizes a stage's batches, for when memory runs out there (elsewhere: the input shape).
_BATCH_KNOBS: dict[str, str] = {
    "analyse": "a smaller training batch_size (params.training.batch_size)",
    "prune": "a smaller training batch_size (params.training.batch_size)",
    "finetune": "a smaller training batch_size (params.training.batch_size)",
    "quantize": "a smaller training batch_size for the quantizer (its params.training.batch_size)",
    "measure_latency": "smaller latency_batch_sizes (the batch sizes latency is timed at)",
}

#: Stages after which the model's layers may have lost channels: a channel mismatch there comes from compressing.
_AFTER_COMPRESSION = {"speedup", "finetune", "measure_compressed", "quantize", "measure_quantized",
                      "export_int8_onnx", "export", "done"}

_MAX_CHARS = 1000  # a sentence, not a dump: longer messages are cut

#: What to do about a batch size written into an ONNX export.
_ONNX_DYNAMIC_BATCH = ("re-export the model with a dynamic batch dimension (torch.onnx.export with "
                       "dynamic_axes={'input': {0: 'batch'}}, or dynamo=True with dynamic_shapes) and upload it again")



class JobFailed(ValueError):
    """A job that failed, with the one sentence its user reads.

    ``sentence`` is :func:`explain_failure`'s; ``stage`` the :data:`~.stages.STAGES`
    name the job was in (``None`` before the first); the original exception is
    ``__cause__``. A ``ValueError``, so code that catches recipe errors catches it.

    Example::

        try:
            run_job(recipe)
        except JobFailed as exc:
            print(exc.sentence, "in stage", exc.stage)
    """

    def __init__(self, sentence: str, *, stage: str | None = None):
        super().__init__(sentence)
        self.sentence = sentence
        self.stage = stage

    @classmethod
    def from_exception(cls, exc: BaseException, *, stage: str | None = None,
                       model: nn.Module | None = None) -> "JobFailed":
        """The :class:`JobFailed` for ``exc`` (raise it ``from exc``)."""
        return cls(explain_failure(exc, stage=stage, model=model), stage=stage)


def explain_failure(exc: BaseException, *, stage: str | None = None, model: nn.Module | None = None) -> str:
    """One plain sentence for ``exc``: what failed, on which layer or node, what to change.

    ``stage`` is the :data:`~.stages.STAGES` name the job was in, ``model`` the
    job's model (to name layers by their qualified name). User errors
    (``ValueError``, ``ModelFormatError``) keep their message; shape and channel
    mismatches, out of memory, unsupported operators and missing keys get a
    sentence of their own; anything else is an internal error, the only
    sentence that names an exception class.

    Example::

        >>> explain_failure(ValueError("config_list[0]: unknown key 'sparsty'"), stage="load")
        "config_list[0]: unknown key 'sparsty'"
        >>> explain_failure(torch.cuda.OutOfMemoryError("CUDA out of memory"), stage="finetune")
        'the GPU memory ran out while fine-tuning: run the job on the CPU, or use a smaller training batch_size ...'
    """
    if isinstance(exc, JobFailed):
        return exc.sentence
    if isinstance(exc, JobCancelled):
        return "the job was cancelled; nothing failed"
    where = locate_failure(exc, model)
    for explain in _EXPLAINERS:
        sentence = explain(exc, _Failure(exc, _message(exc), stage, where, model))
        if sentence:
            return _one_line(sentence)
    return _one_line(_internal(_Failure(exc, _message(exc), stage, where, model)))


# -- what: one explainer per class of failure ------------------------------------------------------------------


@dataclass
class _Failure:
    exc: BaseException
    message: str
    stage: str | None
    where: Location
    model: nn.Module | None = None

    @property
    def during(self) -> str:
        return f"while {STAGE_PHRASES.get(self.stage, self.stage.replace('_', ' '))}" if self.stage else ""

    @property
    def after_compression(self) -> bool:
        return self.stage in _AFTER_COMPRESSION

    def at(self) -> str:
        """``in layer `x` (...)``, or nothing when the failure is not inside the model."""
        return f"in {self.where.describe()}" if self.where.layer is not None else ""


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _one_line(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1].rstrip() + "…"


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _out_of_memory(exc: BaseException, f: _Failure) -> str | None:
    cuda = isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in f.message
    cpu = isinstance(exc, MemoryError) or "DefaultCPUAllocator: can't allocate" in f.message
    if not (cuda or cpu):
        return None
    device = "GPU" if cuda else "worker's"
    knob = _BATCH_KNOBS.get(f.stage or "")
    if cuda:
        advice = f"run the job on the CPU, or use {knob or 'a smaller input shape'}"
    else:
        advice = f"use {knob} or a smaller input shape" if knob else "use a smaller input shape"
    return _join(f"the {device} memory ran out", f.during, f.at()) + f": {advice}."


def _user_error(exc: BaseException, f: _Failure) -> str | None:
    if not isinstance(exc, ValueError) or not f.message.strip():
        return None
    # A message phrased for the user stays as it is; when it wraps a failure inside the model, add the layer.
    cause = exc.__cause__
    if cause is not None and cause.__traceback__ is not None:
        where = locate_failure(cause, f.model)
        if where.layer and f"`{where.layer}`" not in f.message and f"'{where.layer}'" not in f.message:
            return f"{f.message.rstrip('. ')}; it happened in {where.describe()}."
    return f.message


_RESHAPE = re.compile(r"shape '\[([-\d, ]*)\]' is invalid for input of size (\d+)")
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_SIZES = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton "
                    r"dimension (-?\d+)")
_CONV_CHANNELS = re.compile(r"expected input\[[\d, ]*\] to have (\d+) channels, but got (\d+) channels")
_RUNNING_STATS = re.compile(r"running_(?:mean|var) should contain (\d+) elements not (\d+)")
_NORMALIZED = re.compile(r"expected input with shape \[\*, ([\d, ]*)\], but got input of size\s*\[([\d, ]*)\]")
_ANY_CHANNELS = re.compile(r"[Ee]xpected\b.*\bchannels")


def _fixed_batch_advice(f: _Failure) -> str:
    if f.where.is_onnx:
        return _ONNX_DYNAMIC_BATCH
    return "compute the shape from the input (x.flatten(1) or x.view(x.size(0), -1)) instead of hard-coding it"


def _channel_advice(f: _Failure) -> str:
    layer = f"`{f.where.layer}`" if f.where.layer else "that layer"
    if f.after_compression:
        return (f"compressing changed the channels around it: exclude {layer} and the layer that feeds it "
                "from the config list (exclude_op_names) and run the job again")
    return "check that the job's input shape matches the model"


def _mismatch(f: _Failure, what: str) -> str:
    """``<layer> <what> while <stage>: <advice>.``"""
    subject = f.where.describe() if f.where.layer is not None else "a layer"
    return _join(subject, what, f.during) + f": {_channel_advice(f)}."


def _fixed_batch(f: _Failure, what: str, batch: str = " of 1") -> str:
    """``the model has a fixed batch size of 1 in <layer>: <what> while <stage>; <advice>.``"""
    return _join(f"the model has a fixed batch size{batch}", f.at()) + ": " + _join(what, f.during) + \
        f"; {_fixed_batch_advice(f)}."


def _shape_mismatch(exc: BaseException, f: _Failure) -> str | None:
    if not isinstance(exc, RuntimeError):
        return None
    if match := _RESHAPE.search(f.message):
        shape = [int(d) for d in match.group(1).replace(" ", "").split(",") if d]
        size = int(match.group(2))
        per_sample = 1
        for d in shape[1:]:
            per_sample *= d if d > 0 else 1
        if shape and shape[0] == 1 and -1 not in shape[1:] and size % per_sample == 0 and size > per_sample:
            return _fixed_batch(f, f"it reshapes to {shape} but receives {size // per_sample} samples ({size} values)")
        return _join("the model cannot reshape", f"{size} values to {shape}", f.at(), f.during) + \
            ": check that the job's input shape matches the model."
    if match := _MATMUL.search(f.message):
        rows, received, expected = int(match.group(1)), int(match.group(2)), int(match.group(3))
        if rows == 1 and received > expected and received % expected == 0:
            return _fixed_batch(f, f"it expects {expected} input features but receives {received} "
                                   f"({received // expected} samples flattened into one)")
        return _mismatch(f, f"expects {expected} input features but receives {received}")
    if match := _CONV_CHANNELS.search(f.message):
        return _mismatch(f, f"expects {match.group(1)} input channels but receives {match.group(2)}")
    if match := _RUNNING_STATS.search(f.message):
        return _mismatch(f, f"expects {match.group(2)} input channels but receives {match.group(1)}")
    if match := _NORMALIZED.search(f.message):
        return _mismatch(f, f"expects inputs ending in [{match.group(1)}] but receives [{match.group(2)}]")
    if _ANY_CHANNELS.search(f.message):
        return _mismatch(f, f"receives a different number of channels than it expects ({f.message.strip()[:200]})")
    if match := _SIZES.search(f.message):
        a, b, dim = match.groups()
        if int(dim) == 0:
            return _fixed_batch(f, f"it combines tensors of batch sizes {a} and {b}", batch="")
        return _mismatch(f, f"combines tensors of sizes {a} and {b} at dimension {dim}")
    return None


_ORT_RUNNING = re.compile(r"running (\w+) node\. Name:'([^']*)'")
_ORT_MISSING = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")
_ORT_INPUT = re.compile(r"invalid dimensions for input: (\S+) for the following indices\s+index: (\d+) Got: (\d+) "
                        r"Expected: (\d+)")
_ORT_FIXED_RESHAPE = re.compile(r"Input shape:\{(\d+)[,}].*requested shape:\{1[,}]")
_ORT_SOURCE = re.compile(r"/\S+\.(?:h|cc|cpp):\d+ .*? was false\.\s*")  # where in onnxruntime's C++, for its developers
_ATEN_BACKEND = re.compile(r"Could not run '([^']+)' with arguments from the '([^']+)' backend")


def _onnxruntime(exc: BaseException, f: _Failure) -> str | None:
    if not (type(exc).__module__.startswith("onnxruntime") or "[ONNXRuntimeError]" in f.message):
        return None
    detail = _ORT_SOURCE.sub("", re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", f.message.strip()))
    if match := _ORT_MISSING.search(detail):
        op, version, node = match.groups()
        return _join(f"onnxruntime has no implementation of the {op} operator (opset {version}) used by "
                     f"ONNX node '{node}'", f.during) + ": exclude that layer from the config list or choose another " \
            "algorithm."
    if match := _ORT_INPUT.search(detail):
        name, index, got, expected = match.groups()
        if index == "0" and expected == "1":
            return _join(f"the ONNX model's input '{name}' has a fixed batch size of 1 but receives {got} samples",
                         f.during) + f"; {_ONNX_DYNAMIC_BATCH}."
        return _join(f"the ONNX model's input '{name}' expects size {expected} at dimension {index} but receives "
                     f"{got}", f.during) + ": check that the job's input shape matches the model."
    if match := _ORT_RUNNING.search(detail):
        op, node = match.groups()
        status = detail.split("Status Message:", 1)[-1].strip()
        if (fixed := _ORT_FIXED_RESHAPE.search(status)) and int(fixed.group(1)) > 1:
            return _join(f"the model has a fixed batch size of 1 in ONNX {op} node '{node}'", f.during) + \
                f" ({status[:300]}); {_ONNX_DYNAMIC_BATCH}."
        return _join(f"onnxruntime failed to run ONNX {op} node '{node}'", f.during) + \
            f" ({status[:300]}): check that the job's input shape and batch size fit the model."
    return _join("onnxruntime failed", f.during) + f" ({detail[:300]}): check the job's input shape."


def _unsupported_operator(exc: BaseException, f: _Failure) -> str | None:
    if not isinstance(exc, NotImplementedError):
        return None
    if match := _ATEN_BACKEND.search(f.message):
        op, backend = match.groups()
        return _join(f"the operation {op} has no {backend} kernel", f.at(), f.during) + \
            f": exclude {'`' + f.where.layer + '`' if f.where.layer else 'that layer'} from the config list " \
            "(exclude_op_names) and run the job again."
    what = f.message.strip().rstrip(".") or "an operation"
    if f.where.onnx:
        op, node = f.where.onnx.get("op", "?"), f.where.onnx.get("node", "?")
        head = f"the ONNX {op} node '{node}' (layer `{f.where.layer}`) cannot run in PyTorch"
    elif f.where.is_onnx:
        head = f"{f.where.describe()} of the imported ONNX model cannot run in PyTorch"
    else:
        head = _join("an operation is not supported", f.at())
    batch = "batch" in what.lower()
    advice = _fixed_batch_advice(f) if batch else \
        "re-export the model without this operation (or at another opset), or exclude that layer from the config list"
    return _join(head, f.during) + f" ({what}); {advice}."


def _missing_key(exc: BaseException, f: _Failure) -> str | None:
    if not isinstance(exc, KeyError):
        return None
    place = f"(in {f.where.describe()})" if f.where.describe() else ""
    return _join(f"the key {f.message!r} was missing", f.during, place) + \
        f": check that the job's params (config_list entries, training options) give {f.message!r}."


def _internal(f: _Failure) -> str:
    detail = f.message.strip().splitlines()[0][:200] if f.message.strip() else ""
    what = _join(type(f.exc).__name__, f"in {f.where.describe()}" if f.where.describe() else "")
    return (_join("internal error", f.during) + f" ({what}{': ' + detail if detail else ''}); "
            "the model was left unchanged; please report it with the job id.")


#: In order: the first that recognises the failure writes the sentence; :func:`_internal` takes the rest.
_EXPLAINERS: list[Callable[[BaseException, _Failure], str | None]] = [
    _out_of_memory, _user_error, _shape_mismatch, _onnxruntime, _unsupported_operator, _missing_key,
]
