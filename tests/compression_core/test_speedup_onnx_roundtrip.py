"""ONNX round trip of the speedup coverage list (issue 3).

Per model: ``torch.onnx.export`` -> ``compression_core.io.load_model`` (a
``torch.fx.GraphModule`` built by onnx2torch) -> checked against onnxruntime
-> dependency-aware 50% ``L1NormPruner`` -> ``ModelSpeedup`` -> ``save_model``
to ONNX -> the pruned file runs in onnxruntime with the original output shape.

Inputs are as small as each architecture allows (the TorchScript exporter
needs AlexNet's/VGG's adaptive pooling input to be a multiple of its output,
so those two run at 223/224); ViT is torchvision's ``VisionTransformer`` at a
small size with the structure of ``vit_b_16`` (patch 16, class token,
pre-norm encoder blocks with ``nn.MultiheadAttention`` and a GELU MLP).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from compression_core.io import load_model, save_model, verify_onnx_conversion
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2torch")

CONV = ("Conv2d",)
CONV_LINEAR = ("Conv2d", "Linear")


def _vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=256, num_classes=1000
    )


def _torchvision(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, **kwargs)


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    size: int = 64
    op_types: tuple = CONV
    slow: bool = False
    # A reason, for a model whose selected channels the torch-side engine currently keeps
    # (the parameter-count assertion is then xfail(strict=False)); none is pinned today.
    pinned: Optional[str] = None


CASES = {
    "alexnet": Case(_torchvision("alexnet"), size=223, slow=True),
    "vgg11": Case(_torchvision("vgg11"), size=224, slow=True),
    "resnet18": Case(_torchvision("resnet18")),
    "resnet50": Case(_torchvision("resnet50"), slow=True),
    "resnext50_32x4d": Case(_torchvision("resnext50_32x4d"), slow=True),
    "wide_resnet50_2": Case(_torchvision("wide_resnet50_2"), slow=True),
    "densenet121": Case(_torchvision("densenet121"), slow=True),
    "googlenet": Case(_torchvision("googlenet", aux_logits=False, init_weights=False)),
    "inception_v3": Case(_torchvision("inception_v3", aux_logits=False, init_weights=False), size=75, slow=True),
    "mobilenet_v2": Case(_torchvision("mobilenet_v2")),
    "mobilenet_v3_large": Case(_torchvision("mobilenet_v3_large")),
    "mnasnet0_5": Case(_torchvision("mnasnet0_5")),
    "efficientnet_b0": Case(_torchvision("efficientnet_b0")),
    "regnet_y_400mf": Case(_torchvision("regnet_y_400mf")),
    "shufflenet_v2_x0_5": Case(_torchvision("shufflenet_v2_x0_5")),
    "squeezenet1_0": Case(_torchvision("squeezenet1_0")),
    # Linear too: the pointwise MLP (ConvNeXt) and the MLP / attention projections (ViT) are
    # exported as MatMul + Add and must come back as prunable nn.Linear layers.
    "convnext_tiny": Case(_torchvision("convnext_tiny"), op_types=CONV_LINEAR, slow=True),
    "vit_b_16": Case(_vit, op_types=CONV_LINEAR),
}
# Also exported with torch.onnx's default opset (20 on current PyTorch): Reduce*/Split with
# axes as inputs, Gelu-20, newer op versions behind onnx2torch's registry.
DEFAULT_OPSET = ("resnet18", "shufflenet_v2_x0_5", "vit_b_16")


def _params() -> list:
    params = []
    for name, case in CASES.items():
        marks = [pytest.mark.slow] if case.slow else []
        params.append(pytest.param(name, 17, id=f"{name}-opset17", marks=marks))
        if name in DEFAULT_OPSET:
            params.append(pytest.param(name, None, id=f"{name}-default-opset", marks=marks))
    return params


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, opset", _params())
def test_onnx_round_trip_prune_speedup_export(name, opset, tmp_path, request):
    case = CASES[name]
    model = case.build().eval()
    x = torch.randn(1, 3, case.size, case.size)
    x2 = torch.randn(2, 3, case.size, case.size)
    with torch.no_grad():
        expected = model(x).numpy()

    # 1. export with the TorchScript exporter (what most users upload)
    source = tmp_path / f"{name}.onnx"
    kwargs = {} if opset is None else {"opset_version": opset}
    torch.onnx.export(
        model, (x,), str(source), dynamo=False, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **kwargs,
    )
    del model
    gc.collect()

    # 2. import into Condense, checked against onnxruntime and the original model
    gm = load_model(source)
    assert isinstance(gm, torch.fx.GraphModule)
    diff = verify_onnx_conversion(source, gm, atol=1e-4, rtol=1e-4, inputs=[x2])  # dynamic batch too
    with torch.no_grad():
        assert _rel_err(gm(x).numpy(), expected) < 1e-4
    if "Linear" in case.op_types:  # MatMul by a constant weight (+ Add bias) came back as nn.Linear
        modules = dict(gm.named_modules())
        constant_matmuls = [
            node.target for node in gm.graph.nodes
            if node.op == "call_module" and type(modules[node.target]).__name__ == "OnnxMatMul"
            and any(isinstance(a, torch.fx.Node) and a.op == "get_attr" for a in node.args)
        ]
        assert constant_matmuls == []
        linears = [m for m in gm.modules() if isinstance(m, nn.Linear)]
        assert len(linears) > 1 and all(m.bias is not None for m in linears)
    params_before = _n_params(gm)

    # 3. dependency-aware L1 pruning and speedup on the imported graph
    config = auto_set_dependency_group_ids(gm, [{"op_types": list(case.op_types), "sparse_ratio": 0.5}], x)
    pruner = L1NormPruner(gm, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    assert masks
    result = ModelSpeedup(gm, x, masks).speedup_model()
    assert result is gm
    params_after = _n_params(gm)
    gm.eval()
    with torch.no_grad():
        pruned_out = gm(x).numpy()
        pruned_out2 = gm(x2).numpy()
    assert pruned_out.shape == expected.shape

    # 4. export the pruned model; onnxruntime runs it (batch 1 and 2) with the original output shape
    target = tmp_path / f"{name}_pruned.onnx"
    info = save_model(gm, target, example_inputs=(x,))
    assert info["format"] == "onnx" and target.stat().st_size == info["bytes"]
    session = _session(target)
    feed_name = session.get_inputs()[0].name
    (got,) = session.run(None, {feed_name: x.numpy()})
    assert got.shape == expected.shape
    assert _rel_err(got, pruned_out) < 1e-4
    (got2,) = session.run(None, {feed_name: x2.numpy()})
    assert got2.shape == (2,) + expected.shape[1:]
    assert _rel_err(got2, pruned_out2) < 1e-4

    print(
        f"\nROUNDTRIP {name} opset={opset or 'default'} import_diff={diff:.3g} "
        f"params {params_before} -> {params_after} pruned_onnx_bytes={info['bytes']}"
    )
    # 5. the engine really removed channels (xfail where it currently keeps them all)
    if case.pinned:
        request.applymarker(pytest.mark.xfail(strict=False, reason=case.pinned))
    assert params_after < params_before, f"speedup removed no parameters from {name}"


# --------------------------------------------------------------------------
# io pieces the round trip relies on


class _TokenMixer(nn.Module):
    """Linear layers on 3-D tokens (exported as MatMul + Add) and a MatMul of two activations."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.out = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        h = torch.relu(self.proj(x))
        attention = torch.softmax(h @ h.transpose(1, 2), dim=-1)
        return self.out(attention @ h)


