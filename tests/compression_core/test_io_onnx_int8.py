"""int8 ONNX (QDQ) through onnxruntime's quantize_static: runs, close to float, ~4x smaller."""

import onnx
import pytest
import torch
import torch.nn as nn

from compression_core.io import export_int8_onnx, onnx_session


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    ).eval()


def test_int8_onnx_runs_in_onnxruntime_close_to_float_and_4x_smaller(tmp_path):
    model = _cnn()
    images = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    result = export_int8_onnx(model, images, tmp_path / "model.int8.onnx", batch_size=8)
    assert result["format"] == "onnx-qdq-int8" and result["quantized_ops"]["QuantizeLinear"] > 0
    assert result["float_bytes"] / result["bytes"] > 3.5
    assert result["fidelity"]["cosine_similarity"] > 0.99
    graph = onnx.load(result["path"]).graph
    weights = [t for t in graph.initializer if len(t.dims) >= 2]  # zero points and biases are 1-D
    assert len(weights) == 4 and all(t.data_type == onnx.TensorProto.INT8 for t in weights)  # 3 Conv + Gemm
    session = onnx_session(result["path"], threads=1)
    fresh = torch.rand(4, 3, 12, 12)
    out = session.run(None, {session.get_inputs()[0].name: fresh.numpy()})[0]
    with torch.no_grad():
        expected = model(fresh)
    assert torch.nn.functional.cosine_similarity(torch.from_numpy(out), expected).mean() > 0.98


def test_int8_onnx_needs_calibration_data(tmp_path):
    with pytest.raises(ValueError, match="no batches"):
        export_int8_onnx(_cnn(), iter([]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="activation_type"):
        export_int8_onnx(_cnn(), torch.rand(2, 3, 8, 8), tmp_path / "m.onnx", activation_type="int4")
