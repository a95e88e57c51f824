"""GPU paths; skipped where CUDA is absent (run them on a GPU machine: pytest -m gpu tests/compression_core)."""

import onnx
import pytest
import torch

from compression_core.analysis import measure_latency
from compression_core.models import build_architecture
from compression_core.evaluation import predict_logits, tensor_evaluator, train_loop
from compression_core.jobs import JobFailed, ModelSource, Recipe, explain_failure, run_job
from compression_core.jobs.device import job_device
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids
from tests.compression_core.failing_models import reshape_onnx

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_speedup_keeps_a_cuda_model_on_the_gpu_and_its_outputs_shaped():
    model = build_architecture("resnet18").cuda().eval()
    dummy = torch.randn(1, 3, 224, 224, device="cuda")
    config = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, dummy, masks).speedup_model()
    assert model.conv1.out_channels == 32
    assert next(model.parameters()).is_cuda
    assert model(dummy).shape == (1, 1000)


def test_speedup_and_dependency_groups_take_a_cpu_dummy_input_for_a_cuda_model():
    model = build_architecture("digits_cnn").cuda().eval()
    dummy = torch.randn(1, 1, 8, 8)  # as an evaluator's example batch is: on the CPU
    config = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, dummy, masks).speedup_model()
    assert next(model.parameters()).is_cuda
    assert model(dummy.cuda()).shape == (1, 10)


def test_gpu_latency_and_gpu_job_metrics(tmp_path):
    lat = measure_latency(build_architecture("digits_cnn"), torch.randn(1, 1, 8, 8), device="cuda", batch_size=64)
    assert lat["median_ms"] > 0 and lat["device"] == "cuda"
    result = run_job(Recipe(
        model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
        params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, device="gpu",
        output_dir=str(tmp_path), latency_batch_sizes=(1, 64),
    ))
    after = result.metrics["after"]
    assert after["latency_gpu_b1_ms"] > 0 and after["latency_gpu_b64_ms"] > 0


def test_quantization_job_on_a_gpu_worker_adds_half_precision(tmp_path):
    result = run_job(Recipe(
        model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="PostTrainingQuantizer",
        params={}, dataset="digits", device="gpu", output_dir=str(tmp_path), latency_batch_sizes=(1, 64),
    ))
    forms = result.metrics["quantization"]["forms"]
    half = forms["float16_gpu"]
    assert half["latency_gpu_b1_ms"] > 0 and half["latency_gpu_b64_ms"] > 0
    assert half["fidelity"]["cosine_similarity"] > 0.999
    assert abs(half["accuracy"] - forms["float"]["accuracy"]) < 0.01
    assert forms["float"]["latency_gpu_b64_ms"] > 0  # the float32 GPU reference the page compares with


def test_training_and_inference_loops_move_batches_to_the_model_device():
    model = torch.nn.Linear(4, 3).cuda()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    step = lambda batch, trained: torch.nn.functional.cross_entropy(trained(batch[0]), batch[1])  # noqa: E731
    assert train_loop(model, x, y, step, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=8,
                      max_epochs=1) == 3
    logits = predict_logits(model, x)
    assert logits.device.type == "cpu" and logits.shape == (20, 3)
    evaluator = tensor_evaluator((x, None), (x, None), teacher=torch.nn.Linear(4, 3))
    assert evaluator.train(model, max_steps=2) == 2
    assert 0.0 <= evaluator.evaluate(model) <= 1.0 and next(model.parameters()).is_cuda


def _gpu_recipe(tmp_path, **overrides) -> Recipe:
    fields = dict(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                  params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, dataset="digits",
                  device="gpu", output_dir=str(tmp_path), latency_runs=6, latency_budget_s=0.2)
    fields.update(overrides)
    return Recipe(**fields)


def test_a_gpu_job_runs_on_cuda():
    assert job_device("gpu") == torch.device("cuda")


