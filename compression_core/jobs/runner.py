"""Run one job end to end: load, validate, measure the original, hand over to the job's handler.

The runner knows nothing of Django or Celery: the worker builds a
:class:`~.recipe.Recipe` from a job row and passes a ``progress(fraction,
message)`` callable; the same recipe runs from a shell with
``python -m compression_core run recipe.json``.

Example::

    recipe = Recipe(
        model=ModelSource(architecture="digits_cnn"),
        input_shape=[1, 8, 8],
        algorithm="L1NormPruner",
        params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
        dataset="digits",
        output_dir="out/",
    )
    result = run_job(recipe, progress=lambda f, msg: print(f"{f:.0%} {msg}"))
    result.metrics["after"]["params"]
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..algorithms import AlgorithmKind, AlgorithmSpec, get_algorithm
from ..evaluation import TrainingOptions
from .analysis import run_sensitivity
from .chain import run_prune_then_quantize
from .context import JobContext
from .device import GpuMemory, job_device, release_memory
from .errors import JobFailed
from .latency import measure_deployed_forms
from .measure import Measurement
from .progress import ProgressPlan
from .pruning import run_pruning
from .quantization import run_quantization
from .recipe import Recipe
from .result import JobResult
from .stages import JobCancelled, Progress, Reporter
from .validation import data_needs, validate_recipe

Handler = Callable[[JobContext, nn.Module, dict[str, Any], list[dict[str, Any]]], JobResult]

#: One handler per kind of algorithm; a pruning job that names a quantizer to run after it is a chain.
HANDLERS: dict[AlgorithmKind, Handler] = {
    AlgorithmKind.PRUNING: run_pruning,
    AlgorithmKind.QUANTIZATION: run_quantization,
    AlgorithmKind.ANALYSIS: run_sensitivity,
}


def handler_for(spec: AlgorithmSpec, params: dict[str, Any]) -> Handler:
    if spec.kind == AlgorithmKind.PRUNING and params.get("quantization"):
        return run_prune_then_quantize
    return HANDLERS[spec.kind]


def run_job(recipe: Recipe, progress: Progress | None = None) -> JobResult:
    """Load, validate, measure, compress, measure again and export; artifacts go to ``recipe.output_dir``.

    ``progress(fraction, message)`` is called at every step and may raise
    :class:`~.stages.JobCancelled` to stop the job there. Any failure raises
    :class:`~.errors.JobFailed` (a ``ValueError``) whose message is one sentence
    for the user (:func:`~.errors.explain_failure`), with the stage it happened
    in and the original exception as ``__cause__``.
    """
    report = Reporter(progress)
    loaded: list[nn.Module] = []  # the job's model once loaded, to name the layer a failure happened in
    try:
        return _run_job(recipe, report, loaded)
    except JobCancelled as exc:
        _let_go(exc, loaded)
        raise
    except Exception as exc:  # noqa: BLE001 - every failure reaches the user as one sentence
        failed = JobFailed.from_exception(exc, stage=report.stage, model=loaded[0] if loaded else None)
        _let_go(exc, loaded)
        raise failed from exc
    finally:
        # One worker runs job after job: whatever this one held on the GPU goes back before the next starts.
        release_memory()


def _let_go(exc: BaseException, loaded: list[nn.Module]) -> None:
    """Drop what a stopped job still holds: the model, and the locals (model, data, activations, on the GPU
    gigabytes) of the frames its exception's traceback keeps alive for as long as the worker keeps the
    exception. The traceback still prints (file, line, function); only the locals go."""
    loaded.clear()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # a frame still running (run_job's own) keeps its locals
                pass
            else:
                # Python before 3.13 keeps the dict of locals that reading f_locals made (the failure's layer is
                # looked up there), and clear() leaves it; reading it again empties it.
                tb.tb_frame.f_locals  # noqa: B018
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


def _run_job(recipe: Recipe, report: Reporter, loaded: list[nn.Module]) -> JobResult:
    started = time.perf_counter()
    warnings: list[str] = []
    report("load", "loading model")
    device = job_device(recipe.device)
    gpu_memory = GpuMemory(device, stage="load")
    report.on_stage.append(gpu_memory.stage)
    model = recipe.model.load()
    loaded.append(model)
    # Validated on the CPU, where the model was loaded; from here on the model and everything measured on it
    # live on the job's device, and every later step follows the model's device.
    params = validate_recipe(recipe, model, full=True)
    model.to(device)
    spec = get_algorithm(recipe.algorithm)
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="condense-") as tmp:
        # The measurement's first pass over the data runs the model: a failure there is the original's.
        report("measure_original", "measuring the original model")
        ctx = _context(recipe, spec, params, model, out_dir, Path(tmp), report, warnings)
        report.estimate.replan(_plan(ctx))
        ctx.timings["load_s"] = time.perf_counter() - started
        with ctx.timed("measure_before_s"):
            before, layers_before = ctx.measurement.measure(model, ctx.workdir, "original")
        # Pruning changes the model in place: the original is kept to be timed next to the compressed forms.
        original = copy.deepcopy(model) if spec.kind != AlgorithmKind.ANALYSIS else None
        result = handler_for(spec, params)(ctx, model, before, layers_before)
        if ctx.latency.forms:
            _measure_latency(ctx, original, result)
    ctx.timings["total_s"] = time.perf_counter() - started
    report("done", "done")
    gpu = gpu_memory.metrics()
    if gpu is not None:
        result.metrics["gpu"] = gpu
    result.warnings = ctx.warnings
    result.timings = {k: round(v, 3) for k, v in ctx.timings.items()}
    result.log = report.log
    return result


def _measure_latency(ctx: JobContext, original: nn.Module, result: JobResult) -> None:
    """Time every deployable form against the original, interleaved, into ``metrics["latency"]``."""
    ctx.report("measure_latency", "timing the compressed model against the original")
    measurement = ctx.measurement
    with ctx.timed("measure_latency_s"):
        result.metrics["latency"] = measure_deployed_forms(
            ctx.latency, original, ctx.workdir / "original.onnx", measurement.example, measurement.batch_sizes,
            before=result.metrics["before"], min_rounds=measurement.runs, budget_s=measurement.budget_s,
            progress=lambda done, total: ctx.report("measure_latency", "timing the compressed model against the "
                                                    f"original ({done} of {total})", done=done, total=total,
                                                    unit="row"))


def _plan(ctx: JobContext) -> ProgressPlan:
    """The job's progress plan, from its params and data (a GPU job times each form on the GPU too)."""
    recipe = ctx.recipe
    rows = len(recipe.latency_batch_sizes) * (2 if ctx.device.type == "cuda" else 1)
    return ProgressPlan.for_job(ctx.spec, ctx.params, training=ctx.training,
                                train_samples=len(ctx.train_data[0]) if ctx.train_data is not None else 0,
                                speedup=recipe.speedup, latency_rows=rows, latency_budget_s=recipe.latency_budget_s)


def _context(recipe: Recipe, spec: AlgorithmSpec, params: dict[str, Any], model: nn.Module, out_dir: Path,
             workdir: Path, report: Reporter, warnings: list[str]) -> JobContext:
    """The job's data (the test split always, the train split when a step trains or calibrates) and
    measurement."""
    training = TrainingOptions.from_params(params.get("training"))
    dataset = recipe.dataset_source()
    train_data = test_data = None
    if dataset is not None:
        test_data = dataset.load(recipe.input_shape, split="test")
        if any(data_needs(spec, params).values()) or training.finetune_epochs:
            train_data = dataset.load(recipe.input_shape, split="train")
    measurement = Measurement.for_model(model, recipe.input_shape, test_data, batch_sizes=recipe.latency_batch_sizes,
                                        runs=recipe.latency_runs, device=job_device(recipe.device),
                                        budget_s=recipe.latency_budget_s)
    return JobContext(recipe=recipe, spec=spec, params=params, training=training, train_data=train_data,
                      test_data=test_data, measurement=measurement, out_dir=out_dir, workdir=workdir, report=report,
                      warnings=warnings)
