"""GPU paths; skipped where CUDA is absent (run them on a GPU machine)."""

import pytest
import torch

from compression_core.analysis import measure_latency
from compression_core.models import build_architecture
from compression_core.evaluation import predict_logits, tensor_evaluator, train_loop
from compression_core.jobs import ModelSource, Recipe, run_job
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

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
