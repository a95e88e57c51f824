import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compression_core.models import build_architecture
from compression_core.io import load_model
from compression_core.jobs import JobCancelled, ModelSource, Recipe, run_job, validate_recipe
from compression_core.speedup import apply_pruning_plan

ROOT = Path(__file__).resolve().parents[2]
L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def _recipe(tmp_path, **overrides) -> Recipe:
    values = dict(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                  params=L1_HALF, dataset="digits", output_dir=str(tmp_path), latency_runs=3, latency_budget_s=0.2)
    values.update(overrides)
    return Recipe(**values)


def test_l1_job_measures_prunes_and_exports(tmp_path):
    progress = []
    result = run_job(_recipe(tmp_path), progress=lambda f, msg: progress.append((f, msg)))
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["params"] < before["params"] and after["flops"] < before["flops"]
    assert after["onnx_bytes"] < before["onnx_bytes"]
    assert {"latency_cpu_b1_ms", "latency_cpu_b16_ms", "accuracy"} <= set(after)
    assert [f for f, _ in progress] == sorted(f for f, _ in progress) and progress[-1] == (1.0, "done")
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert [layer["weight_shape_after"][0] for layer in convs] == [8, 16]

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((3, 1, 8, 8), np.float32)})
    assert out.shape == (3, 10)
    # The plan rebuilds the pruned shapes on a fresh instance of the user's class.
    plan = json.loads((tmp_path / "model.plan.json").read_text())
    fresh = apply_pruning_plan(build_architecture("digits_cnn"), plan)
    from safetensors.torch import load_file

    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    reloaded = load_model(tmp_path / "model.safetensors", architecture="digits_cnn")
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(fresh.eval()(x), reloaded(x), atol=1e-6)


def test_pruning_job_times_each_runtime_against_the_original_and_records_the_machine(tmp_path):
    result = run_job(_recipe(tmp_path, dataset=None))
    latency = result.metrics["latency"]
    rows = {(row["runtime"], row["batch"]): row for row in latency["rows"]}
    assert set(rows) == {("pytorch-cpu", 1), ("pytorch-cpu", 16), ("onnxruntime-cpu", 1), ("onnxruntime-cpu", 16)}
    for row in rows.values():
        assert row["form"] == "compressed" and row["before"]["rounds"] == row["after"]["rounds"] >= 6
        assert row["before"]["p10_ms"] <= row["before"]["median_ms"] <= row["before"]["p90_ms"]
        ratio = row["ratio"]
        assert 0 < ratio["low"] <= ratio["value"] <= ratio["high"]
        assert row["verdict"] in {"faster", "no-change", "noisy", "implausible", "regression"}
    machine = latency["machine"]
    assert machine["threads"] >= 1 and machine["available_cores"] <= machine["logical_cores"]
    assert machine["cpu"] and machine["torch"] == torch.__version__ and machine["onnxruntime"] == ort.__version__
    # The old keys hold the paired medians of the deliverable (PyTorch eager): existing readers keep working.
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["latency_cpu_b16_ms"] == rows[("pytorch-cpu", 16)]["after"]["median_ms"]
    assert before["latency_cpu_b1_ms"] == rows[("pytorch-cpu", 1)]["before"]["median_ms"]
    assert [row["headline"] for row in latency["rows"]].count(True) == 2
    assert set(latency["fastest"]) == {"1", "16"}
    assert latency["fastest"]["1"]["median_ms"] == min(r["after"]["median_ms"] for (_, b), r in rows.items() if b == 1)
    if not torch.cuda.is_available():
        assert {skip["runtime"] for skip in latency["skipped"]} == {"pytorch-cuda", "onnxruntime-cuda"}
    assert "measure_latency_s" in result.timings


def test_fine_grained_pruning_keeps_shapes_and_says_so(tmp_path):
    result = run_job(_recipe(tmp_path, algorithm="LevelPruner", dataset=None))
    assert result.metrics["after"]["params"] == result.metrics["before"]["params"]
    assert any("speedup removed no channel" in w for w in result.warnings)
    assert all(layer["sparsity"] == pytest.approx(0.5, abs=0.01) for layer in result.layers
               if layer["type"] == "Conv2d")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "digits", "input_shape": [1, 28, 28], "model": ModelSource(architecture="mnist_cnn")},
         "dataset 'digits' gives inputs of shape [1, 8, 8]"),
        ({"params": {"config_list": [{"op_names": ["nope"], "sparsity": 0.5}]}}, "'nope' matches no layer"),
        ({"algorithm": "NoSuchPruner"}, "unknown algorithm"),
    ],
)
def test_recipe_errors_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError) as info:
        validate_recipe(_recipe(tmp_path, **overrides))
    assert message in str(info.value)


