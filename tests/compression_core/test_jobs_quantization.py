"""Quantization jobs through the pipeline: every form measured, the int8 files written and loadable, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from compression_core.data import DatasetSource
from compression_core.io import onnx_session
from compression_core.jobs import JobCancelled, ModelSource, Recipe, run_job, validate_recipe
from compression_core.quantization import load_packed

L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


def _recipe(tmp_path, algorithm="PostTrainingQuantizer", params=None, **overrides) -> Recipe:
    values = dict(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm=algorithm,
                  params=params or {}, dataset="digits", output_dir=str(tmp_path), latency_runs=2,
                  latency_batch_sizes=(1, 8), latency_budget_s=0.2)
    values.update(overrides)
    return Recipe(**values)


def _artifacts(result):
    return {artifact["name"]: artifact for artifact in result.artifacts}


def test_post_training_job_measures_every_form_and_writes_int8_files(tmp_path):
    result = run_job(_recipe(tmp_path))
    metrics = result.metrics
    forms = metrics["quantization"]["forms"]
    assert set(forms) == {"float", "simulated", "int8_pytorch", "int8_onnx"}
    for name in ("int8_pytorch", "int8_onnx"):
        assert {"accuracy", "bytes", "latency_cpu_b1_ms", "latency_cpu_b8_ms"} <= set(forms[name])
        assert forms[name]["bytes"] < forms["float"]["bytes"]
        assert forms[name]["fidelity"]["cosine_similarity"] > 0.99
    # The simulated model computes what the int8 model computes.
    assert forms["simulated"]["accuracy"] == pytest.approx(forms["int8_pytorch"]["accuracy"], abs=0.01)
    assert metrics["after"]["weights_bytes"] == forms["int8_pytorch"]["bytes"]
    assert metrics["after"]["params"] == metrics["before"]["params"]
    assert set(_artifacts(result)) == {"model.int8.pt", "model.int8.onnx", "calibration.json"}

    layers = metrics["quantization"]["layers"]
    assert [row["name"] for row in layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(row["weight"]["bits"] == 8 and row["input"]["bits"] == 8 for row in layers)
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert len(calibration["conv1"]["weight"]["scale"]) == 16

    # The TorchScript int8 model runs without Condense, as the job measured it.
    int8 = torch.jit.load(str(tmp_path / "model.int8.pt"))
    x = DatasetSource.from_recipe("digits").load([1, 8, 8], split="test")[0][:16]
    assert int8(x).shape == (16, 10)
    session = onnx_session(tmp_path / "model.int8.onnx")
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert out.shape == (16, 10)
    assert np.corrcoef(out.ravel(), int8(x).detach().numpy().ravel())[0, 1] > 0.99


def test_dynamic_post_training_needs_no_data(tmp_path):
    result = run_job(_recipe(tmp_path, params={"mode": "dynamic"}, dataset=None))
    quantization = result.metrics["quantization"]
    assert quantization["mode"] == "dynamic"
    assert [row["name"] for row in quantization["layers"]] == ["fc1", "fc2"]
    assert "simulated" not in quantization["forms"]
    assert quantization["forms"]["int8_onnx"]["label"] == "int8, ONNX dynamic (onnxruntime)"
    assert quantization["forms"]["int8_onnx"]["fidelity"]["cosine_similarity"] > 0.99


def test_qat_job_trains_then_converts(tmp_path):
    progress = []
    result = run_job(_recipe(tmp_path, "QATQuantizer", {"epochs": 1}),
                          progress=lambda f, message: progress.append(message))
    forms = result.metrics["quantization"]["forms"]
    assert {"int8_pytorch", "int8_onnx"} <= set(forms)
    assert result.metrics["quantization"]["mode"] == "qat"
    assert "quantizing with QATQuantizer" in progress
    assert "quantization-aware training: epoch 1 of 1" in progress
    # The training curve: the epoch's mean training loss.
    history = result.metrics["quantization"]["training"]["history"]
    assert [entry["epoch"] for entry in history] == [1] and history[0]["loss"] > 0
    assert result.timings["quantize_s"] > 0


def test_quantization_aware_training_can_be_cancelled_between_epochs(tmp_path):
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if message.startswith("quantization-aware training: epoch 1"):
            raise JobCancelled("cancelled by the user")

    with pytest.raises(JobCancelled):
        run_job(_recipe(tmp_path, "DoReFaQuantizer", {"epochs": 3}), progress=progress)
    assert seen[-1] == "quantization-aware training: epoch 1 of 3"
    assert not (tmp_path / "calibration.json").exists()


BNN_CONFIG = [{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 1},
              {"op_names": ["bn1"], "quant_types": ["output"], "quant_bits": 1}]


@pytest.mark.parametrize("algorithm, params, dataset, bits", [
    ("NaiveQuantizer", {}, None, {"conv1": 8, "fc2": 8}),
    ("DoReFaQuantizer", {"config_list": [{"op_types": ["Conv2d"], "quant_bits": 4}], "epochs": 1}, "digits",
     {"conv1": 4, "conv2": 4}),
    ("BNNQuantizer", {"config_list": BNN_CONFIG, "epochs": 1}, "digits", {"conv1": 1, "conv2": 1, "bn1": 1}),
])
def test_simulated_quantizer_jobs_say_so_and_export_the_grid(tmp_path, algorithm, params, dataset, bits):
    result = run_job(_recipe(tmp_path, algorithm, params, dataset=dataset))
    quantization = result.metrics["quantization"]
    assert quantization["real_int8"] is False
    assert set(quantization["forms"]) == {"float", "simulated"}
    assert any("simulates quantization" in warning for warning in result.warnings)
    artifacts = _artifacts(result)
    assert set(artifacts) == {"model.simulated.onnx", "model.simulated.safetensors", "model.packed.safetensors",
                              "calibration.json"}
    # The packed file is the smaller one, and gives back the simulated model's weights.
    packed = artifacts["model.packed.safetensors"]["bytes"]
    assert quantization["forms"]["simulated"]["bytes"] == packed == result.metrics["after"]["weights_bytes"]
    assert packed < quantization["forms"]["float"]["bytes"]
    from safetensors.torch import load_file

    simulated = load_file(tmp_path / "model.simulated.safetensors")
    unpacked = load_packed(tmp_path / "model.packed.safetensors")
    assert sorted(unpacked) == sorted(simulated)
    assert all(torch.allclose(unpacked[k], simulated[k], atol=1e-6) for k in simulated)
    rows = {row["name"]: row for row in quantization["layers"]}
    assert {name: (row.get("weight") or row.get("output"))["bits"] for name, row in rows.items()
            if name in bits} == bits
    # Simulated quantization computes in float32: it is timed, but never given a speedup.
    timings = result.metrics["latency"]["rows"]
    assert {(row["runtime"], row["batch"]) for row in timings} == {(r, b) for r in ("pytorch-cpu", "onnxruntime-cpu")
                                                                  for b in (1, 8)}
    assert all(row["form"] == "simulated" and row["ratio"] is None and row["verdict"] == "simulated"
               and "computes in float32" in row["notes"][0] for row in timings)
    assert result.metrics["after"]["latency_cpu_b1_ms"] > 0
    if dataset is None:
        assert "accuracy" not in quantization["forms"]["simulated"]
        return
    # The exported ONNX computes what the simulated model computed (its accuracy, on the same test split).
    session = onnx_session(tmp_path / "model.simulated.onnx")
    x, y = DatasetSource.from_recipe("digits").load([1, 8, 8], split="test")
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    accuracy = float((torch.from_numpy(out).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(quantization["forms"]["simulated"]["accuracy"], abs=0.005)


def test_prune_finetune_speedup_then_quantize(tmp_path):
    params = {"config_list": L1_HALF, "training": {"finetune_epochs": 1},
              "quantization": {"algorithm": "PostTrainingQuantizer", "params": {}}}
    result = run_job(_recipe(tmp_path, "L1NormPruner", params))
    metrics = result.metrics
    assert metrics["pruned"]["params"] < metrics["before"]["params"]
    assert metrics["after"]["params"] == metrics["pruned"]["params"]
    # The quantizer starts from the pruned float model.
    assert metrics["quantization"]["forms"]["float"]["bytes"] == metrics["pruned"]["weights_bytes"]
    assert metrics["after"]["weights_bytes"] < metrics["pruned"]["weights_bytes"]
    assert {"model.onnx", "model.safetensors", "model.plan.json", "model.int8.pt", "model.int8.onnx",
            "calibration.json"} <= set(_artifacts(result))
    # Each deliverable against the original on its runtime: pruned float and int8, PyTorch and onnxruntime.
    timed = {(row["runtime"], row["form"]) for row in metrics["latency"]["rows"]}
    assert timed == {("pytorch-cpu", "compressed"), ("onnxruntime-cpu", "compressed"), ("pytorch-cpu", "int8_pytorch"),
                     ("onnxruntime-cpu", "int8_onnx")}
    headline = [row for row in metrics["latency"]["rows"] if row["headline"]]
    assert {row["form"] for row in headline} == {"int8_pytorch"}
    assert metrics["after"]["latency_cpu_b1_ms"] == next(r for r in headline if r["batch"] == 1)["after"]["median_ms"]
    assert metrics["quantization"]["forms"]["float"]["latency_cpu_b1_ms"] == metrics["pruned"]["latency_cpu_b1_ms"]
    conv1 = next(row for row in metrics["quantization"]["layers"] if row["name"] == "conv1")
    assert len(json.loads((tmp_path / "calibration.json").read_text())["conv1"]["weight"]["scale"]) == 8
    assert conv1["weight"]["bits"] == 8


@pytest.mark.parametrize("algorithm, params, dataset, message", [
    ("PostTrainingQuantizer", {}, None, "PostTrainingQuantizer needs data"),
    ("QATQuantizer", {}, None, "QATQuantizer needs data"),
    ("PostTrainingQuantizer", {"config_list": [{"op_types": ["Conv2d"], "quant_bits": 4}]}, "digits",
     "quant_bits"),
    ("PostTrainingQuantizer", {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, "digits",
     "'sparse_ratio' is a pruning key"),
    ("PostTrainingQuantizer", {"config_list": [{"op_types": ["LSTM"]}]}, "digits", "selects no layer"),
    ("QATQuantizer", {"training": {"finetune_epochs": 2}}, "digits", "its own 'epochs'"),
    ("PostTrainingQuantizer", {"epochs": 2}, "digits", "unknown key 'epochs'"),
    ("L1NormPruner", {"config_list": L1_HALF, "quantization": {"algorithm": "L2NormPruner"}}, None,
     "choose a quantizer"),
    ("L1NormPruner", {"config_list": L1_HALF, "quantization": {"algorithm": "PostTrainingQuantizer"}}, None,
     "PostTrainingQuantizer needs data"),
    ("L1NormPruner", {"config_list": L1_HALF, "quantization": {"algorithm": "PostTrainingQuantizer",
                                                               "params": {"mode": "fast"}}}, None,
     "params.quantization: params.mode must be one of static, dynamic"),
])
def test_bad_quantization_jobs_fail_before_any_work(tmp_path, algorithm, params, dataset, message):
    with pytest.raises(ValueError, match=message):
        validate_recipe(_recipe(tmp_path, algorithm, params, dataset=dataset))


class _WithGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.norm(self.conv(x)), 1))


def test_a_layer_without_int8_kernel_is_named_unless_float_is_allowed(tmp_path):
    config = [{"op_types": ["Conv2d", "GroupNorm", "Linear"]}]
    recipe = _recipe(tmp_path, params={"config_list": config})
    with pytest.raises(ValueError, match="'norm' \\(GroupNorm\\).*allow_float"):
        validate_recipe(recipe, _WithGroupNorm())
    params = validate_recipe(_recipe(tmp_path, params={"config_list": config, "allow_float": True}),
                             _WithGroupNorm())
    assert params["allow_float"] is True


def test_allow_float_job_keeps_the_layer_in_float_and_lists_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ModelSource, "load", lambda self: _WithGroupNorm().eval())
    params = {"config_list": [{"op_types": ["Conv2d", "GroupNorm", "Linear"]}], "allow_float": True}
    result = run_job(_recipe(tmp_path, params=params))
    quantization = result.metrics["quantization"]
    assert set(quantization["kept_float"]) == {"norm"}
    rows = {row["name"]: row for row in quantization["layers"]}
    assert rows["norm"]["type"] == "float32" and "GroupNorm" in rows["norm"]["kept_float"]
    assert rows["conv"]["weight"]["bits"] == 8 and rows["head"]["weight"]["bits"] == 8
    assert quantization["forms"]["int8_pytorch"]["fidelity"]["cosine_similarity"] > 0.99
    assert torch.jit.load(str(tmp_path / "model.int8.pt"))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
