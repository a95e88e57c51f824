"""Speedup beyond plain convolutions: norms, embeddings, tolerant tracing, strict mode, rules, report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from compression_core.speedup import (
    ModelSpeedup,
    SpeedupError,
    masked_reference,
    prunability_report,
    register_channel_rule,
    register_module_cutter,
)
from compression_core.dependency.rule_table import RULES
from compression_core.speedup.replace import MODULE_CUTTERS, cut_tensor, shallow_copy
from tests.compression_core.speedup_helpers import rel_err


def channel_masks(module: nn.Module, keep: torch.Tensor, dim: int = 0) -> dict[str, torch.Tensor]:
    weight = module.weight
    shape = [1] * weight.dim()
    shape[dim] = -1
    mask = {"weight": keep.to(weight.dtype).view(shape).expand_as(weight).clone()}
    if getattr(module, "bias", None) is not None and dim == 0:
        mask["bias"] = keep.to(weight.dtype).clone()
    return mask


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------
# grouped convolutions, chunk and channel shuffle


def test_grouped_conv_with_uneven_masks_keeps_equal_counts_per_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                          nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 6, 6)
    # group 0 loses 3 channels, group 1 loses 1: speedup keeps 3 per group (one masked channel restored)
    masks = {"0": channel_masks(model[0], torch.tensor([0, 0, 0, 1, 1, 1, 0, 1]).bool())}
    ref = masked_reference(model, x, masks)
    ModelSpeedup(model, x, masks).speedup_model()
    assert model[2].in_channels == model[2].out_channels == 6 and model[2].groups == 2
    assert model[0].out_channels == 6
    y = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert rel_err(model(y), ref(y)) < 1e-5


def test_grouped_conv_with_different_widths_is_a_producer():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.Conv2d(16, 2, 1)).eval()
    x = torch.randn(1, 3, 5, 5)
    keep = (torch.arange(16) % 4) < 2  # two of four channels in each group
    masks = {"1": channel_masks(model[1], keep)}
    ref = masked_reference(model, x, masks)
    ModelSpeedup(model, x, masks).speedup_model()
    assert model[1].out_channels == 8 and model[1].in_channels == 8 and model[2].in_channels == 8
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


class ChunkShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        x1, x2 = y.chunk(2, dim=1)
        y = torch.cat([x1, self.b(x2)], dim=1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.out(y)


def test_chunk_and_channel_shuffle_are_exact():
    model = ChunkShuffle().eval()
    x = torch.randn(1, 3, 5, 5)
    masks = {"a": channel_masks(model.a, torch.tensor([1, 0, 1, 1, 1, 0, 1, 1]).bool()),
             "b": channel_masks(model.b, torch.tensor([1, 0, 1, 1]).bool())}
    ref = masked_reference(model, x, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert not speedup.warnings
    # channel 1 of each half goes (shuffle ties x1[i] to b's output i; chunk needs equal halves)
    assert model.a.out_channels == 6 and model.b.out_channels == 3 and model.out.in_channels == 6
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


# --------------------------------------------------------------------------
# LayerNorm, GroupNorm, Embedding


def test_layernorm_groupnorm_and_embedding_are_cut():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.ln = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 3)
            self.conv = nn.Conv2d(3, 8, 1)
            self.gn = nn.GroupNorm(2, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, tokens, image):
            a = self.fc(self.ln(self.emb(tokens)))
            b = self.head(self.gn(self.conv(image)))
            return a, b

    model = Net().eval()
    inputs = (torch.randint(0, 10, (2, 5)), torch.randn(2, 3, 4, 4))
    masks = {"emb": channel_masks(model.emb, torch.arange(8) < 6, dim=1),
             "conv": channel_masks(model.conv, torch.tensor([1, 1, 0, 0, 1, 1, 0, 0]).bool())}
    ModelSpeedup(model, inputs, masks).speedup_model()
    assert model.emb.embedding_dim == 6 and model.ln.normalized_shape == (6,) and model.fc.in_features == 6
    assert model.gn.num_channels == 4 and model.gn.weight.shape == (4,) and model.head.in_channels == 4
    a, b = model(*inputs)
    assert a.shape == (2, 5, 3) and b.shape == (2, 2, 4, 4)


# --------------------------------------------------------------------------
# tolerant tracing


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        if x.sum() > 0:  # fx cannot trace this
            return self.conv(x)
        return x


class WithUntraceablePart(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.odd = DataDependent()
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.odd(self.a(x)))))


def test_untraceable_submodule_becomes_an_opaque_leaf():
    model = WithUntraceablePart().eval()
    x = torch.rand(1, 3, 4, 4)
    masks = {"a": channel_masks(model.a, torch.arange(8) < 4), "b": channel_masks(model.b, torch.arange(8) < 4)}
    ref = copy.deepcopy(model)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert model.a.out_channels == 8  # feeds the opaque submodule: kept
    assert model.b.out_channels == 4 and model.c.in_channels == 4  # the rest is still pruned
    assert any("odd" in w for w in speedup.warnings)
    report = prunability_report(ref, x)
    assert any(u["layer"] == "odd" for u in report["unprunable"])


# --------------------------------------------------------------------------
# strict mode and the extension point


class Scale(nn.Module):
    """A custom per-channel scale speedup does not know."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        return x * self.gain.view(1, -1, 1, 1)


class WithScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.scale = Scale(8)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.b(self.scale(self.a(x)))


class Opaque(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=1)


