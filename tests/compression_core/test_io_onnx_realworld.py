"""ONNX files as real exporters write them: literal batch/channel shapes, folded BatchNorm, BatchNorm1d,
recurrent layers, and the speedup that follows (import, onnxruntime check, L1 30% with dependency groups,
speedup, export, onnxruntime on another batch)."""

from __future__ import annotations

import numpy as np
import onnx
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


class _Dense1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 4)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


class _Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.conv2 = nn.Conv1d(4, 32, 3), nn.BatchNorm1d(32), nn.Conv1d(32, 8, 3)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv(x))))


def _trained_statistics(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, *sample.shape[1:]) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("build, shape, ops", [
    (_Dense1d, (2, 16), ("Linear",)), (_Conv1dNet, (2, 4, 20), ("Conv1d",)),
], ids=["NC", "NCL"])
def test_batch_norm_over_2d_and_3d_inputs_prunes_with_its_layer(dynamo, build, shape, ops, tmp_path):
    x = torch.randn(*shape)
    model = _trained_statistics(build(), x)
    path = export(model, tmp_path / "bn.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(5, *shape[1:]), op_types=ops, tmp_path=tmp_path)
    assert out.shape[0] == 5 and after < before
    for bn in (m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        assert bn.num_features == 23


def test_batch_norm_whose_input_rank_is_unknown_converts_and_prunes(tmp_path):
    """paddle2onnx's OCR recogniser: the BatchNormalization input has no inferred shape."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape, positive=False):
        values = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
        return numpy_helper.from_array(values.astype(np.float32), name)

    graph = helper.make_graph(
        [
            # Reshape(x, Shape(x)[0:len]): ONNX shape inference cannot tell the rank of what follows
            helper.make_node("Shape", ["x"], ["sx"], name="shape"),
            helper.make_node("Shape", ["sx"], ["rank"], name="rank"),
            helper.make_node("Slice", ["sx", "zero", "rank"], ["same"], name="slice"),
            helper.make_node("Reshape", ["x", "same"], ["xr"], name="reshape"),
            helper.make_node("Conv", ["xr", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c1", "s", "o", "m", "v"], ["n1"], name="bn1"),
            helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", kernel_shape=[1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"), init("w1", 16, 3, 3, 3), init("b1", 16), init("s", 16), init("o", 16), init("m", 16),
         init("v", 16, positive=True), init("w2", 4, 16, 1, 1), init("b2", 4)],
    )
    path = tmp_path / "bn_any_rank.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = torch.randn(1, 3, 8, 8)
    gm, before, after, out = round_trip(path, x, torch.randn(2, 3, 8, 8), op_types=("Conv2d",), tmp_path=tmp_path)
    assert out.shape == (2, 4, 8, 8)
    (bn,) = [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bn.num_features == 12 and after < before


class _AudioRecurrent(nn.Module):
    """A Conv1d front-end on raw audio, then an LSTM or a GRU over time (silero-vad's shape)."""

    def __init__(self, cell: type):
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(1, 32, 8, stride=4), nn.ReLU(), nn.Conv1d(32, 16, 3), nn.ReLU())
        self.rnn = cell(16, 24, batch_first=True)
        self.head = nn.Linear(24, 2)

    def forward(self, x):
        features = self.front(x).transpose(1, 2)
        out, _ = self.rnn(features)
        return self.head(out[:, -1])


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=["LSTM", "GRU"])
def test_recurrent_audio_model_keeps_its_hidden_size_and_prunes_the_front_end(dynamo, cell, tmp_path):
    x = torch.randn(1, 1, 256)
    path = export(_AudioRecurrent(cell).eval(), tmp_path / "audio.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(3, 1, 256), op_types=("Conv1d",), tmp_path=tmp_path)
    assert out.shape == (3, 2)
    (rnn,) = [m for m in gm.modules() if isinstance(m, cell)]
    assert (rnn.input_size, rnn.hidden_size) == (16, 24)
    convs = [m for m in gm.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [23, 16]  # the layer feeding the recurrent one keeps its channels
    assert after < before


class _CheckedWidth(nn.Module):
    """A scripted shape check: exported as an ``If`` on ``Shape(x)[1]``, decided by the declared input shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(16, 32, 3)
        self.out = nn.Conv1d(32, 4, 1)

    def forward(self, x):
        if x.size(1) != 16:
            x = x[:, :16]
        return self.out(torch.relu(self.conv(x)))


def test_if_decided_by_the_declared_input_shape_is_folded_with_a_warning(tmp_path):
    import onnx

    x = torch.randn(1, 16, 40)
    path = export(torch.jit.script(_CheckedWidth().eval()), tmp_path / "if.onnx", x, dynamo=False,
                  input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    assert any(n.op_type == "If" for n in onnx.load(str(path)).graph.node)
    with pytest.warns(UserWarning, match="always takes its else_branch"):
        gm, before, after, out = round_trip(path, x, torch.randn(3, 16, 40), op_types=("Conv1d",), tmp_path=tmp_path)
    assert out.shape == (3, 4, 38) and after < before


class _BatchReadView(nn.Module):
    """``x.view(x.size(0), 512)`` with a dynamic batch: ``Reshape(x, Concat(Shape(x)[0:1], [512]))``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.head = nn.Linear(512, 4)

    def forward(self, x):
        h = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.head(h.view(h.size(0), 512))


def test_reshape_to_the_batch_read_at_run_time_and_a_literal_channel_count(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    path = export(_BatchReadView().eval(), tmp_path / "view.onnx", x, dynamo=False,
                  input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    gm, before, after, out = round_trip(path, x, torch.randn(3, 3, 8, 8), op_types=("Conv2d",), tmp_path=tmp_path)
    assert out.shape == (3, 4)
    assert [m.out_channels for m in gm.modules() if isinstance(m, nn.Conv2d)] == [23]
    assert [m.in_features for m in gm.modules() if isinstance(m, nn.Linear)] == [23 * 16]


def test_imported_layers_name_their_onnx_node_in_the_layer_table(tmp_path):
    from compression_core.analysis import count_flops_params
    from compression_core.io import load_model

    x = torch.randn(1, 3, 64, 64)
    path = export(torchvision.models.resnet18(num_classes=10).eval(), tmp_path / "r18.onnx", x, dynamo=False)
    gm = load_model(path)
    assert gm.onnx_nodes["layer1_0_conv1"] == {"node": "/layer1/layer1.0/conv1/Conv", "op": "Conv"}
    assert gm.onnx_nodes["fc"] == {"node": "/fc/Gemm", "op": "Gemm"}
    assert all(set(entry) == {"node", "op"} for entry in gm.onnx_nodes.values())
    _, _, layers = count_flops_params(gm, x)
    rows = {row["name"]: row for row in layers}
    assert rows["layer1_0_conv1"]["onnx"] == "ONNX Conv '/layer1/layer1.0/conv1/Conv'"
    assert len(layers) == 22 and all(row.get("onnx", "").startswith("ONNX ") for row in layers)  # 20 convs, pool, fc


class _Neck(nn.Module):
    """A YOLOv8-style neck at toy size: a C2f split with a size list, an upsample, concatenations."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.c2f = nn.Conv2d(32, 32, 1)
        self.block = nn.Conv2d(16, 16, 3, padding=1)
        self.merge = nn.Conv2d(48, 32, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(48, 8, 1)

    def forward(self, x):
        p3 = torch.relu(self.stem(x))
        p4 = torch.relu(self.c2f(torch.relu(self.down(p3))))
        a, b = torch.split(p4, [16, 16], dim=1)
        p4 = torch.relu(self.merge(torch.cat([a, b, torch.relu(self.block(b))], dim=1)))
        return self.head(torch.cat([self.up(p4), p3], dim=1))


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_detector_neck_with_split_sizes_and_upsample_prunes(dynamo, tmp_path):
    x = torch.randn(1, 3, 32, 32)
    path = export(_Neck().eval(), tmp_path / "neck.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(2, 3, 32, 32), op_types=("Conv2d",), tmp_path=tmp_path)
    assert out.shape == (2, 8, 16, 16) and after < before
    convs = {name: m.out_channels for name, m in gm.named_modules() if isinstance(m, nn.Conv2d)}
    (split,) = [m for m in gm.modules() if type(m).__name__ == "OnnxStaticSplit"]
    assert convs["c2f"] < 32 and sum(split.sizes) == convs["c2f"]  # the split sizes followed the pruned channels


class _AudioFrontEnd(nn.Module):
    """openWakeWord's shapes: a reflect-padded 2-D signal, a floor clipped at ``max - 8``, ``Max`` as a leaky ReLU."""

    def __init__(self):
        super().__init__()
        self.stft = nn.Conv1d(1, 32, 16, stride=8)
        self.conv = nn.Conv1d(32, 16, 3)
        self.out = nn.Conv1d(16, 4, 1)

    def forward(self, x):
        x = nn.functional.pad(x.unsqueeze(1), (8, 8), mode="reflect")
        h = self.stft(x)
        h = torch.clamp(h, min=h.amax(dim=(1, 2), keepdim=True) - 8.0)
        h = self.conv(h)
        return self.out(torch.maximum(h, 0.2 * h))


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_audio_front_end_with_computed_clip_and_max_prunes(dynamo, tmp_path):
    x = torch.randn(1, 256)
    path = export(_AudioFrontEnd().eval(), tmp_path / "front.onnx", x, dynamo)
    gm, before, after, out = round_trip(path, x, torch.randn(3, 256), op_types=("Conv1d",), tmp_path=tmp_path)
    assert out.shape[:2] == (3, 4)
    # the global max reads every channel of the STFT layer, which therefore keeps them all
    assert [m.out_channels for m in gm.modules() if isinstance(m, nn.Conv1d)] == [32, 12, 4]


class _GlobalMaxFloor(nn.Module):
    def forward(self, x):
        return torch.clamp(x, min=x.amax() - 8.0)


def test_reduction_over_every_axis_with_an_empty_axes_attribute_converts(tmp_path):
    from compression_core.io import load_model, verify_onnx_conversion

    x = torch.randn(2, 16) * 10
    path = export(_GlobalMaxFloor().eval(), tmp_path / "floor.onnx", x, dynamo=False)
    gm = load_model(path)
    assert verify_onnx_conversion(path, gm, atol=1e-5, inputs=[x]) < 1e-5


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=["LSTM", "GRU"])
def test_bidirectional_recurrent_layers_match_onnxruntime_with_and_without_initial_states(cell, tmp_path):
    from compression_core.io import load_model, verify_onnx_conversion

    class Bidirectional(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cell(8, 12, bidirectional=True)

        def forward(self, x, h):
            out, state = self.rnn(x, (h, h) if cell is nn.LSTM else h)
            return out, state[0] if cell is nn.LSTM else state

    x, h = torch.randn(7, 3, 8), torch.randn(2, 3, 12)
    path = tmp_path / "bi.onnx"
    torch.onnx.export(Bidirectional().eval(), (x, h), str(path), dynamo=False, opset_version=17,
                      input_names=["x", "h"])
    gm = load_model(path)
    (rnn,) = [m for m in gm.modules() if isinstance(m, cell)]
    assert rnn.bidirectional and rnn.hidden_size == 12
    assert verify_onnx_conversion(path, gm, atol=1e-5, inputs=[x, h]) < 1e-5


@pytest.mark.parametrize("op, direction, layout", [
    ("LSTM", "reverse", 0), ("LSTM", "forward", 1), ("GRU", "reverse", 1),
])
def test_onnx_recurrent_node_directions_and_layouts_match_onnxruntime(op, direction, layout, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compression_core.io import load_model, verify_onnx_conversion

    gates, hidden, features, seq, batch = (4 if op == "LSTM" else 3), 6, 5, 4, 2
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in (
        ("W", (1, gates * hidden, features)), ("R", (1, gates * hidden, hidden)), ("B", (1, 2 * gates * hidden)))]
    x_shape = [seq, batch, features] if layout == 0 else [batch, seq, features]
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "W", "R", "B"], ["y", "y_h"], name="rnn", **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 1, batch, hidden] if layout == 0
                                       else [batch, seq, 1, hidden]),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, batch, hidden] if layout == 0
                                       else [batch, 1, hidden])], weights,
    )
    path = tmp_path / "rnn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    gm = load_model(path)
    assert gm.onnx_nodes["rnn"] == {"node": "rnn", "op": op}
    sample = rng.standard_normal(x_shape).astype(np.float32)
    if layout == 0:
        assert verify_onnx_conversion(path, gm, atol=1e-5, inputs=[sample]) < 1e-5
    else:  # onnxruntime runs no batch-first recurrent layer: onnx's reference evaluator does
        from onnx.reference import ReferenceEvaluator

        expected = ReferenceEvaluator(str(path)).run(None, {"x": sample})
        with torch.no_grad():
            got = gm(torch.from_numpy(sample))
        for mine, ref in zip(got, expected):
            np.testing.assert_allclose(mine.numpy(), ref, atol=1e-5)


