"""A failed job's sentence: one per class of failure, each provoked through the code path that really fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.fx
import torch.nn as nn
from onnx import TensorProto, helper

from compression_core.io import ModelFormatError
from compression_core.io.onnx import onnx_session, onnx_to_torch
from compression_core.jobs import JobCancelled, JobFailed, ModelSource, Recipe, explain_failure, run_job
from compression_core.speedup import register_module_cutter
from compression_core.speedup.replace import MODULE_CUTTERS, shallow_copy
from tests.compression_core.failing_models import reshape_onnx, resize_onnx

ROOT = Path(__file__).resolve().parents[2]


def failure(call, *args):
    """The exception ``call(*args)`` raises."""
    with pytest.raises(BaseException) as info:
        call(*args)
    return info.value


def assert_one_plain_sentence(sentence: str) -> None:
    assert "\n" not in sentence and "Traceback" not in sentence
    assert not any(name in sentence for name in ("RuntimeError", "ValueError", "NotImplementedError", "KeyError"))


class FixedBatch(nn.Module):
    """A model written for batch 1: its flatten is a hard-coded view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(144, 10)

    def forward(self, x):
        x = self.conv(x)
        x = x.view(1, 144)
        return self.fc(x)


# -- user errors keep their words --------------------------------------------------------------------------


def test_a_model_format_error_keeps_its_message_on_one_line(tmp_path):
    path = tmp_path / "upload.onnx"
    path.write_bytes(b"not an onnx file at all")
    exc = failure(ModelSource(path=str(path)).load)
    assert isinstance(exc, ModelFormatError)
    sentence = explain_failure(exc, stage="load")
    assert sentence == " ".join(str(exc).split())
    assert_one_plain_sentence(sentence)


def test_a_multi_line_value_error_becomes_one_line():
    sentence = explain_failure(ValueError("config_list[0]: unknown key 'sparsty';\n  did you mean 'sparsity'?"))
    assert sentence == "config_list[0]: unknown key 'sparsty'; did you mean 'sparsity'?"


def test_a_value_error_wrapping_a_layer_failure_gets_the_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))

    def check():
        try:
            model(torch.zeros(1, 144))
        except RuntimeError as exc:
            raise ValueError(f"the model does not run on an input of shape [1, 144]: {exc}") from exc

    sentence = explain_failure(failure(check), stage="load", model=model)
    assert sentence.startswith("the model does not run on an input of shape [1, 144]")
    assert sentence.endswith("(1x144 and 100x10); it happened in layer `1` (Linear).")


# -- shape mismatches inside the model's forward -------------------------------------------------------------


def test_a_hard_coded_batch_of_1_in_a_pytorch_model_says_how_to_flatten():
    model = FixedBatch()
    sentence = explain_failure(failure(model, torch.zeros(4, 1, 8, 8)), stage="measure_original", model=model)
    assert sentence.startswith("the model has a fixed batch size of 1 in the model's forward "
                               "(`FixedBatch.forward` at `x = x.view(1, 144)`)")
    assert "receives 4 samples (576 values) while measuring the original model" in sentence
    assert "x.flatten(1)" in sentence
    assert_one_plain_sentence(sentence)


def test_a_traced_model_failing_in_its_generated_code_names_its_forward():
    model = torch.fx.symbolic_trace(FixedBatch())
    sentence = explain_failure(failure(model, torch.zeros(4, 1, 8, 8)), stage="measure_original", model=model)
    assert sentence.startswith("the model has a fixed batch size of 1 in the model's forward (`FixedBatch.forward`): "
                               "it reshapes to [1, 144] but receives 4 samples")


