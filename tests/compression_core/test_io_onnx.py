"""ONNX in and out: torch -> ONNX (several opsets / exporters) -> load_model, checked against onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compression_core.models import build_architecture
from compression_core.io import (
    ModelFormatError,
    constants_to_initializers,
    detect_format,
    load_model,
    onnx_input_shapes,
    preprocess_onnx,
    save_model,
    unsupported_operators,
    verify_onnx_conversion,
)
from compression_core.io.onnx.compat import find_converter


def _seeded(name: str, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_architecture(name)
        # give batch norm non-trivial statistics so it matters in the comparison
        model.train()
        with torch.no_grad():
            shape = (8, *model.condense_input_shapes[0][1:])
            for _ in range(3):
                model(torch.randn(shape) * 2 + 0.5)
    return model.eval()


def _export(model: nn.Module, path, sample, opset=None, dynamic=True, **kwargs):
    options = dict(dynamo=False, input_names=["input"], output_names=["output"])
    if opset is not None:
        options["opset_version"] = opset
    if dynamic:
        options["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), **options)
    return path


def _ort(path, array: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: array})[0]


def _layer_counts(module: nn.Module):
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return convs, linears


@pytest.fixture(scope="module")
def digits_model():
    return _seeded("digits_cnn")


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory, digits_model):
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    return _export(digits_model, path, torch.randn(1, 1, 8, 8), opset=17)


@pytest.mark.parametrize("opset", [11, 13, 17, None], ids=["opset11", "opset13", "opset17", "default"])
def test_digits_round_trip_matches_onnxruntime(tmp_path, digits_model, opset):
    path = _export(digits_model, tmp_path / "m.onnx", torch.randn(1, 1, 8, 8), opset=opset)
    assert detect_format(path) == "onnx"
    module = load_model(path)
    assert isinstance(module, torch.fx.GraphModule)
    assert not module.training
    convs, linears = _layer_counts(module)
    assert len(convs) == 2 and len(linears) == 2
    assert all(isinstance(c.weight, nn.Parameter) for c in convs)

    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        ours = module(x).numpy()
        original = digits_model(x).numpy()
    np.testing.assert_allclose(ours, _ort(path, x.numpy()), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, original, atol=1e-4, rtol=0)


def test_resnet18_default_opset_matches_onnxruntime(tmp_path):
    # torch.onnx.export's default opset emits Identity-19, unknown to onnx2torch 1.5.15's registry.
    model = _seeded("resnet18")
    path = _export(model, tmp_path / "resnet18.onnx", torch.randn(1, 3, 224, 224), opset=None, dynamic=False)
    assert max(o.version for o in onnx.load(str(path)).opset_import) >= 19
    module = load_model(path)
    convs, linears = _layer_counts(module)
    assert len(convs) == 20 and len(linears) == 1
    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4
    # module names follow the original model's layers
    names = dict(module.named_children())
    assert isinstance(names["layer1_0_conv1"], nn.Conv2d)
    assert isinstance(names["fc"], nn.Linear)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_resnet18_opsets_match_onnxruntime(tmp_path, opset):
    model = _seeded("resnet18")
    path = _export(model, tmp_path / "resnet18.onnx", torch.randn(1, 3, 224, 224), opset=opset)
    module = load_model(path)
    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4


def test_dynamo_exporter_model(tmp_path, digits_model):
    pytest.importorskip("onnxscript")
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(digits_model, (torch.randn(1, 1, 8, 8),), str(path), dynamo=True, external_data=False)
    module = load_model(path)
    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4
    assert len(_layer_counts(module)[1]) == 2


class _Mixed(nn.Module):
    """Ops whose ONNX versions are newer than onnx2torch 1.5.15 knows (Gelu-20, Resize-19, ReduceMax-20, ...)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.norm = nn.LayerNorm(16)
        self.gelu = nn.GELU(approximate="tanh")
        self.fc = nn.Linear(16, 4)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.mish = nn.Mish()

    def forward(self, x):
        y = self.norm(self.up(self.conv(x)))
        return torch.softmax(self.fc(self.gelu(y)), -1), self.mish(self.pool(y))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript_exporter", "dynamo_exporter"])
def test_recent_operator_versions(tmp_path, dynamo):
    if dynamo:
        pytest.importorskip("onnxscript")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _Mixed().eval()
    path = tmp_path / "mixed.onnx"
    extra = {"external_data": False} if dynamo else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=dynamo, **extra)
    assert "Gelu" in {n.op_type for n in onnx.load(str(path)).graph.node}
    module = load_model(path)
    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4