def test_progress_callback_can_cancel(tmp_path):
    def cancel_when_pruning(fraction, message):
        if message.startswith("pruning"):
            raise JobCancelled(message)

    with pytest.raises(JobCancelled):
        run_job(_recipe(tmp_path), progress=cancel_when_pruning)
    assert not (tmp_path / "model.onnx").exists()


def test_command_line_runs_a_recipe(tmp_path):
    recipe = _recipe(tmp_path / "out").to_dict()
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    done = subprocess.run([sys.executable, "-m", "compression_core", "run", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["after"]["params"] > 0
    assert (tmp_path / "out" / "model.onnx").exists()

    recipe["params"] = {"config_list": [{"op_types": ["Conv2d"], "sparsity": 3}]}
    path.write_text(json.dumps(recipe))
    done = subprocess.run([sys.executable, "-m", "compression_core", "run", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "error:" in done.stderr and "sparsity" in done.stderr


def test_output_layer_is_left_out_and_the_user_is_told(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}]}
    result = run_job(_recipe(tmp_path, params=params, dataset=None))
    output_layer = [layer for layer in result.layers if layer["type"] == "Linear"][-1]
    assert any("not pruned" in w and output_layer["name"] in w for w in result.warnings)
    assert output_layer["sparsity"] == 0.0
    assert output_layer["weight_shape_after"][0] == 10


def test_selecting_only_unremovable_channels_is_a_clear_error(tmp_path):
    output_layer = [n for n, m in build_architecture("digits_cnn").named_modules()
                    if isinstance(m, torch.nn.Linear)][-1]
    params = {"config_list": [{"op_names": [output_layer], "sparse_ratio": 0.5}]}
    with pytest.raises(ValueError, match="none of the selected layers has channels that speedup could remove"):
        run_job(_recipe(tmp_path, params=params, dataset=None))


def test_data_dependent_pruner_runs_on_the_dataset(tmp_path):
    params = {**L1_HALF, "training_steps": 5}
    result = run_job(_recipe(tmp_path, algorithm="TaylorFOWeightPruner", params=params))
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert [layer["weight_shape_after"][0] for layer in convs] == [8, 16]
    assert "finetune" not in result.metrics


def test_fine_tuning_recovers_accuracy_and_is_reported(tmp_path):
    from compression_core.evaluation import train_digits_cnn
    from safetensors.torch import save_file

    weights = tmp_path / "trained.safetensors"
    save_file(train_digits_cnn(epochs=10).state_dict(), str(weights))
    params = {**L1_HALF, "training": {"finetune_epochs": 3, "distillation": True, "lr": 3e-3}}
    source = ModelSource(path=str(weights), architecture="digits_cnn")
    progress = []
    result = run_job(_recipe(tmp_path, model=source, params=params),
                          progress=lambda f, msg: progress.append(msg))
    finetune = result.metrics["finetune"]
    assert finetune["epochs"] == 3 and finetune["distillation"] is True and finetune["metric"] == "accuracy"
    assert len(finetune["per_epoch"]) == 3
    # The training curve: each epoch's mean training loss beside its metric.
    assert [entry["epoch"] for entry in finetune["history"]] == [1, 2, 3]
    assert [entry["metric"] for entry in finetune["history"]] == finetune["per_epoch"]
    assert all(isinstance(entry["loss"], float) and entry["loss"] > 0 for entry in finetune["history"])
    assert finetune["finetuned"] > finetune["pruned"] + 0.1
    assert result.metrics["after"]["accuracy"] == pytest.approx(finetune["finetuned"])
    assert result.metrics["after"]["accuracy"] > 0.9
    assert "fine-tuning: epoch 3 of 3" in progress


def test_fine_tuning_without_speedup_keeps_the_masks(tmp_path):
    params = {**L1_HALF, "training": {"finetune_epochs": 1}}
    result = run_job(_recipe(tmp_path, params=params, speedup=False))
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert all(layer["sparsity"] == pytest.approx(0.5) for layer in convs)


def test_unlabelled_data_distils_from_the_original(tmp_path):
    x = np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    params = {**L1_HALF, "training": {"finetune_epochs": 2}}
    result = run_job(_recipe(tmp_path, params=params, dataset={"path": str(tmp_path / "unlabelled.npz")}))
    finetune = result.metrics["finetune"]
    assert finetune["metric"] == "agreement with the original" and finetune["distillation"] is True
    assert "accuracy" not in result.metrics["after"]


def test_slim_prunes_batch_norm_channels_with_their_convolutions(tmp_path):
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "mnist_like.npz", x=x, y=np.arange(64) % 10)
    params = {"config_list": [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}], "training_steps": 3}
    result = run_job(_recipe(tmp_path, model=ModelSource(architecture="mnist_cnn"), input_shape=[1, 28, 28],
                                  algorithm="SlimPruner", params=params,
                                  dataset={"path": str(tmp_path / "mnist_like.npz")}))
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["flops"] < before["flops"]
    norms = [layer for layer in result.layers if layer["type"] == "BatchNorm2d"]
    assert sum(layer["weight_shape_after"][0] for layer in norms) == sum(
        layer["weight_shape_before"][0] for layer in norms) // 2


