"""Speedup on an imported ONNX model that it cannot resize: the message names the op, the node and the
ONNX node, and the model is left exactly as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from compression_core.dependency import SpeedupError
from compression_core.io import load_model
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup
from compression_core.speedup.replace import MODULE_CUTTERS, register_module_cutter, shallow_copy

pytest.importorskip("onnx2torch")


class _ComputedChannelView(nn.Module):
    """``h.reshape(n, 32 * hh * ww)``: the target is computed at run time from the shape and the literal 32."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.head = nn.Linear(512, 4)

    def forward(self, x):
        h = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        n, _, hh, ww = h.shape
        return self.head(h.reshape(n, 32 * hh * ww))


def _export_and_prune(tmp_path, x: torch.Tensor):
    path = tmp_path / "computed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_ComputedChannelView().eval(), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    gm = load_model(path)
    pruner = L1NormPruner(gm, [{"op_types": ["Conv2d"], "sparse_ratio": 0.3}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return gm, masks


def test_a_channel_count_computed_from_a_literal_follows_the_pruned_channels(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm, masks = _export_and_prune(tmp_path, x)
    ModelSpeedup(gm, x, masks).speedup_model()
    assert gm.conv.out_channels < 32
    with torch.no_grad():
        assert gm(torch.randn(5, 3, 8, 8)).shape == (5, 4)


@pytest.fixture
def linear_cutter_that_cuts_nothing():
    # A cutter that leaves the layer whole: the resized model then fails, as a real cutter bug would.
    register_module_cutter(nn.Linear, lambda module, kept_out, kept_in, mask: shallow_copy(module))
    yield
    MODULE_CUTTERS.pop(nn.Linear, None)


def test_failed_speedup_names_the_onnx_node_and_leaves_the_model_unchanged(tmp_path,
                                                                            linear_cutter_that_cuts_nothing):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm, masks = _export_and_prune(tmp_path, x)
    state = {k: v.clone() for k, v in gm.state_dict().items()}
    with torch.no_grad():
        before = gm(x)
    with pytest.raises(SpeedupError) as info:
        ModelSpeedup(gm, x, masks).speedup_model()
    message = str(info.value)
    assert "internal error" in message and "at node '" in message and "(ONNX " in message
    assert "left unchanged" in message
    after_state = gm.state_dict()
    assert after_state.keys() == state.keys()
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(gm(x), before)