def _initializers_as_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """What other frameworks often write: every weight a Constant node, no initializers."""
    constants = [
        helper.make_node("Constant", [], [init.name], name=f"const_{i}", value=init)
        for i, init in enumerate(proto.graph.initializer)
    ]
    init_names = {init.name for init in proto.graph.initializer}
    nodes = constants + list(proto.graph.node)
    inputs = [i for i in proto.graph.input if i.name not in init_names]
    graph = helper.make_graph(nodes, "constants", inputs, list(proto.graph.output))
    model = helper.make_model(graph, opset_imports=list(proto.opset_import), producer_name="other-framework")
    model.ir_version = proto.ir_version
    onnx.checker.check_model(model)
    return model


def test_weights_as_constant_nodes(tmp_path, digits_onnx):
    proto = _initializers_as_constants(onnx.load(str(digits_onnx)))
    assert len(proto.graph.initializer) == 0
    path = tmp_path / "constants.onnx"
    onnx.save(proto, str(path))
    module = load_model(path)
    convs, linears = _layer_counts(module)
    assert len(convs) == 2 and len(linears) == 2  # real layers, not functional ops on buffers
    assert convs[0].weight.shape == (16, 1, 3, 3)
    assert verify_onnx_conversion(path, module, atol=1e-4) < 1e-4


def test_constants_to_initializers_counts(digits_onnx):
    proto = _initializers_as_constants(onnx.load(str(digits_onnx)))
    moved = constants_to_initializers(proto)
    assert moved == len(proto.graph.initializer) > 0
    assert not any(n.op_type == "Constant" for n in proto.graph.node)


def test_preprocess_leaves_its_input_as_it_is(digits_onnx):
    proto = _initializers_as_constants(onnx.load(str(digits_onnx)))
    before = proto.SerializeToString()
    ready = preprocess_onnx(proto)
    assert proto.SerializeToString() == before
    assert not any(n.op_type == "Constant" for n in ready.graph.node)
    assert len(ready.graph.initializer) == len(proto.graph.node) - len(ready.graph.node)


def test_sparse_constant_is_refused(tmp_path):
    values = numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32), "values")
    indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "indices")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], sparse_value=helper.make_sparse_tensor(values, indices, [4])),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    path = tmp_path / "sparse.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelFormatError, match="sparse.onnx cannot be converted to PyTorch: Sparse tensors"):
        load_model(path)