def test_matmul_by_constant_weight_becomes_linear_and_re_exports(tmp_path):
    model = _TokenMixer().eval()
    x = torch.randn(2, 5, 8)
    path = tmp_path / "mixer.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    gm = load_model(path)
    linears = {name: m for name, m in gm.named_modules() if isinstance(m, nn.Linear)}
    assert sorted((m.in_features, m.out_features, m.bias is not None) for m in linears.values()) == [
        (8, 16, True), (16, 8, False),
    ]
    kinds = [type(m).__name__ for m in gm.modules()]
    assert kinds.count("OnnxMatMul") == 2  # the activation products stay matrix products
    assert sum(b.numel() for b in gm.buffers()) < 16  # the weights moved into the layers
    assert verify_onnx_conversion(path, gm, atol=1e-5, inputs=[x]) < 1e-5
    with torch.no_grad():
        assert _rel_err(gm(x).numpy(), model(x).numpy()) < 1e-5
    info = save_model(gm, tmp_path / "again.onnx", example_inputs=(x,))
    assert info["max_abs_diff"] < 1e-5


def test_bad_weight_tensor_is_refused_without_serialising_the_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from compression_core.io import ModelFormatError, read_onnx

    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], [0.5] * 4096)
    del weight.float_data[-1]  # one value short
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelFormatError, match="'w'"):
        read_onnx(path)
