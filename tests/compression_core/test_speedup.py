"""Tests for compression_core.speedup: channel analysis, module replacement, plans, errors."""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections import defaultdict

import pytest
import torch
import torch.nn as nn
import torchvision

from compression_core.speedup import (
    ModelSpeedup,
    SpeedupError,
    apply_pruning_plan,
    auto_set_dependency_group_ids,
    plan_from_state_dict,
)
from tests.compression_core.speedup_helpers import rel_err


# --------------------------------------------------------------------------
# helpers


def channel_masks(module: nn.Module, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """NNI-format masks keeping the output channels where ``keep`` is true."""
    weight = module.weight
    dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
    shape = [1] * weight.dim()
    shape[dim] = -1
    keep = keep.to(weight.dtype)
    mask = {"weight": keep.view(shape).expand_as(weight).clone()}
    if getattr(module, "bias", None) is not None:
        mask["bias"] = keep.clone()
    return mask


def masked_copy(model: nn.Module, masks: dict) -> nn.Module:
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            module = ref.get_submodule(name)
            for pname, m in mask.items():
                getattr(module, pname).mul_(m)
    return ref


def snapshot(model: nn.Module) -> tuple[dict, dict]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    types = {name: m for name, m in model.named_modules()}
    return state, types


def assert_unchanged(model: nn.Module, snap: tuple[dict, dict]) -> None:
    state, modules = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert now[key].shape == value.shape, key
        assert torch.equal(now[key], value), key
    assert {name: m for name, m in model.named_modules()} == modules  # same module objects


def zero_preserving_bn(model: nn.Module) -> None:
    """BN(0) == 0, so a removed (all-zero) channel contributes nothing anywhere."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.zero_()
            m.bias.data.zero_()
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def simple_cnn(bn: bool) -> nn.Sequential:
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    layers += [nn.BatchNorm2d(8)] if bn else []
    layers += [nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1)]
    layers += [nn.BatchNorm2d(16)] if bn else []
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


def half_masks(model: nn.Sequential) -> dict:
    convs = [(n, m) for n, m in model.named_children() if isinstance(m, nn.Conv2d)]
    linears = [(n, m) for n, m in model.named_children() if isinstance(m, nn.Linear)]
    masks = {}
    for name, conv in convs:
        masks[name] = channel_masks(conv, torch.arange(conv.out_channels) % 2 == 0)
    name, fc = linears[0]
    masks[name] = channel_masks(fc, torch.arange(fc.out_features) < fc.out_features // 2)
    return masks


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------
# sequential CNNs


def test_sequential_cnn_exact_shapes_and_outputs():
    model = simple_cnn(bn=False).eval()
    x = torch.randn(4, 3, 6, 6)
    masks = half_masks(model)
    reference = masked_copy(model, masks)
    params_before = sum(p.numel() for p in model.parameters())

    speedup = ModelSpeedup(model, x, masks)
    result = speedup.speedup_model()

    assert result is model
    assert (model[0].in_channels, model[0].out_channels) == (3, 4)
    assert (model[2].in_channels, model[2].out_channels) == (4, 8)
    assert (model[5].in_features, model[5].out_features) == (8 * 36, 16)
    assert (model[7].in_features, model[7].out_features) == (16, 10)
    assert model[0].weight.shape == (4, 3, 3, 3) and model[0].bias.shape == (4,)
    assert sum(p.numel() for p in model.parameters()) < params_before / 3
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-4
    assert speedup.warnings == []
    # the plan is JSON and names the new sizes, the old ones and the kept indices
    plan = json.loads(json.dumps(speedup.plan))
    assert plan["0"] == {
        "type": "Conv2d", "in_channels": 3, "out_channels": 4, "groups": 1,
        "kept_out": [0, 2, 4, 6], "kept_in": [0, 1, 2],
        "before": {"in_channels": 3, "out_channels": 8, "groups": 1},
    }
    # flatten: each kept channel keeps its whole block of 36 features, channel-major
    kept_in = plan["5"]["kept_in"]
    assert kept_in[:36] == list(range(0, 36)) and kept_in[36:72] == list(range(72, 108))
    assert plan["7"]["kept_in"] == list(range(16)) and plan["7"]["kept_out"] == list(range(10))


def test_sequential_cnn_with_batchnorm_runs_and_keeps_modes():
    model = simple_cnn(bn=True).train()
    model.to(torch.float64)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    masks = half_masks(model)
    running_before = model[1].running_mean.clone()
    ModelSpeedup(model, x, masks).speedup_model()

    assert model[1].num_features == 4 and model[1].running_mean.shape == (4,)
    assert torch.equal(model[1].running_mean, running_before[::2])  # the dummy run did not touch stats
    assert model[4].num_features == 8 and model[4].weight.shape == (8,)
    assert model[7].in_features == 8 * 36
    assert model.training and model[1].training  # train mode preserved
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()  # still trainable


def test_sequential_cnn_with_zero_preserving_bn_matches_masked_model():
    model = simple_cnn(bn=True).eval()
    zero_preserving_bn(model)
    x = torch.randn(2, 3, 6, 6)
    masks = half_masks(model)
    reference = masked_copy(model, masks)
    ModelSpeedup(model, x, masks).speedup_model()
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-4


def test_fine_grained_masks_are_applied_without_resizing():
    model = simple_cnn(bn=False).eval()
    x = torch.randn(2, 3, 6, 6)
    weight_mask = (torch.rand_like(model[2].weight) > 0.5).float()
    masks = {"2": {"weight": weight_mask}}
    reference = masked_copy(model, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert speedup.plan == {}
    assert model[2].out_channels == 16
    assert bool((model[2].weight[weight_mask == 0] == 0).all())
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-6


def test_masks_from_file(tmp_path):
    model = simple_cnn(bn=False).eval()
    masks = half_masks(model)
    path = tmp_path / "masks.pth"
    torch.save(masks, path)
    ModelSpeedup(model, torch.randn(1, 3, 6, 6), str(path)).speedup_model()
    assert model[0].out_channels == 4


# --------------------------------------------------------------------------
# graph patterns


class Branchy(nn.Module):
    """Residual add, channel concat, SE-style broadcast multiply, depthwise conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(3, 6, 1)
        self.dw = nn.Conv2d(14, 14, 3, padding=1, groups=14)
        self.bn = nn.BatchNorm2d(14)
        self.se_reduce = nn.Conv2d(14, 4, 1)
        self.se_expand = nn.Conv2d(4, 14, 1)
        self.head = nn.Conv2d(14, 5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = torch.relu(self.a(x))
        r = self.b(a) + a  # couples a and b
        y = torch.cat([r, self.c(x)], dim=1)  # 8 + 6 channels
        y = torch.nn.functional.relu6(self.bn(self.dw(y)))
        s = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = y * s
        y = self.head(y)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_residual_concat_depthwise_and_se_patterns():
    model = Branchy().eval()
    zero_preserving_bn(model)
    x = torch.randn(2, 3, 8, 8)
    cfg = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    groups = {e["op_names"][0]: e["dependency_group_id"] for e in cfg}
    assert groups["a"] == groups["b"]
    assert groups["dw"] == groups["se_expand"] != groups["a"]  # dw passes the cat's ids, SE multiplies them
    assert len({groups["a"], groups["c"], groups["se_reduce"], groups["head"]}) == 4

    keep8 = torch.tensor([1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    keep6 = torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool)
    keep14 = torch.cat([keep8, keep6])
    masks = {
        "a": channel_masks(model.a, keep8),
        "b": channel_masks(model.b, keep8),
        "c": channel_masks(model.c, keep6),
        "dw": channel_masks(model.dw, keep14),
        "se_expand": channel_masks(model.se_expand, keep14),
        "se_reduce": channel_masks(model.se_reduce, torch.tensor([1, 0, 1, 1], dtype=torch.bool)),
    }
    reference = masked_copy(model, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert speedup.warnings == []
    assert model.a.out_channels == model.b.out_channels == model.b.in_channels == 5
    assert model.c.out_channels == 4
    assert (model.dw.in_channels, model.dw.out_channels, model.dw.groups) == (9, 9, 9)
    assert model.bn.num_features == 9
    assert (model.se_reduce.in_channels, model.se_reduce.out_channels) == (9, 3)
    assert (model.se_expand.in_channels, model.se_expand.out_channels) == (3, 9)
    assert model.head.in_channels == 9 and model.head.out_channels == 5  # feeds the output: kept
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-4


def test_channels_are_kept_when_only_one_side_of_an_add_is_masked():
    model = Branchy().eval()
    x = torch.randn(1, 3, 8, 8)
    masks = {"a": channel_masks(model.a, torch.arange(8) < 4)}  # b still produces those channels
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert model.a.out_channels == 8
    assert "a" not in speedup.plan


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)
        self.c = nn.Conv2d(3, 6, 1)
        self.d = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        z = torch.roll(self.c(x), 1, dims=1)  # an op speedup does not know
        return self.b(y) + self.d(z)


def test_unknown_ops_pin_channels_and_warn():
    model = Shuffle().eval()
    x = torch.randn(1, 3, 4, 4)
    masks = {"a": channel_masks(model.a, torch.arange(8) < 4), "c": channel_masks(model.c, torch.arange(6) < 3)}
    reference = masked_copy(model, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert model.a.out_channels == 8 and model.c.out_channels == 6
    assert speedup.plan == {}
    assert any("roll" in w for w in speedup.warnings)
    # the channel shuffle itself is understood: it ties channel i to channel i + 4, and 4..7 are kept
    assert not any("view" in w for w in speedup.warnings)
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-6


def test_grouped_conv_and_shared_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.shared = nn.Conv2d(8, 8, 1)
            self.out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.g(self.a(x))
            return self.out(self.shared(torch.relu(self.shared(y))))

    model = Net().eval()
    x = torch.randn(1, 3, 5, 5)
    masks = {"a": channel_masks(model.a, torch.arange(8) < 4), "shared": channel_masks(model.shared, torch.arange(8) < 6)}
    reference = masked_copy(model, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    # feeds a grouped conv (groups=2): group 0 keeps 4 channels, group 1 none, so speedup keeps all 8
    assert model.a.out_channels == 8
    # the shared conv's outputs feed its own input: in and out channels form one class
    assert model.shared.in_channels == model.shared.out_channels == 8
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-6


def test_conv_transpose_and_linear_on_sequences():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 8, 2, stride=2)
            self.conv = nn.Conv2d(8, 4, 1)
            self.l1 = nn.Linear(4, 6)
            self.l2 = nn.Linear(6, 4)

        def forward(self, x):
            y = self.conv(torch.relu(self.up(x)))  # (N, 4, H, W)
            t = y.flatten(2).transpose(1, 2)  # (N, HW, 4)
            return self.l2(torch.relu(self.l1(t)))

    model = Net().eval()
    x = torch.randn(2, 3, 3, 3)
    masks = {"up": channel_masks(model.up, torch.arange(8) % 4 != 0), "l1": channel_masks(model.l1, torch.arange(6) < 3)}
    reference = masked_copy(model, masks)
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.up.out_channels == 6 and model.up.weight.shape == (3, 6, 2, 2)
    assert model.conv.in_channels == 6
    assert model.l1.out_features == 3 and model.l2.in_features == 3
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-5


# --------------------------------------------------------------------------
# resnet18


def resnet18_group_masks(model: nn.Module, x: torch.Tensor) -> tuple[dict, dict[int, list[str]]]:
    cfg = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    groups: dict[int, list[str]] = defaultdict(list)
    for entry in cfg:
        groups[entry["dependency_group_id"]].append(entry["op_names"][0])
    named = dict(model.named_modules())
    gen = torch.Generator().manual_seed(3)
    masks = {}
    for names in groups.values():
        n = named[names[0]].out_channels
        keep = torch.randperm(n, generator=gen) < n // 2  # the same channels across the whole group
        for name in names:
            masks[name] = channel_masks(named[name], keep)
    return masks, groups


def test_auto_set_dependency_group_ids_on_resnet18():
    model = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}, {"op_names": ["layer4.1.conv2"], "exclude": True}]
    cfg = auto_set_dependency_group_ids(model, config, x)
    names = [e["op_names"][0] for e in cfg]
    assert len(names) == len(set(names)) == 19  # 20 convs, one excluded
    assert "layer4.1.conv2" not in names and "fc" not in names
    assert all(e["sparse_ratio"] == 0.5 and len(e["op_names"]) == 1 for e in cfg)
    gid = {e["op_names"][0]: e["dependency_group_id"] for e in cfg}
    assert gid["conv1"] == gid["layer1.0.conv2"] == gid["layer1.1.conv2"]
    assert gid["layer2.0.conv2"] == gid["layer2.0.downsample.0"] == gid["layer2.1.conv2"]
    assert gid["layer4.0.conv2"] == gid["layer4.0.downsample.0"]
    block_inner = [gid[f"layer{i}.{j}.conv1"] for i in range(1, 5) for j in range(2)]
    assert len(set(block_inner)) == 8 and not set(block_inner) & {gid["conv1"], gid["layer2.0.conv2"]}


def test_resnet18_speedup_with_dependency_groups():
    model = torchvision.models.resnet18().eval()
    zero_preserving_bn(model)
    x = torch.randn(1, 3, 64, 64)
    masks, _ = resnet18_group_masks(model, x)
    reference = masked_copy(model, masks)
    params_before = sum(p.numel() for p in model.parameters())

    speedup = ModelSpeedup(model, x, masks)
    assert speedup.speedup_model() is model

    assert speedup.warnings == []
    assert sum(p.numel() for p in model.parameters()) < params_before * 0.35
    assert model.conv1.out_channels == 32 and model.bn1.num_features == 32
    assert model.fc.in_features == 256 and model.fc.out_features == 1000
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels
            # residual add: conv2's output matches the identity / downsample path
            identity = block.downsample[0].out_channels if block.downsample is not None else block.conv1.in_channels
            assert block.conv2.out_channels == block.bn2.num_features == identity
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000)
        assert rel_err(out, reference(x)) < 1e-4
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)  # other input sizes still work