class _DataBranch(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x * 2
        return x


def test_if_decided_by_the_data_is_refused_naming_the_input_it_reads(tmp_path):
    from compression_core.io import ModelFormatError, load_model

    x = torch.randn(1, 4)
    path = export(torch.jit.script(_DataBranch().eval()), tmp_path / "branch.onnx", x, dynamo=False,
                  input_names=["audio"])
    with pytest.raises(ModelFormatError, match="If .*branch from the data of input 'audio', which is decided only at"):
        load_model(path)


class _LstmClassifier(nn.Module):
    """Frames (N, T, 12) -> projection -> 2-layer LSTM -> classifier on the last step."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 16)
        self.lstm = nn.LSTM(16, 16, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.proj(x)))
        return self.head(out[:, -1])


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_stacked_lstm_exported_with_a_dynamic_batch_prunes_and_its_export_runs_any_batch(dynamo, tmp_path):
    x = torch.randn(1, 6, 12)
    # torch.export specialises a batch of 1, so the dynamo exporter traces the dynamic batch at 2.
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=64)},)} if dynamo else {
        "input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}}
    path = export(_LstmClassifier().eval(), tmp_path / "lstm.onnx", torch.randn(2, 6, 12) if dynamo else x, dynamo,
                  **kwargs)
    gm, before, after, out = round_trip(path, x, torch.randn(2, 6, 12), op_types=("Linear",), tmp_path=tmp_path)
    assert out.shape == (2, 5)
    assert after < before


class _SequenceSoftmax(nn.Module):
    """Conv features read as a sequence (N, W, C) -> per-step class probabilities, as OCR recognisers end."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 7)

    def forward(self, x):
        sequence = torch.relu(self.conv(x)).mean(dim=2).transpose(1, 2)  # (N, W, C)
        return torch.softmax(self.fc2(torch.relu(self.fc1(sequence))), dim=-1)


def test_opset_11_softmax_over_the_last_axis_keeps_any_batch_in_the_pruned_export(tmp_path):
    x = torch.randn(1, 3, 8, 20)
    path = tmp_path / "seq.onnx"
    torch.onnx.export(_SequenceSoftmax().eval(), (x,), str(path), dynamo=False, opset_version=11)
    gm, before, after, out = round_trip(path, x, torch.randn(2, 3, 8, 20), op_types=("Conv2d", "Linear"),
                                        tmp_path=tmp_path)
    assert out.shape == (2, 20, 7)
    assert after < before
    # onnx2torch's module reshaped back to the traced input shape, which an export can write as a literal batch
    exported = onnx.load(str(tmp_path / "pruned.onnx"))
    assert [n.op_type for n in exported.graph.node if n.op_type in ("Softmax", "Reshape")] == ["Softmax"]


class _BilinearToSize(nn.Module):
    """Pruned channels upsampled to another feature map's size (the dynamo exporter writes sizes [1, C, H, W])."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.lateral = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        top = torch.relu(self.lateral(torch.relu(self.down(x))))
        return self.head(nn.functional.interpolate(top, size=x.shape[-2:], mode="bilinear", align_corners=False))


def test_resize_to_literal_batch_and_channel_sizes_follows_the_batch_and_the_pruned_channels(tmp_path):
    x = torch.randn(1, 3, 16, 16)
    path = export(_BilinearToSize().eval(), tmp_path / "resize.onnx", x, True)
    gm, before, after, out = round_trip(path, x, torch.randn(2, 3, 16, 16), op_types=("Conv2d",), tmp_path=tmp_path)
    assert out.shape == (2, 4, 16, 16)
    assert after < before