def _foreign_model(opset: int = 21) -> onnx.ModelProto:
    """A small hand-built model, TF-style: Constant weights, Identity on weights, new opset."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fc = rng.standard_normal((4, 5)).astype(np.float32)  # Gemm B of shape (K, N), transB = 0
    fc_b = rng.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w_raw"], value=numpy_helper.from_array(w)),
        helper.make_node("Identity", ["w_raw"], ["w"]),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b)),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Constant", [], ["fc"], value=numpy_helper.from_array(fc)),
        helper.make_node("Constant", [], ["fc_b"], value=numpy_helper.from_array(fc_b)),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y_raw"]),
        helper.make_node("Identity", ["y_raw"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def test_foreign_model_with_new_opset(tmp_path):
    path = tmp_path / "foreign.onnx"
    onnx.save(_foreign_model(21), str(path))
    assert onnx_input_shapes(path) == [[None, 3, 6, 6]]
    module = load_model(path)
    convs, linears = _layer_counts(module)
    assert len(convs) == 1 and len(linears) == 1
    assert verify_onnx_conversion(path, module, atol=1e-4, batch_size=3) < 1e-4


def test_dense_layers_as_matmul_add_become_linear(tmp_path):
    # Keras/TF style: Flatten -> MatMul(W) -> Add(b), no Gemm; plus a 3-D MatMul that must stay a MatMul.
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((12, 6)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    b2 = rng.standard_normal((1, 3)).astype(np.float32)
    w3 = rng.standard_normal((3, 2)).astype(np.float32)
    init = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"))]
    shape = numpy_helper.from_array(np.array([-1, 1, 3], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["b2", "m2"], ["a2"]),
        helper.make_node("Reshape", ["a2", "shape"], ["r3"]),
        helper.make_node("MatMul", ["r3", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 2])],
        init + [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "dense.onnx"
    onnx.save(model, str(path))
    module = load_model(path)
    linears = _layer_counts(module)[1]
    assert [(l.in_features, l.out_features) for l in linears] == [(12, 6), (6, 3), (3, 2)]
    assert verify_onnx_conversion(path, module, atol=1e-4, batch_size=4) < 1e-4


def test_converter_fallback_to_older_registered_version():
    converter, version = find_converter("Identity", 19)
    assert converter is not None and version == 16
    assert find_converter("Conv", 22)[1] == 11
    assert find_converter("NoSuchOp", 17) == (None, None)


def test_new_attribute_not_known_to_old_converter_is_refused(tmp_path):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    graph = helper.make_graph(
        [node], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match="dilations"):
        load_model(path)


def test_unsupported_operator_is_named(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])], "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    assert unsupported_operators(model) == ["Det"]
    with pytest.raises(ModelFormatError, match=r"cannot convert.*Det"):
        load_model(path)


def test_truncated_onnx_is_invalid(tmp_path, digits_onnx):
    data = digits_onnx.read_bytes()
    path = tmp_path / "truncated.bin"
    path.write_bytes(data[: len(data) // 2])
    assert detect_format(path) == "onnx"
    with pytest.raises(ModelFormatError, match="truncated.bin is not a valid ONNX model: "):
        load_model(path)


def test_random_bytes_are_rejected(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert detect_format(path) == "unknown"
    with pytest.raises(ModelFormatError, match="is not an ONNX model, safetensors file or state_dict"):
        load_model(path)
    named_onnx = tmp_path / "noise.onnx"
    named_onnx.write_bytes(path.read_bytes())
    with pytest.raises(ModelFormatError, match="noise.onnx is not a valid ONNX model"):
        load_model(named_onnx)


def test_invalid_graph_fails_checker(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFormatError, match="broken.onnx is not a valid ONNX model"):
        load_model(path)


def test_input_shapes_exclude_initializers(tmp_path, digits_model):
    path = _export(
        digits_model, tmp_path / "old.onnx", torch.randn(1, 1, 8, 8), opset=11, keep_initializers_as_inputs=True
    )
    assert len(onnx.load(str(path)).graph.input) > 1
    assert onnx_input_shapes(path) == [[None, 1, 8, 8]]
    module = load_model(path)
    assert module.condense_input_shapes == [[None, 1, 8, 8]]
    assert verify_onnx_conversion(path, module) < 1e-4


def test_verify_detects_a_wrong_conversion(digits_onnx):
    module = load_model(digits_onnx, verify=True)
    with torch.no_grad():
        _layer_counts(module)[1][-1].bias.add_(1.0)
    with pytest.raises(ModelFormatError, match="does not reproduce onnxruntime"):
        verify_onnx_conversion(digits_onnx, module, atol=1e-4)


def test_save_model_onnx_runs_in_onnxruntime(tmp_path, digits_model):
    result = save_model(digits_model, tmp_path / "out" / "digits.onnx", example_inputs=torch.randn(1, 1, 8, 8))
    path = tmp_path / "out" / "digits.onnx"
    assert result["path"] == str(path) and result["format"] == "onnx"
    assert result["bytes"] == path.stat().st_size > 0
    assert result["opset"] == 17
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    x = torch.randn(3, 1, 8, 8)  # dynamic batch axis
    with torch.no_grad():
        expected = digits_model(x).numpy()
    np.testing.assert_allclose(_ort(path, x.numpy()), expected, atol=1e-4)
    # and the exported file comes back in
    assert verify_onnx_conversion(path, load_model(path)) < 1e-4


def test_save_model_onnx_without_example_inputs_uses_known_shape(tmp_path):
    model = build_architecture("digits_cnn").eval()
    result = save_model(model, tmp_path / "auto.onnx")
    assert result["format"] == "onnx"
    loaded = load_model(tmp_path / "auto.onnx")
    round_trip = save_model(loaded, tmp_path / "again.onnx")  # GraphModule from ONNX exports again
    assert round_trip["bytes"] > 0
    with pytest.raises(ValueError, match="example_inputs"):
        save_model(nn.Sequential(nn.Linear(2, 2)), tmp_path / "no_shape.onnx")


def test_load_model_rejects_unknown_option(digits_onnx):
    with pytest.raises(TypeError, match="verifyy"):
        load_model(digits_onnx, verifyy=True)