def test_pruning_plan_round_trip_with_strict_state_dict():
    pruned = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    masks, _ = resnet18_group_masks(pruned, x)
    speedup = ModelSpeedup(pruned, x, masks)
    speedup.speedup_model()
    plan = json.loads(json.dumps(speedup.plan))
    assert plan["layer1.0.conv1"]["type"] == "Conv2d"
    assert plan["layer1.0.bn1"] == {
        "type": "BatchNorm2d", "num_features": 32, **{k: plan["layer1.0.bn1"][k] for k in ("kept_out", "kept_in")},
        "before": {"num_features": 64},
    }

    fresh = torchvision.models.resnet18()
    assert apply_pruning_plan(fresh, plan) is fresh
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x), pruned(x))

    # a plan for another architecture is refused and leaves the model alone
    other = torchvision.models.resnet34()
    snap = snapshot(other)
    bad = dict(plan)
    bad["layer1.0.conv1"] = dict(plan["layer1.0.conv1"], type="Linear")
    with pytest.raises(SpeedupError, match="layer1.0.conv1"):
        apply_pruning_plan(other, bad)
    assert_unchanged(other, snap)
    with pytest.raises(SpeedupError, match="does not have"):
        apply_pruning_plan(torchvision.models.resnet18(), {"layer9.conv": plan["layer1.0.conv1"]})


