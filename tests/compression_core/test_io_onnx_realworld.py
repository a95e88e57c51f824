"""ONNX files as real exporters write them: literal batch/channel shapes, folded BatchNorm, BatchNorm1d,
recurrent layers, and the speedup that follows (import, onnxruntime check, L1 30% with dependency groups,
speedup, export, onnxruntime on another batch)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.compression_core.onnx_realworld_helpers import export, round_trip

pytest.importorskip("onnx2torch")
EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_resnet18_exported_at_batch_1_runs_any_batch_and_prunes(dynamo, tmp_path):
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    path = export(model, tmp_path / "r18.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(5, 3, 64, 64), tmp_path=tmp_path)
    assert out.shape == (5, 10)
    assert after < 0.8 * before


class _ChannelView(nn.Module):
    """``x.view(n, 32, -1)`` at batch 1: the exporters write the batch and the channel count as literals."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(h.view(1, 32, 64).mean(dim=2))


class _DenseReshape(nn.Module):
    """A dense layer of 200 units reshaped to the literal [1, 200] it already has (as Keras exports write)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 200), nn.Linear(200, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)).reshape(1, 200))


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_literal_channel_count_follows_the_pruned_channels(dynamo, tmp_path):
    x = torch.randn(1, 3, 8, 8)
    path = export(_ChannelView().eval(), tmp_path / "view.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(3, 3, 8, 8), tmp_path=tmp_path)
    assert out.shape == (3, 4)
    convs = [m for m in gm.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [23]  # 30% of 32 went, and the reshape followed
    assert after < before


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_reshape_to_the_literal_shape_a_pruned_dense_layer_had(dynamo, tmp_path):
    x = torch.randn(1, 16)
    path = export(_DenseReshape().eval(), tmp_path / "dense.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(4, 16), op_types=("Linear",), tmp_path=tmp_path)
    assert out.shape == (4, 10)
    assert sorted(m.out_features for m in gm.modules() if isinstance(m, nn.Linear)) == [10, 140]