def test_a_data_driven_pruning_job_with_fine_tuning_runs_on_the_gpu_and_records_its_memory(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], "training_steps": 5,
              "training": {"finetune_epochs": 1}}
    result = run_job(_gpu_recipe(tmp_path, algorithm="TaylorFOWeightPruner", params=params))
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert [layer["weight_shape_after"][0] for layer in convs] == [8, 16]
    assert result.metrics["finetune"]["epochs"] == 1
    gpu = result.metrics["gpu"]
    assert gpu["name"] == torch.cuda.get_device_name(0)
    assert 0 < gpu["peak_memory_bytes"] <= gpu["total_memory_bytes"]
    for stage in ("prune", "speedup", "finetune", "measure_latency"):
        assert gpu["peak_memory_bytes_by_stage"][stage] > 0  # the model was on the GPU in every stage
    assert gpu["peak_memory_bytes"] == max(gpu["peak_memory_bytes_by_stage"].values())


def test_a_gpu_job_times_batch_1_and_64_on_the_gpu_synchronised(tmp_path):
    recipe = _gpu_recipe(tmp_path)
    assert recipe.latency_batch_sizes == (1, 64)
    latency = run_job(recipe).metrics["latency"]
    cuda_rows = [row for row in latency["rows"] if row["runtime"] == "pytorch-cuda"]
    assert sorted(row["batch"] for row in cuda_rows) == [1, 64]
    for row in cuda_rows:
        assert row["after"]["median_ms"] > 0 and row["after"]["rounds"] >= 6
    assert latency["machine"]["gpu"] == torch.cuda.get_device_name(0)


def test_a_failed_gpu_job_gives_its_gpu_memory_back(tmp_path):
    path = tmp_path / "fixed_batch.onnx"
    onnx.save(reshape_onnx([1, 144]), path)  # fails on the test split's first batch, inside the model
    # cuDNN sets itself up on a process's first convolution: done before the baseline is read.
    torch.nn.functional.conv2d(torch.zeros(256, 1, 8, 8, device="cuda"), torch.zeros(4, 1, 3, 3, device="cuda"))
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    with pytest.raises(JobFailed) as failed:  # kept, as a worker keeps it while it records the failure
        run_job(_gpu_recipe(tmp_path, model=ModelSource(path=str(path))))
    assert failed.value.sentence
    assert torch.cuda.memory_allocated() == allocated
    # the next job on the same worker runs
    assert run_job(_gpu_recipe(tmp_path / "next", latency_batch_sizes=(1,))).metrics["gpu"]["peak_memory_bytes"] > 0


def test_a_real_cuda_out_of_memory_in_fine_tuning_names_its_batch_size():
    try:
        torch.empty(2**50, device="cuda")  # 4 PiB of floats: more than any GPU has
    except torch.cuda.OutOfMemoryError as exc:
        sentence = explain_failure(exc, stage="finetune")
    assert sentence.startswith("the GPU memory ran out while fine-tuning")
    assert "run the job on the CPU" in sentence and "params.training.batch_size" in sentence


def test_a_quantization_job_offers_bfloat16_where_the_gpu_computes_in_it(tmp_path):
    result = run_job(_gpu_recipe(tmp_path, algorithm="PostTrainingQuantizer", params={}))
    forms = result.metrics["quantization"]["forms"]
    assert "accuracy" in forms["int8_pytorch"]  # int8 still runs, on a CPU copy
    skipped = [s for s in result.metrics["latency"]["skipped"] if s.get("form") == "bfloat16_gpu"]
    if torch.cuda.is_bf16_supported(including_emulation=False):
        bf16 = forms["bfloat16_gpu"]
        assert bf16["latency_gpu_b1_ms"] > 0 and bf16["latency_gpu_b64_ms"] > 0
        assert bf16["fidelity"]["cosine_similarity"] > 0.99
        assert bf16["bytes"] == forms["float16_gpu"]["bytes"]
        assert not skipped
    else:
        assert "bfloat16_gpu" not in forms and "compute capability 8.0" in skipped[0]["reason"]
