"""inspect_model's batch check: exports at a fixed batch 1 with a literal Reshape [1, N] (freed by the importer,
or kept when it cannot follow the batch) vs a dynamic one."""

from __future__ import annotations

import warnings

import onnx
import pytest
import torch
from torch import nn

from compression_core.io import literal_reshapes, read_onnx
from compression_core.jobs import ModelSource, fixed_batch_message, inspect_model
from tests.compression_core.failing_models import reshape_onnx


class _Pinned(nn.Module):
    """``view(1, -1)``: the batch size written into the graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(1, 4 * 8 * 8))


class _Flexible(_Pinned):
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _export(model: nn.Module, path, dynamo: bool, dynamic: bool):
    torch.manual_seed(0)
    options = {"dynamo": dynamo}
    if dynamo:
        pytest.importorskip("onnxscript")
        options["external_data"] = False
        if dynamic:
            options["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        options["input_names"] = ["input"]
        if dynamic:
            options["dynamic_axes"] = {"input": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 1, 8, 8),), str(path), **options)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript_exporter", "dynamo_exporter"])
def test_an_export_at_batch_1_with_a_literal_reshape_runs_at_any_batch_once_imported(tmp_path, dynamo):
    path = _export(_Pinned(), tmp_path / "pinned.onnx", dynamo, dynamic=False)
    literals = literal_reshapes(read_onnx(path))
    assert [r["shape"] for r in literals] == [[1, 256]]
    source = ModelSource(path=str(path))
    report = inspect_model(source)["batch"]
    # The file declares batch 1 and its Reshape pins it; the importer rewrites that Reshape, so jobs can run.
    assert report["declared_batch"] == 1 and report["fixed"] and report["fixed_batch"] is None
    first, second = report["runs"]
    assert first["torch"] == first["onnxruntime"] == "ok" and first["max_abs_diff"] < 1e-4
    assert second["torch"] == "ok" and literals[0]["node"] in second["onnxruntime"] and second["max_abs_diff"] is None
    assert report["literal_reshapes"][0]["pins_batch"] and report["literal_reshapes"][0]["pins_channels"]
    assert fixed_batch_message(report) is None
    advice = report["advice"][0]
    assert "declares batch 1" in advice and "onnxruntime still fails at batch 2" in advice
    assert "imported PyTorch model, which runs batch 2" in advice and "dynamic_axes={'input': {0: 'batch'}}" in advice
    # at batch 3, each sample's output is the one it has alone
    model, x = source.load(), torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        together, alone = model(x), torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert together.shape == (3, 10) and torch.allclose(together, alone, atol=1e-5)


def test_fixed_batch_and_literal_reshape_are_reported(tmp_path):
    # every input dim symbolic: shape inference cannot follow the batch, so the importer keeps the literal
    path = tmp_path / "fixed.onnx"
    onnx.save(reshape_onnx([1, 144]), path)
    with pytest.raises(ValueError, match="input shape is dynamic"):
        inspect_model(ModelSource(path=str(path)))
    report = inspect_model(ModelSource(path=str(path)), input_shape=[1, 8, 8])["batch"]
    assert report["declared_batch"] is None and report["fixed"] and report["fixed_batch"] == 1
    first, second = report["runs"]
    assert first["torch"] == first["onnxruntime"] == "ok" and first["max_abs_diff"] < 1e-4
    assert "invalid for input of size 288" in second["torch"] and "'/Reshape'" in second["onnxruntime"]
    assert second["max_abs_diff"] is None
    (literal,) = report["literal_reshapes"]
    assert literal["shape"] == [1, 144] and literal["pins_batch"] and literal["pins_channels"]
    message = fixed_batch_message(report)
    assert message.startswith("this model runs at batch 1 only (Reshape /Reshape [1, 144] has a literal batch size)")
    assert "dynamic_axes={'input': {0: 'batch'}}" in message and "dynamic_shapes=" in message
    assert report["advice"][0] == message[0].upper() + message[1:]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript_exporter", "dynamo_exporter"])
def test_dynamic_batch_runs_at_two_in_both_runtimes(tmp_path, dynamo):
    path = _export(_Flexible(), tmp_path / "flexible.onnx", dynamo, dynamic=True)
    report = inspect_model(ModelSource(path=str(path)))["batch"]
    assert report["declared_batch"] is None and not report["fixed"] and report["fixed_batch"] is None
    assert [r["batch"] for r in report["runs"]] == [1, 2]
    assert all(r["torch"] == r["onnxruntime"] == "ok" and r["max_abs_diff"] < 1e-4 for r in report["runs"])
    assert not any(r["pins_batch"] for r in report["literal_reshapes"])
    assert fixed_batch_message(report) is None


def test_declared_batch_without_literal_reshape_runs_in_jobs(tmp_path):
    path = _export(_Flexible(), tmp_path / "declared.onnx", dynamo=False, dynamic=False)
    report = inspect_model(ModelSource(path=str(path)))["batch"]
    # onnxruntime is run on a copy whose batch is freed: the graph itself runs batch 2.
    assert report["declared_batch"] == 1 and report["fixed"] and report["fixed_batch"] is None
    assert all(r["torch"] == r["onnxruntime"] == "ok" for r in report["runs"])
    assert "declares batch 1" in report["advice"][0] and "dynamic_axes" in report["advice"][0]


def test_builtin_architecture_is_checked_in_torch_only():
    report = inspect_model(ModelSource(architecture="digits_cnn"))["batch"]
    assert [(r["torch"], r["onnxruntime"]) for r in report["runs"]] == [("ok", None), ("ok", None)]
    assert report["fixed"] is False and report["advice"] == []


class _Folded(nn.Module):
    """``view(1, -1)`` before a reduction: runs at any batch, but answers for one sample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).view(1, -1).mean(dim=1, keepdim=True)


def test_a_model_that_folds_its_batch_away_runs_at_batch_1_only(tmp_path):
    path = _export(_Folded(), tmp_path / "folded.onnx", dynamo=False, dynamic=True)
    report = inspect_model(ModelSource(path=str(path)))["batch"]
    second = report["runs"][1]
    assert second["torch"] == second["onnxruntime"] == "it returns an output of shape [1, 1] for a batch of 2"
    assert report["fixed_batch"] == 1 and [r["shape"] for r in report["literal_reshapes"]] == [[1, -1]]