@pytest.mark.parametrize("overrides, message", [
    ({"algorithm": "ActivationAPoZRankPruner", "dataset": None}, "ActivationAPoZRankPruner needs data"),
    ({"params": {**L1_HALF, "training": {"finetune_epochs": 2}}, "dataset": None}, "fine-tuning needs data"),
    ({"algorithm": "SlimPruner"}, "selects no layer SlimPruner can prune"),
    ({"algorithm": "NetAdaptPruner", "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.99}]}},
     "cannot be reached"),
])
def test_training_errors_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_recipe(_recipe(tmp_path, **overrides))


def test_sensitivity_analysis_job_draws_curves_and_writes_csv(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}], "sparsities": [0.25, 0.75]}  # ratio unused
    progress = []
    result = run_job(_recipe(tmp_path, algorithm="SensitivityAnalysis", params=params),
                          progress=lambda f, msg: progress.append(msg))
    sensitivity = result.metrics["sensitivity"]
    assert sensitivity["sparsities"] == [0.25, 0.75] and sensitivity["metric"] == "accuracy"
    assert set(sensitivity["sensitivity"]) == {"conv1", "conv2"}
    assert all(len(curve) == 2 for curve in sensitivity["sensitivity"].values())
    assert "after" not in result.metrics and [a["name"] for a in result.artifacts] == ["sensitivity.csv"]
    csv = (tmp_path / "sensitivity.csv").read_text().splitlines()
    assert csv[0] == "layername,0.25,0.75" and len(csv) == 3
    assert any(msg.startswith("sensitivity: conv2 at 75%") for msg in progress)


def test_auto_target_job_reports_target_and_floor(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["fc2"], "sparsity": 0.5}],
              "target": "flops", "target_ratio": 0.5, "accuracy_floor": 0.99, "sparsities": [0.25, 0.5, 0.75]}
    result = run_job(_recipe(tmp_path, algorithm="AutoTargetPruner", params=params))
    auto = result.metrics["auto"]
    before, after = result.metrics["before"], result.metrics["after"]
    assert auto["target_met"] is True and after["flops"] <= 0.5 * before["flops"]
    assert auto["reached_ratio"] == pytest.approx(after["flops"] / before["flops"])
    # a random-init model cannot hold a 99% floor: the job says so instead of pretending
    assert auto["accuracy_floor_met"] is False
    assert any("accuracy floor was not met" in w for w in result.warnings)
    assert "sensitivity.csv" in [a["name"] for a in result.artifacts]


def test_unreachable_auto_target_fails_with_the_best_reachable_value(tmp_path):
    params = {"config_list": [{"op_names": ["fc1"], "sparsity": 0.5}], "target": "flops", "target_ratio": 0.1}
    with pytest.raises(ValueError, match=r"cannot be reached .* keeps \d"):
        run_job(_recipe(tmp_path, algorithm="AutoTargetPruner", params=params))


class _BrokenForward(torch.nn.Module):
    """Layers a config list can select, and a forward that fails on any input."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)

    def forward(self, x):
        raise RuntimeError("this model needs a second input")


def test_the_web_check_runs_no_model_and_the_worker_check_does(tmp_path):
    recipe = _recipe(tmp_path, dataset=None)
    params = validate_recipe(recipe, _BrokenForward())
    assert params["config_list"] == L1_HALF["config_list"]
    with pytest.raises(ValueError, match=r"does not run on an input of shape \[1, 1, 8, 8\]: this model needs"):
        validate_recipe(recipe, _BrokenForward(), full=True)


def test_the_result_is_typed_and_serialises_as_before(tmp_path):
    result = run_job(_recipe(tmp_path, dataset=None, latency_runs=1, latency_batch_sizes=(1,)))
    as_dict = result.to_dict()
    assert list(as_dict) == ["metrics", "layers", "artifacts", "warnings", "timings", "log"]
    assert [a["name"] for a in result.artifacts] == ["model.onnx", "model.safetensors", "model.plan.json"]
    assert all(a["bytes"] == (tmp_path / a["name"]).stat().st_size for a in result.artifacts)
    assert {"load_s", "measure_before_s", "compress_s", "speedup_s", "measure_after_s", "total_s"} <= set(
        result.timings)
    json.dumps(as_dict)