def test_an_onnx_export_at_batch_1_names_the_node_and_asks_for_a_dynamic_batch():
    model = onnx_to_torch(reshape_onnx([1, 144]))
    model.onnx_nodes = {"Reshape": {"node": "/Reshape", "op": "Reshape"}, "conv": {"node": "/conv/Conv", "op": "Conv"}}
    # the generated forward calls self.Reshape by name: the frame walk must still find the layer
    sentence = explain_failure(failure(model, torch.zeros(10, 1, 8, 8)), stage="measure_original", model=model)
    assert "fixed batch size of 1 in layer `Reshape` (ONNX Reshape node '/Reshape')" in sentence
    assert "receives 10 samples (1440 values)" in sentence
    assert "dynamic_axes" in sentence and "dynamo=True" in sentence
    assert_one_plain_sentence(sentence)


def test_an_onnx_import_without_node_names_still_gets_the_onnx_advice():
    model = onnx_to_torch(reshape_onnx([1, 144]))
    sentence = explain_failure(failure(model, torch.zeros(3, 1, 8, 8)), stage="measure_original", model=model)
    assert "in layer `Reshape`" in sentence and "dynamic_axes" in sentence


def test_a_linear_with_the_wrong_in_features_is_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
    sentence = explain_failure(failure(model, torch.zeros(2, 1, 8, 8)), stage="load", model=model)
    assert sentence == ("layer `2` (Linear) expects 100 input features but receives 144 while loading the model "
                        "and its data: check that the job's input shape matches the model.")


def test_a_channel_mismatch_after_compressing_asks_to_exclude_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    sentence = explain_failure(failure(model, torch.zeros(1, 1, 8, 8)), stage="measure_compressed", model=model)
    assert sentence.startswith("layer `2` (Conv2d) expects 8 input channels but receives 6 while measuring "
                               "the compressed model")
    assert "exclude `2`" in sentence and "exclude_op_names" in sentence


def test_a_norm_layer_left_at_its_old_width_is_a_channel_mismatch():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(16)).eval()
    sentence = explain_failure(failure(model, torch.zeros(1, 1, 8, 8)), stage="finetune", model=model)
    assert sentence.startswith("layer `1` (BatchNorm2d) expects 16 input channels but receives 8 while fine-tuning")
    assert "exclude `1`" in sentence


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return x + self.body(x)


def test_tensors_of_different_sizes_added_together_name_the_block():
    model = nn.Sequential(nn.Conv2d(1, 8, 1), Residual())
    sentence = explain_failure(failure(model, torch.zeros(1, 1, 4, 4)), stage="measure_compressed", model=model)
    assert "layer `1` (Residual) combines tensors of sizes 8 and 4 at dimension 1" in sentence


# -- out of memory -------------------------------------------------------------------------------------------


class Greedy(nn.Module):
    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def forward(self, x):
        raise self.error


@pytest.mark.parametrize("error, device", [
    (MemoryError(), "worker's"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 68719476736 bytes"), "worker's"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "GPU"),
])
def test_out_of_memory_names_the_stage_and_asks_for_a_smaller_batch(error, device):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Greedy(error))
    sentence = explain_failure(failure(model, torch.zeros(1, 1, 8, 8)), stage="finetune", model=model)
    assert sentence.startswith(f"the {device} memory ran out while fine-tuning in layer `1` (Greedy)")
    assert "smaller" in sentence and "batch_size" in sentence
    assert ("on the CPU" in sentence) == (device == "GPU")
    assert_one_plain_sentence(sentence)


class Hoarder(nn.Module):
    """Asks the GPU for far more memory than any has (2**50 floats: 4 PiB)."""

    def forward(self, x):
        return x + torch.empty(2**50, device=x.device)[: x.numel()].view_as(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_cuda_out_of_memory_asks_for_the_cpu():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Hoarder()).cuda()
    exc = failure(model, torch.zeros(1, 1, 8, 8, device="cuda"))
    assert isinstance(exc, torch.cuda.OutOfMemoryError)
    sentence = explain_failure(exc, stage="measure_original", model=model)
    assert sentence.startswith("the GPU memory ran out while measuring the original model in layer `1` (Hoarder)")
    assert "on the CPU" in sentence


