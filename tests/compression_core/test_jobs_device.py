"""Where a job runs: the device picked from the recipe, the CPU-only steps, GPU memory, and what a failed job
lets go of. The CUDA side of each runs in test_gpu.py."""

import gc

import onnx
import pytest
import torch
import torch.nn as nn

from compression_core.jobs import JobFailed, ModelSource, Recipe, explain_failure, run_job
from compression_core.jobs.device import NO_CUDA, GpuMemory, job_device, on_cpu
from compression_core.jobs.stages import Reporter
from tests.compression_core.failing_models import reshape_onnx

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a worker without CUDA")


def _recipe(tmp_path, **overrides) -> Recipe:
    fields = dict(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                  params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
                  output_dir=str(tmp_path / "out"), latency_batch_sizes=(1,), latency_runs=1, latency_budget_s=0.1)
    fields.update(overrides)
    return Recipe(**fields)


def test_a_cpu_job_runs_on_the_cpu_and_an_unknown_device_is_refused():
    assert job_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu': choose cpu or gpu"):
        job_device("tpu")


@no_cuda
def test_a_gpu_job_on_a_worker_without_cuda_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValueError) as info:
        job_device("gpu")
    assert str(info.value) == NO_CUDA
    assert "gpu queue" in NO_CUDA and "choose the CPU" in NO_CUDA
    with pytest.raises(JobFailed) as failed:
        run_job(_recipe(tmp_path, device="gpu"))
    assert failed.value.sentence == NO_CUDA and failed.value.stage == "load"


def test_on_cpu_leaves_a_cpu_model_as_it_is():
    model = nn.Linear(2, 2)
    assert on_cpu(model) is model


def test_the_latency_batch_sizes_default_to_the_device_s(tmp_path):
    assert _recipe(tmp_path, latency_batch_sizes=None).latency_batch_sizes == (1, 16)
    assert _recipe(tmp_path, device="gpu", latency_batch_sizes=None).latency_batch_sizes == (1, 64)
    assert _recipe(tmp_path, device="gpu", latency_batch_sizes=(1, 8)).latency_batch_sizes == (1, 8)
    as_json = _recipe(tmp_path, device="gpu", latency_batch_sizes=None).to_dict()
    assert Recipe.from_dict({**as_json, "latency_batch_sizes": None}).latency_batch_sizes == (1, 64)


def test_the_reporter_tells_its_watchers_each_stage_first():
    seen = []
    report = Reporter(lambda fraction, message: seen.append(message))
    report.on_stage.append(lambda stage: seen.append(stage))
    report("prune", "pruning")
    report("speedup", "speeding up")
    assert seen == ["prune", "pruning", "speedup", "speeding up"]


def test_a_cpu_job_records_no_gpu_memory(tmp_path):
    memory = GpuMemory(torch.device("cpu"), stage="load")
    memory.stage("prune")
    assert memory.metrics() is None
    result = run_job(_recipe(tmp_path))
    assert "gpu" not in result.metrics and result.metrics["after"]["params"] < result.metrics["before"]["params"]


@pytest.mark.parametrize("stage, knob", [
    ("finetune", "params.training.batch_size"),
    ("prune", "params.training.batch_size"),
    ("quantize", "the quantizer (its params.training.batch_size)"),
    ("measure_latency", "latency_batch_sizes"),
    ("speedup", "a smaller input shape"),
])
def test_a_cuda_out_of_memory_names_the_stage_s_batch_size_and_the_cpu(stage, knob):
    sentence = explain_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                               stage=stage)
    assert sentence.startswith("the GPU memory ran out while ")
    assert "run the job on the CPU" in sentence and knob in sentence


def _modules_with_a_parameter_shaped(shape: tuple[int, ...]) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), nn.Module)
               and any(tuple(p.shape) == shape for p in obj.parameters(recurse=False)))


def test_a_failed_job_lets_go_of_its_model_while_its_error_is_kept(tmp_path):
    """A worker keeps a failed job's exception while it records it; the frames in its traceback must not keep
    the job's model (on a GPU worker, its memory) alive for the next job."""
    path = tmp_path / "fixed_batch.onnx"
    onnx.save(reshape_onnx([1, 144]), path)  # fails on the test split's first batch, inside the model
    marker = (10, 144)  # the shape of the model's last weight
    alive_before = _modules_with_a_parameter_shaped(marker)
    with pytest.raises(JobFailed) as info:
        run_job(_recipe(tmp_path, model=ModelSource(path=str(path)), dataset="digits"))
    assert info.value.stage == "measure_original" and info.value.__cause__ is not None
    assert _modules_with_a_parameter_shaped(marker) == alive_before