def _layers(width: int, mid: int) -> nn.Sequential:
    """Plain, grouped and depthwise convolutions, BatchNorm, LayerNorm and Linear, ``mid`` channels inside."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width),  # depthwise
        nn.Conv2d(width, mid, 1, groups=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(mid, mid), nn.LayerNorm(mid), nn.Linear(mid, 5),
    ).eval()


def test_plan_from_state_dict_gives_layers_the_shapes_of_pruned_weights():
    pruned = _layers(4, 6)
    plan = json.loads(json.dumps(plan_from_state_dict(_layers(8, 12), pruned.state_dict())))
    assert sorted(plan, key=int) == ["0", "1", "3", "4", "8", "9", "10"]
    assert plan["4"]["kept_out"] == [0, 1, 2, 6, 7, 8] and plan["4"]["kept_in"] == [0, 1, 4, 5]  # first per group
    assert plan["3"]["groups"] == 4 and plan["1"]["kept_out"] == [0, 1, 2, 3]
    fresh = apply_pruning_plan(_layers(8, 12), plan)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned(x))
    # only the named layers change; weights that do not shrink a layer are left to load_state_dict
    assert list(plan_from_state_dict(_layers(8, 12), pruned.state_dict(), names=["0", "1"])) == ["0", "1"]
    assert plan_from_state_dict(_layers(2, 12), pruned.state_dict(), names=["0"]) == {}


# --------------------------------------------------------------------------
# onnx2torch graph modules


def onnx_graph_module(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    onnx = pytest.importorskip("onnx")
    onnx2torch = pytest.importorskip("onnx2torch")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    return onnx2torch.convert(onnx.load_from_string(buffer.getvalue()))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        a = torch.relu(self.bn1(self.c1(x)))
        b = torch.relu(self.c2(a) + a)
        c = nn.functional.max_pool2d(torch.relu(self.c3(b)), 2)
        return self.fc2(torch.relu(self.fc1(c.view(c.size(0), -1))))


def test_onnx2torch_graph_module():
    torch_model = SmallCNN().eval()
    for p in torch_model.bn1.parameters():
        p.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    gm = onnx_graph_module(torch_model, x)
    convs = {n: m for n, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert len(convs) == 5

    cfg = auto_set_dependency_group_ids(gm, [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}], x)
    groups: dict[int, list[str]] = defaultdict(list)
    for entry in cfg:
        groups[entry["dependency_group_id"]].append(entry["op_names"][0])
    # c1 and c2 feed one add; fc2 makes the model's output, so it is left out
    assert sorted(len(v) for v in groups.values()) == [1, 1, 2]
    assert not any("fc2" in name for names in groups.values() for name in names)
    masks = {}
    for names in groups.values():
        first = convs[names[0]]
        n = getattr(first, "out_channels", None) or first.out_features
        keep = torch.arange(n) % 2 == 1
        for name in names:
            masks[name] = channel_masks(convs[name], keep)
    reference = masked_copy(gm, masks)
    speedup = ModelSpeedup(gm, x, masks)
    assert speedup.speedup_model() is gm
    assert speedup.warnings == []
    sizes = {n: (m.weight.shape[1], m.weight.shape[0]) for n, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert sorted(sizes.values()) == sorted([(3, 4), (4, 4), (4, 8), (8 * 16, 16), (16, 10)])
    with torch.no_grad():
        assert rel_err(gm(x), reference(x)) < 1e-4


# --------------------------------------------------------------------------
# errors leave the model unchanged


def test_mask_naming_unknown_module():
    model = torchvision.models.resnet18().eval()
    snap = snapshot(model)
    masks = {"layer9.conv": {"weight": torch.ones(1)}}
    with pytest.raises(SpeedupError, match="mask for 'layer9.conv' names no module of the model"):
        ModelSpeedup(model, torch.randn(1, 3, 32, 32), masks).speedup_model()
    assert_unchanged(model, snap)


def test_mask_with_wrong_shape():
    model = simple_cnn(bn=False)
    snap = snapshot(model)
    with pytest.raises(SpeedupError, match=r"'0'.*\(3,\)"):
        ModelSpeedup(model, torch.randn(1, 3, 6, 6), {"0": {"weight": torch.ones(3)}}).speedup_model()
    assert_unchanged(model, snap)


def test_dummy_input_the_model_rejects():
    model = simple_cnn(bn=True).train()
    snap = snapshot(model)
    masks = half_masks(model)
    with pytest.raises(SpeedupError, match=r"rejected dummy_input of shape \(1, 5, 6, 6\)"):
        ModelSpeedup(model, torch.randn(1, 5, 6, 6), masks).speedup_model()
    assert_unchanged(model, snap)
    assert model.training


def test_mask_removing_every_channel():
    model = torchvision.models.resnet18().eval()
    snap = snapshot(model)
    masks = {"layer1.0.conv1": channel_masks(model.layer1[0].conv1, torch.zeros(64, dtype=torch.bool)),
             "layer2.0.conv1": channel_masks(model.layer2[0].conv1, torch.arange(128) < 64)}
    with pytest.raises(SpeedupError, match="every output channel of layer 'layer1.0.conv1'"):
        ModelSpeedup(model, torch.randn(1, 3, 32, 32), masks).speedup_model()
    assert_unchanged(model, snap)


def test_untraceable_model():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            if x.mean() > 0:
                return self.conv(x)
            return self.conv(-x)

    model = DataDependent()
    snap = snapshot(model)
    masks = {"conv": channel_masks(model.conv, torch.arange(4) < 2)}
    with pytest.raises(SpeedupError, match=r"cannot trace DataDependent.*if x.mean\(\) > 0"):
        ModelSpeedup(model, torch.randn(1, 3, 4, 4), masks).speedup_model()
    assert_unchanged(model, snap)


def test_nni_options_without_meaning_here_warn_and_are_ignored():
    model = simple_cnn(bn=False).eval()
    masks = half_masks(model)
    with pytest.warns(UserWarning, match=r"ignores NNI's option\(s\) batch_dim, customized_replacers") as record:
        speedup = ModelSpeedup(model, torch.randn(1, 3, 6, 6), masks, batch_dim=0, customized_replacers=None)
    assert "register_module_cutter" in str(record[0].message)
    speedup.speedup_model()
    assert model[0].out_channels == 4 and model[2].in_channels == 4


def test_unknown_keyword_is_a_type_error_naming_it_and_the_closest_option():
    model = simple_cnn(bn=False)
    snap = snapshot(model)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'strcit'; did you mean 'strict'\?"):
        ModelSpeedup(model, torch.randn(1, 3, 6, 6), half_masks(model), strcit=True)
    with pytest.raises(TypeError, match=r"'masks_file'; did you mean 'masks_or_file'\?"):
        ModelSpeedup(model, torch.randn(1, 3, 6, 6), None, masks_file="masks.pt")
    with pytest.raises(TypeError, match=r"'frobnicate'$"):
        ModelSpeedup(model, torch.randn(1, 3, 6, 6), half_masks(model), frobnicate=1)
    assert_unchanged(model, snap)


def test_speedup_is_fast_on_resnet50():
    import time

    model = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 64, 64)
    masks = {"layer1.0.conv1": channel_masks(model.layer1[0].conv1, torch.arange(64) < 32)}
    start = time.perf_counter()
    ModelSpeedup(model, x, masks).speedup_model()
    assert time.perf_counter() - start < 5.0
    assert model.layer1[0].conv2.in_channels == 32


class ScaleNorm(nn.Module):
    """Per-channel tensors used functionally (traced through, not a leaf layer)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(1, channels, 1, 1) + 0.5)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.rand(channels) + 1.0)

    def forward(self, x):
        return nn.functional.batch_norm(x, self.mean, self.var, None, None, False) * self.scale


def test_per_channel_parameters_of_custom_modules_are_cut_and_replayed():
    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3), ScaleNorm(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()

    model = build()
    x = torch.randn(2, 3, 7, 7)
    masks = {"0": channel_masks(model[0], torch.arange(8) >= 3)}
    reference = masked_copy(model, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert model[0].out_channels == 5 and model[3].in_channels == 5
    assert model[1].scale.shape == (1, 5, 1, 1) and isinstance(model[1].scale, nn.Parameter)
    assert model[1].mean.shape == (5,) and model[1].var.shape == (5,)
    assert speedup.plan["1.scale"] == {
        "type": "Parameter", "shape": [1, 5, 1, 1], "dim": 1, "kept": [3, 4, 5, 6, 7],
        "before": {"shape": [1, 8, 1, 1]},
    }
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-5

    fresh = apply_pruning_plan(build(), json.loads(json.dumps(speedup.plan)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh(x), model(x))
