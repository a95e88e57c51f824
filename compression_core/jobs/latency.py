"""A job's latency: every deployable form of the compressed model against the original, on the same runtime.

The handlers register what they deliver in a :class:`LatencyPlan` (the pruned
float model in PyTorch and as ONNX, the int8 TorchScript and int8 ONNX, a
simulated quantizer's model, float16 and bfloat16 on the GPU); once the compressed model
exists, the runner times each of them interleaved with the original on the
same runtime (:func:`~compression_core.analysis.time_paired`), per batch size,
with fixed threads, and writes ``metrics["latency"]``:

- ``machine``: CPU, cores, threads, versions, GPU, load average at the start and the end;
- ``rows``: ``{"runtime", "form", "label", "batch", "before", "after", "ratio", "flags", "notes", "verdict",
  "headline"}``, ``before``/``after`` being ``{median_ms, p10_ms, p90_ms, rounds, repeats, chunks}`` and ``ratio``
  ``{value, low, high}`` (before / after with its 95% interval) or None for a simulated quantizer;
- ``skipped``: ``{"runtime", "reason"}`` for each runtime this worker cannot time (with ``"form"`` for a
  form it cannot offer, such as bfloat16 on a GPU without it);
- ``fastest``: per batch size, the runtime and form that ran the compressed model fastest.

The medians also fill the ``latency_{cpu|gpu}_b{batch}_ms`` keys of ``before``, ``after`` and the
quantization forms, which older readers use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..analysis import fixed_threads, judge, machine_info, time_paired
from ..analysis.timing import available_cores, load_average
from ..io import onnx_session
from ..tensors import module_device

#: A pruned model can beat its MACs ratio a little (caches, fewer memory passes), not by more than this.
MACS_MARGIN = 1.5
#: int8 arithmetic does at most this many times the MACs of float32 per instruction.
INT8_GAIN = 4.0
#: float16 or bfloat16 on tensor cores against float32 CUDA cores, at most.
HALF_GAIN = 16.0
#: Calls of each model before a GPU row is timed: the first calls pick kernels and fill the allocator's cache.
GPU_WARMUP = 10

SIMULATED_NOTE = ("simulated quantization computes in float32 (the weights lie on the grid, nothing runs in "
                  "int8), so no speedup is reported; timed only for reference")


@dataclass
class DeployedForm:
    """One thing a job hands back, on one runtime."""

    form: str  # "compressed", "int8_pytorch", "int8_onnx", "simulated", "float16_gpu", "bfloat16_gpu"
    label: str
    runtime: str  # "pytorch-cpu", "onnxruntime-cpu", "pytorch-cuda", "onnxruntime-cuda"
    model: nn.Module | None = None
    onnx_path: Path | None = None
    fills: list[dict[str, Any]] = field(default_factory=list)  # receive latency_{cpu|gpu}_b{batch}_ms
    headline: bool = False  # the deliverable's figure (the job's ``after`` latency)
    flops: float | None = None  # the form's MACs: with the original's, they bound the believable speedup
    gain: float = 1.0  # how much faster per MAC its arithmetic can be (int8, float16)
    simulated: bool = False
    dtype: torch.dtype = torch.float32  # of its inputs (a float16 model takes float16 inputs)


@dataclass
class LatencyPlan:
    """What the runner times once the handler is done, and where the medians go."""

    forms: list[DeployedForm] = field(default_factory=list)
    copies: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # forms a handler could not offer, and why

    def add(self, form: DeployedForm) -> None:
        self.forms.append(form)

    def copy_when_measured(self, target: dict[str, Any], source: dict[str, Any]) -> None:
        """Give ``target`` the latency keys of ``source`` once they are measured (a form that is another
        dict's model, such as the float form of a quantization)."""
        self.copies.append((target, source))


def macs_bound(before_flops: float | None, after_flops: float | None, gain: float = 1.0) -> tuple[float, str] | None:
    """The largest believable ratio of a model with these MACs: ``gain`` x the MACs ratio x :data:`MACS_MARGIN`."""
    if not before_flops or not after_flops:
        return None
    macs_ratio = before_flops / after_flops
    reason = f"its MACs went down {macs_ratio:.2f}x"
    if gain != 1.0:
        reason += f" and its arithmetic is at most {gain:g}x faster per MAC"
    return MACS_MARGIN * gain * macs_ratio, reason + f"; {MACS_MARGIN:g}x that is the bound"


def _onnx_cuda_available() -> bool:
    # onnxruntime is a heavy native library: loaded only when a job times ONNX on a GPU worker.
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _cuda_session(path: Path, threads: int):
    # onnxruntime is a heavy native library: loaded only when a job times ONNX on a GPU worker.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


class _Runners:
    """Builds (and caches) the zero-argument calls that are timed: a model or session on an input batch."""

    def __init__(self, example: torch.Tensor, threads: int):
        self.example, self.threads = example.cpu(), threads  # each runtime's batch is moved from the CPU
        self._sessions: dict[tuple[str, str], Any] = {}
        self._moved: dict[tuple[int, str], nn.Module] = {}

    def _batch(self, batch: int) -> torch.Tensor:
        return self.example.repeat(batch, *[1] * (self.example.dim() - 1))

    def pytorch(self, model: nn.Module, batch: int, cuda: bool,
                dtype: torch.dtype = torch.float32) -> Callable[[], Any]:
        x = self._batch(batch)
        wanted = "cuda" if cuda else "cpu"
        if module_device(model).type != wanted:
            # A copy on the runtime's device (a model fine-tuned on the GPU is timed on the CPU too), made once.
            key = (id(model), wanted)
            if key not in self._moved:
                self._moved[key] = copy.deepcopy(model).to(wanted).eval()
            model = self._moved[key]
        x = x.to(device=wanted, dtype=dtype)
        model.eval()
        return lambda: model(x)

    def onnx(self, path: Path, batch: int, cuda: bool) -> Callable[[], Any]:
        key = (str(path), "cuda" if cuda else "cpu")
        if key not in self._sessions:
            self._sessions[key] = _cuda_session(path, self.threads) if cuda else onnx_session(path, self.threads)
        session = self._sessions[key]
        feed = {session.get_inputs()[0].name: self._batch(batch).numpy()}
        return lambda: session.run(None, feed)


def _with_gpu_twins(forms: list[DeployedForm], skipped: list[dict[str, str]]) -> list[DeployedForm]:
    """The float forms again on the GPU runtimes, where the worker has them (else the reason they are not)."""
    float_forms = [f for f in forms if f.form == "compressed"]
    if not torch.cuda.is_available():
        skipped.append({"runtime": "pytorch-cuda", "reason": "this worker has no CUDA device"})
        skipped.append({"runtime": "onnxruntime-cuda", "reason": "this worker has no CUDA device"})
        return forms
    twins = [copy.copy(f) for f in float_forms if f.runtime == "pytorch-cpu"]
    for twin in twins:
        twin.runtime = "pytorch-cuda"  # keeps its fills and headline: they receive the latency_gpu_* keys
    if _onnx_cuda_available():
        onnx_twins = [copy.copy(f) for f in float_forms if f.runtime == "onnxruntime-cpu"]
        for twin in onnx_twins:
            twin.runtime, twin.fills, twin.headline = "onnxruntime-cuda", [], False
        twins += onnx_twins
    else:
        skipped.append({"runtime": "onnxruntime-cuda",
                        "reason": "onnxruntime has no CUDA execution provider here (onnxruntime-gpu is not installed)"})
    return forms + twins


def measure_deployed_forms(plan: LatencyPlan, original: nn.Module, original_onnx: Path, example: torch.Tensor,
                           batch_sizes: tuple[int, ...], *, before: dict[str, Any], min_rounds: int,
                           budget_s: float, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time every form in ``plan`` against the original on its runtime, per batch size; return the latency
    block and fill the ``latency_*`` keys of ``before`` and of each form's ``fills``."""
    threads = max(1, min(torch.get_num_threads(), available_cores()))
    machine = machine_info(threads)
    skipped: list[dict[str, str]] = list(plan.skipped)
    forms = _with_gpu_twins(plan.forms, skipped)
    runners = _Runners(example, threads)
    rows: list[dict[str, Any]] = []
    steps, done = len(forms) * len(batch_sizes), 0
    with fixed_threads(threads), torch.inference_mode():
        for form in forms:
            cuda = form.runtime.endswith("cuda")
            sync = torch.cuda.synchronize if cuda and form.runtime.startswith("pytorch") else None
            for batch in batch_sizes:
                if form.onnx_path is not None:
                    run_before = runners.onnx(original_onnx, batch, cuda)
                    run_after = runners.onnx(form.onnx_path, batch, cuda)
                else:
                    run_before = runners.pytorch(original, batch, cuda)
                    run_after = runners.pytorch(form.model, batch, cuda, dtype=form.dtype)
                timing = time_paired(run_before, run_after, min_rounds=min_rounds, max_rounds=max(10 * min_rounds, 60),
                                     budget_s=budget_s, warmup=GPU_WARMUP if cuda else 3, sync=sync,
                                     threads=threads)
                rows.append(_row(form, batch, timing, macs_bound(before.get("flops"), form.flops, form.gain)))
                done += 1
                if progress is not None:
                    progress(done, steps)
    machine["load_end"] = load_average()
    _fill(rows, forms, before, plan)
    return {"machine": machine, "rows": rows, "skipped": skipped, "fastest": _fastest(rows)}


def _row(form: DeployedForm, batch: int, timing, plausible: tuple[float, str] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"runtime": form.runtime, "form": form.form, "label": form.label, "batch": batch,
                           "before": timing.before.to_dict(), "after": timing.after.to_dict(),
                           "headline": form.headline}
    if form.simulated:
        row.update({"ratio": None, "flags": [], "notes": [SIMULATED_NOTE], "verdict": "simulated"})
        return row
    bound, reason = plausible if plausible else (None, "")
    row.update({"ratio": timing.ratio_dict(), **judge(timing, plausible_max=bound, plausible_reason=reason)})
    row["load"] = {"run_queue_share": timing.run_queue_share, "cpu_share": round(timing.cpu_share, 3),
                   "load_start": timing.load_start, "load_end": timing.load_end}
    return row


def _fill(rows: list[dict[str, Any]], forms: list[DeployedForm], before: dict[str, Any], plan: LatencyPlan) -> None:
    by_form = {(row["runtime"], row["form"], row["label"], row["batch"]): row for row in rows}
    for form in forms:
        device = "gpu" if form.runtime.endswith("cuda") else "cpu"
        for (runtime, kind, label, batch), row in by_form.items():
            if (runtime, kind, label) != (form.runtime, form.form, form.label):
                continue
            key = f"latency_{device}_b{batch}_ms"
            for target in form.fills:
                target[key] = row["after"]["median_ms"]
            # The original's figure: from the first row timed on PyTorch (eager, as users run it).
            if form.runtime.startswith("pytorch") and key not in before:
                before[key] = row["before"]["median_ms"]
    for target, source in plan.copies:
        target.update({k: v for k, v in source.items() if k.startswith("latency_")})


def _fastest(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per batch size, the runtime and form with the lowest median for the compressed model."""
    fastest: dict[str, dict[str, Any]] = {}
    for row in rows:
        best = fastest.get(str(row["batch"]))
        if best is None or row["after"]["median_ms"] < best["median_ms"]:
            fastest[str(row["batch"])] = {"runtime": row["runtime"], "form": row["form"], "label": row["label"],
                                          "median_ms": row["after"]["median_ms"]}
    return fastest