def test_strict_mode_names_the_unknown_op_and_node():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Opaque(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.rand(1, 3, 4, 4)
    masks = {"0": channel_masks(model[0], torch.arange(8) < 4)}
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(SpeedupError, match=r"roll.*node 'roll'.*register_channel_rule"):
        ModelSpeedup(model, x, masks, strict=True).speedup_model()
    assert model[0].out_channels == 8 and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    speedup = ModelSpeedup(model, x, masks)  # default: keep the channels, warn
    speedup.speedup_model()
    assert model[0].out_channels == 8 and any("roll" in w for w in speedup.warnings)


@pytest.fixture
def scale_rule():
    def cut_scale(module, kept_out, kept_in, mask):
        new = shallow_copy(module)
        if kept_out is not None:
            new.gain = cut_tensor(module.gain, 0, kept_out)
        return new

    register_channel_rule(Scale, "channelwise")
    register_module_cutter(Scale, cut_scale)
    yield
    RULES.remove(Scale)
    MODULE_CUTTERS.pop(Scale, None)


def test_registered_rule_and_cutter_prune_a_custom_module(scale_rule):
    model = WithScale().eval()
    x = torch.rand(1, 3, 4, 4)
    masks = {"a": channel_masks(model.a, torch.arange(8) % 2 == 0)}
    ref = masked_reference(model, x, masks)
    speedup = ModelSpeedup(model, x, masks, strict=True)
    speedup.speedup_model()
    assert model.a.out_channels == 4 and model.scale.gain.shape == (4,) and model.b.in_channels == 4
    assert "scale" in speedup.plan
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_unregistered_custom_module_is_kept():
    model = WithScale().eval()
    x = torch.rand(1, 3, 4, 4)
    masks = {"a": channel_masks(model.a, torch.arange(8) % 2 == 0)}
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.a.out_channels == 8  # traced into: its gain goes through a view speedup cannot tie
    with torch.no_grad():
        assert model(x).shape == (1, 2, 4, 4)


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.b(self.a(x).roll(1, dims=-1))


@pytest.fixture
def roll_rule():
    register_channel_rule(torch.Tensor.roll, "passthrough")
    yield
    RULES.remove(torch.Tensor.roll)


def test_a_tensor_method_gets_a_registered_rule(roll_rule):
    model = Rolled().eval()
    x = torch.rand(1, 3, 4, 4)
    masks = {"a": channel_masks(model.a, torch.arange(8) % 2 == 0)}
    ref = masked_reference(model, x, masks)
    ModelSpeedup(model, x, masks, strict=True).speedup_model()
    assert model.a.out_channels == 4 and model.b.in_channels == 4
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


def test_unregistered_tensor_method_keeps_the_channels():
    model = Rolled().eval()
    masks = {"a": channel_masks(model.a, torch.arange(8) % 2 == 0)}
    speedup = ModelSpeedup(model, torch.rand(1, 3, 4, 4), masks)
    speedup.speedup_model()
    assert model.a.out_channels == 8 and any("Tensor.roll" in w for w in speedup.warnings)


def test_bad_rule_is_rejected():
    with pytest.raises(ValueError, match="channel rule"):
        register_channel_rule(Scale, "sideways")
    with pytest.raises(ValueError, match="module class, a function or a torch.Tensor method"):
        register_channel_rule("Scale", "pin")


# --------------------------------------------------------------------------
# prunability report


def test_prunability_report_is_json_and_names_blockers():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Opaque(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    report = prunability_report(model, torch.rand(1, 3, 4, 4))
    json.dumps(report)
    groups = {tuple(g["layers"]): g for g in report["groups"]}
    assert groups[("0",)]["prunable"] is False and "roll" in groups[("0",)]["reason"]
    assert groups[("2",)]["prunable"] is True and groups[("2",)]["channels"] == 8
    assert groups[("4",)]["prunable"] is False and groups[("4",)]["reason"] == "model output"
    (blocker,) = report["unprunable"]
    assert blocker["node"] == "roll" and "roll" in blocker["op"] and blocker["layer"] == "1"
    assert report["warnings"]


@pytest.mark.parametrize("arch", ["resnext", "shufflenet"])
def test_pruning_plan_replays_grouped_and_shuffled_models(arch):
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    from compression_core.pruning import L1NormPruner
    from compression_core.speedup import apply_pruning_plan, auto_set_dependency_group_ids

    def make():
        if arch == "resnext":
            return ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10)
        return ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)

    model, x = make().eval(), torch.rand(1, 3, 48, 48)
    config = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    fresh = apply_pruning_plan(make(), json.loads(json.dumps(speedup.plan))).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert rel_err(fresh(x), model(x)) < 1e-5


class _ResidualWithLinear(nn.Module):
    """A conv stream that a Linear layer (channels-last) writes back into, as in ConvNeXt."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)


def test_unselected_coupled_producers_join_the_group_unless_excluded():
    from compression_core.pruning import L1NormPruner
    from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

    model = _ResidualWithLinear().eval()
    x = torch.randn(1, 3, 6, 6)
    config = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    by_name = {entry["op_names"][0]: entry for entry in config}
    assert set(by_name) == {"stem", "mix"}  # "head" makes the model output: left out
    assert by_name["mix"]["dependency_group_id"] == by_name["stem"]["dependency_group_id"]
    assert by_name["mix"]["sparse_ratio"] == 0.5
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.stem.out_channels == 4 and model.mix.out_features == 4 and model.head.in_channels == 4

    kept = _ResidualWithLinear().eval()
    config = auto_set_dependency_group_ids(
        kept, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "exclude_op_names": ["mix"]}], x
    )
    assert "mix" not in {entry["op_names"][0] for entry in config}