def test_a_real_cpu_allocation_failure_asks_for_a_smaller_batch():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Hoarder())
    sentence = explain_failure(failure(model, torch.zeros(1, 1, 8, 8)), stage="finetune", model=model)
    assert sentence.startswith("the worker's memory ran out while fine-tuning in layer `1` (Hoarder)")
    assert "batch_size" in sentence


# -- operators the importer or onnxruntime cannot run ---------------------------------------------------------


def test_an_onnx_op_onnx2torch_cannot_convert_is_named(tmp_path):
    node = helper.make_node("FancyOp", ["input"], ["output"], name="/fancy/FancyOp", domain="com.example")
    graph = helper.make_graph([node], "custom", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(proto, path)
    sentence = explain_failure(failure(ModelSource(path=str(path)).load), stage="load")
    assert "FancyOp" in sentence
    assert_one_plain_sentence(sentence)


def test_an_onnx_op_that_fails_in_pytorch_names_its_node():
    model = onnx_to_torch(resize_onnx())
    model.onnx_nodes = {name: {"node": "/up/Resize", "op": "Resize"}
                        for name, module in model.named_modules() if "Resize" in type(module).__name__}
    exc = failure(model, torch.zeros(4, 1, 8, 8))
    assert isinstance(exc, NotImplementedError)
    sentence = explain_failure(exc, stage="measure_original", model=model)
    assert sentence.startswith("the ONNX Resize node '/up/Resize' (layer `")
    assert "cannot run in PyTorch while measuring the original model" in sentence
    assert "batch" in sentence and "dynamic_axes" in sentence
    assert_one_plain_sentence(sentence)


def test_onnxruntime_refusing_a_batch_at_a_fixed_input_says_so(tmp_path):
    proto = reshape_onnx([1, 144])
    for dim, size in zip(proto.graph.input[0].type.tensor_type.shape.dim, (1, 1, 8, 8)):
        dim.dim_value = size  # declared as an export at batch 1 writes it: onnxruntime refuses at the input
    path = tmp_path / "fixed.onnx"
    onnx.save(proto, path)
    exc = failure(onnx_session(path).run, None, {"input": np.zeros((4, 1, 8, 8), np.float32)})
    sentence = explain_failure(exc, stage="measure_quantized")
    assert sentence.startswith("the ONNX model's input 'input' has a fixed batch size of 1 but receives 4 samples "
                               "while measuring the quantized model")
    assert "dynamic_axes" in sentence
    assert_one_plain_sentence(sentence)


def test_an_onnxruntime_failure_in_a_node_names_the_op_and_node(tmp_path):
    proto = reshape_onnx([1, 144])  # the input is dynamic, the node is not
    path = tmp_path / "fixed_reshape.onnx"
    onnx.save(proto, path)
    exc = failure(onnx_session(path).run, None, {"input": np.zeros((4, 1, 8, 8), np.float32)})
    sentence = explain_failure(exc, stage="measure_quantized")
    assert sentence.startswith("the model has a fixed batch size of 1 in ONNX Reshape node '/Reshape' while "
                               "measuring the quantized model (The input tensor cannot be reshaped")
    assert "onnxruntime_src" not in sentence and "ONNXRuntimeError" not in sentence and "dynamic_axes" in sentence
    assert_one_plain_sentence(sentence)


# -- config keys, cancellation, the rest -------------------------------------------------------------------


def test_a_missing_config_key_is_named():
    def read_ratio(entry):
        return entry["sparse_ratio"]

    sentence = explain_failure(failure(read_ratio, {"op_types": ["Conv2d"]}), stage="prune")
    assert sentence.startswith("the key 'sparse_ratio' was missing while pruning (in `")
    assert "read_ratio" in sentence and "config_list" in sentence
    assert_one_plain_sentence(sentence)


def test_cancelling_is_not_a_failure():
    assert explain_failure(JobCancelled("stop at prune")) == "the job was cancelled; nothing failed"


class Buggy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(x) / self.scale_for(x)

    def scale_for(self, x):
        return {"mean": x.mean()}["median"] if x.dim() > 5 else None.bit_length()


def test_anything_else_is_an_internal_error_with_its_class_and_place():
    model = nn.Sequential(nn.ReLU(), Buggy())
    sentence = explain_failure(failure(model, torch.zeros(1, 4)), stage="speedup", model=model)
    assert sentence.startswith("internal error while removing the pruned channels (AttributeError in layer `1` "
                               "(Buggy)")
    assert sentence.endswith("the model was left unchanged; please report it with the job id.")


def test_an_internal_error_outside_the_model_names_the_function():
    from compression_core.jobs.stages import Reporter

    sentence = explain_failure(failure(Reporter(), "no_such_stage", "message"), stage="prune")
    # a KeyError, but not from a config: it still names the key and the function of ours that raised it
    assert "'no_such_stage'" in sentence and "Reporter.__call__" in sentence


# -- the runner: one exception type, with the sentence and the stage --------------------------------------


def _recipe(tmp_path, model: ModelSource, **overrides) -> Recipe:
    fields = dict(model=model, input_shape=[1, 8, 8], algorithm="L1NormPruner",
                  params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, dataset="digits",
                  output_dir=str(tmp_path / "out"), latency_batch_sizes=(1,), latency_runs=1)
    fields.update(overrides)
    return Recipe(**fields)


def test_a_job_on_an_onnx_export_at_batch_1_fails_with_one_sentence_and_its_stage(tmp_path):
    path = tmp_path / "fixed_batch.onnx"
    onnx.save(reshape_onnx([1, 144]), path)
    with pytest.raises(JobFailed) as info:
        run_job(_recipe(tmp_path, ModelSource(path=str(path))))
    failed = info.value
    # batch 1 passes the full validation; the first batch of the dataset does not
    assert failed.stage == "measure_original"  # the measurement's first pass over the test split
    assert str(failed) == failed.sentence
    assert "fixed batch size of 1 in layer `Reshape`" in failed.sentence and "dynamic_axes" in failed.sentence
    assert isinstance(failed.__cause__, RuntimeError)
    assert isinstance(failed, ValueError)  # callers that catch recipe errors catch every failure


@pytest.fixture
def batchnorm_cutter_that_cuts_nothing():
    register_module_cutter(nn.BatchNorm2d, lambda module, kept_out, kept_in, mask: shallow_copy(module))
    yield
    MODULE_CUTTERS.pop(nn.BatchNorm2d, None)


def test_a_job_whose_speedup_fails_reports_a_sentence_with_the_layer(tmp_path, batchnorm_cutter_that_cuts_nothing):
    recipe = _recipe(tmp_path, ModelSource(architecture="digits_cnn"), dataset=None,
                     params={"config_list": [{"op_names": ["conv1"], "sparse_ratio": 0.5}]})
    with pytest.raises(JobFailed) as info:
        run_job(recipe)
    failed = info.value
    assert failed.stage == "speedup"
    assert "bn1" in failed.sentence
    assert "\n" not in failed.sentence and "Traceback" not in failed.sentence
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_cancelled_job_is_not_wrapped(tmp_path):
    def cancel_at_once(fraction, message):
        raise JobCancelled(message)

    with pytest.raises(JobCancelled):
        run_job(_recipe(tmp_path, ModelSource(architecture="digits_cnn")), progress=cancel_at_once)


def test_the_command_line_prints_the_sentence_and_the_traceback_only_when_asked(tmp_path):
    path = tmp_path / "fixed_batch.onnx"
    onnx.save(reshape_onnx([1, 144]), path)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_recipe(tmp_path, ModelSource(path=str(path))).to_dict()))
    command = [sys.executable, "-m", "compression_core", "run", str(recipe)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model has a fixed batch size of 1 in layer `Reshape`")
    assert "Traceback" not in done.stderr
    done = subprocess.run([*command, "--traceback"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == last
