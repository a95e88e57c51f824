"""Speedup of channel splits whose sizes change (split, tensor_split) and of grouped transposed convolutions.

Every pruned model is compared with ``masked_reference`` on random input and
replayed with ``apply_pruning_plan`` on a fresh instance (strict state_dict
load, same outputs).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from compression_core.speedup import ModelSpeedup, SpeedupError, apply_pruning_plan, masked_reference
from compression_core.speedup.replace import output_rows
from tests.compression_core.speedup_helpers import rel_err


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def channel_mask(module: nn.Module, keep: list[int]) -> dict[str, torch.Tensor]:
    """NNI mask removing the output channels where ``keep`` is 0 (grouped ConvTranspose included)."""
    weight = module.weight
    out_dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
    positions = output_rows(module, torch.arange(weight.numel()).view(weight.shape), out_dim)
    removed = torch.tensor(keep) == 0
    mask = torch.ones(weight.numel())
    mask[positions[removed].flatten()] = 0
    result = {"weight": mask.view(weight.shape)}
    if module.bias is not None:
        result["bias"] = (~removed).float()
    return result


def randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 1.5)


def speedup_exact_and_replayed(make, x: torch.Tensor, masks) -> tuple[nn.Module, ModelSpeedup]:
    """Speed up ``make()`` with ``masks``; check it against the masked reference and a replayed fresh model."""
    model = make().eval()
    randomize_bn(model)
    reference = masked_reference(model, x, masks)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    test_input = torch.randn(2, *x.shape[1:])
    fresh = apply_pruning_plan(make(), json.loads(json.dumps(speedup.plan))).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        expected = reference(test_input)
        assert rel_err(model(test_input), expected) < 1e-4
        assert rel_err(fresh(test_input), expected) < 1e-4
    return model, speedup


# --------------------------------------------------------------------------
# split and tensor_split with sizes that change


class SplitSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.sizes = [4, 8]
        self.small = nn.Conv2d(4, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.large = nn.Conv2d(8, 2, 1)
        self.mix = nn.Conv2d(3, 6, 1)
        self.mix_sizes = [1, 5]
        self.first = nn.Conv2d(1, 2, 1)
        self.rest = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), self.sizes, dim=1)
        c, d = self.mix(x).split(self.mix_sizes, dim=-3)
        return self.small(a) + self.large(self.bn(b)) + self.first(c) + self.rest(d)


def test_split_with_unequal_sizes_gives_each_piece_its_kept_channels():
    model = SplitSizes()
    masks = {"conv": channel_mask(model.conv, [1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 1]),
             "mix": channel_mask(model.mix, [1, 1, 0, 1, 1, 0])}
    model, speedup = speedup_exact_and_replayed(SplitSizes, torch.randn(1, 3, 5, 5), masks)
    assert not speedup.warnings
    assert model.sizes == [3, 4] and model.small.in_channels == 3 and model.bn.num_features == 4
    assert model.large.in_channels == 4 and model.conv.out_channels == 7
    assert model.mix_sizes == [1, 3] and model.rest.in_channels == 3
    assert speedup.plan["sizes"] == {"type": "list", "value": [3, 4], "before": {"value": [4, 8]}}


class TensorSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)
        self.cuts = (3, 7)
        self.heads = nn.ModuleList([nn.Conv2d(3, 2, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(3, 2, 1)])
        self.even = nn.Conv2d(3, 9, 1)
        self.thirds = nn.ModuleList([nn.Conv2d(3, 2, 1) for _ in range(3)])

    def forward(self, x):
        pieces = torch.tensor_split(self.conv(x), self.cuts, dim=1)
        out = sum(head(pieces[k]) for k, head in enumerate(self.heads))  # fx cannot iterate a traced tuple
        thirds = self.even(x).tensor_split(3, dim=1)  # equal sections: the count stays, no attribute needed
        return out + sum(conv(thirds[k]) for k, conv in enumerate(self.thirds))


def test_tensor_split_indices_and_equal_sections():
    model = TensorSplit()
    masks = {"conv": channel_mask(model.conv, [0, 1, 1, 1, 0, 0, 1, 1, 1, 0]),
             "even": channel_mask(model.even, [1, 0, 1, 1, 1, 0, 0, 1, 1])}  # 2, 2, 2 per third
    model, speedup = speedup_exact_and_replayed(TensorSplit, torch.randn(1, 3, 4, 4), masks)
    assert not speedup.warnings
    assert model.cuts == (2, 4) and [h.in_channels for h in model.heads] == [2, 2, 2]
    assert model.even.out_channels == 6 and [c.in_channels for c in model.thirds] == [2, 2, 2]


class SplitEvery(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.piece = 4
        self.heads = nn.ModuleList([nn.Conv2d(4, 2, 1) for _ in range(3)])

    def forward(self, x):
        pieces = self.conv(x).split(self.piece, dim=1)
        return sum(head(pieces[k]) for k, head in enumerate(self.heads))


def test_split_into_equal_pieces_keeps_the_same_count_in_each():
    model = SplitEvery()
    # the pieces lose 1, 2 and 1 channels: speedup keeps 3 in each (one masked channel restored)
    masks = {"conv": channel_mask(model.conv, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0])}
    model, speedup = speedup_exact_and_replayed(SplitEvery, torch.randn(1, 3, 4, 4), masks)
    assert not speedup.warnings
    assert model.piece == 3 and model.conv.out_channels == 9
    assert [h.in_channels for h in model.heads] == [3, 3, 3]


class SplitBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.sizes = [2, 4]

    def forward(self, x):
        a, b = torch.split(x, self.sizes, dim=1)
        return torch.cat([b, a * 2], dim=1)


class SharedSplit(nn.Module):
    """One block (one ``sizes`` attribute) called on two tensors."""

    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1)
        self.block = SplitBlock()
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.block(self.left(x)), self.block(self.right(x))], dim=1))


def test_split_sizes_shared_by_two_calls_stay_consistent():
    model = SharedSplit()
    keep = [1, 0, 1, 1, 0, 1]
    masks = {"left": channel_mask(model.left, keep), "right": channel_mask(model.right, keep)}
    model, speedup = speedup_exact_and_replayed(SharedSplit, torch.randn(1, 3, 4, 4), masks)
    assert not speedup.warnings
    assert model.block.sizes == [1, 3] and model.head.in_channels == 8


class LiteralSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.unused = [4, 8]  # equal to the literal but not what forward reads
        self.a, self.b = nn.Conv2d(4, 2, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), [4, 8], dim=1)
        return self.a(a) + self.b(b)


class SizesAlsoUsedElsewhere(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.sizes = [4, 8]
        self.a, self.b = nn.Conv2d(4, 2, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), self.sizes, dim=1)
        scale = x.new_ones(self.sizes[0])  # another number read from the attribute
        return self.a(a) * scale.sum() + self.b(b)


class SizesMeanTwoThings(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.other = nn.Conv2d(3, 12, 1), nn.Conv2d(3, 10, 1)
        self.sizes = [4, 8]  # split sizes for one call, split indices for the other
        self.a, self.b = nn.Conv2d(4, 2, 1), nn.Conv2d(8, 2, 1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), self.sizes, dim=1)
        pieces = torch.tensor_split(self.other(x), self.sizes, dim=1)
        return self.a(a) + self.b(b) + self.c(pieces[1]) + pieces[0].mean() + pieces[2].mean()


@pytest.mark.parametrize("make", [LiteralSplit, SizesAlsoUsedElsewhere, SizesMeanTwoThings])
def test_split_sizes_speedup_cannot_change_keep_their_channels(make):
    model = make()
    masks = {"conv": channel_mask(model.conv, [1, 0] * 6)}
    model, speedup = speedup_exact_and_replayed(make, torch.randn(1, 3, 4, 4), masks)
    assert model.conv.out_channels == 12
    assert any("split sizes [4, 8]" in w and "attribute" in w for w in speedup.warnings)
    assert [getattr(model, a) for a in ("unused", "sizes") if hasattr(model, a)] == [[4, 8]]  # not patched
    strict = make().eval()
    with pytest.raises(SpeedupError, match="split sizes"):
        ModelSpeedup(strict, torch.randn(1, 3, 4, 4), {"conv": channel_mask(strict.conv, [1, 0] * 6)},
                     strict=True).speedup_model()


# --------------------------------------------------------------------------
# grouped transposed convolutions


def transposed_net(dims: int, groups: int, out: int):
    conv = getattr(nn, f"Conv{dims}d")
    batch_norm = getattr(nn, f"BatchNorm{dims}d")
    transposed = getattr(nn, f"ConvTranspose{dims}d")

    def make():
        return nn.Sequential(conv(3, 8, 1), batch_norm(8), nn.ReLU(),
                             transposed(8, out, 2, stride=2, groups=groups), batch_norm(out), nn.ReLU(),
                             conv(out, 2, 1))

    return make


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups,out", [(2, 8), (8, 8), (4, 12)], ids=["grouped", "depthwise", "wider"])
def test_grouped_conv_transpose_keeps_equal_channels_per_group(dims, groups, out):
    make = transposed_net(dims, groups, out)
    model = make()
    # groups of two inputs lose 1, 1, 0, 1 channels (grouped: one masked channel is restored in group 2)
    masks = {"0": channel_mask(model[0], [1, 0, 0, 1, 1, 1, 0, 1])}
    if out == 12:  # and the transposed conv loses the middle output of every group of three
        masks["3"] = channel_mask(model[3], [1, 0, 1] * 4)
    x = torch.randn(1, 3, *[4] * dims)
    model, speedup = speedup_exact_and_replayed(make, x, masks)
    assert not speedup.warnings
    up = model[3]
    expected_in = {2: 6, 8: 5, 4: 8}[groups]  # depthwise: any count; grouped: equal per group
    assert up.in_channels == model[0].out_channels == expected_in
    assert up.out_channels == {8: expected_in, 12: 8}[out] == model[4].num_features == model[6].in_channels
    assert up.groups == (expected_in if groups == 8 else groups)


class TwoUpsamplings(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.ConvTranspose2d(3, 12, 2, stride=2, groups=3)
        self.conv = nn.Conv2d(3, 8, 1)
        self.depthwise = nn.ConvTranspose2d(8, 8, 2, stride=2, groups=8)
        self.head = nn.Conv2d(20, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([torch.relu(self.grouped(x)), self.depthwise(self.conv(x))], dim=1))


def test_pruners_and_dependency_groups_handle_grouped_conv_transpose():
    from compression_core.pruning import L1NormPruner
    from compression_core.speedup import auto_set_dependency_group_ids

    model = TwoUpsamplings().eval()
    x = torch.randn(1, 3, 4, 4)
    config = auto_set_dependency_group_ids(
        model, [{"op_types": ["Conv2d", "ConvTranspose2d"], "sparse_ratio": 0.5}], x
    )
    # the depthwise one loses the channels of "conv" (pruners index a ConvTranspose's outputs by columns)
    assert [entry["op_names"] for entry in config] == [["grouped"], ["conv"]]
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    reference = masked_reference(model, x, masks)
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.grouped.out_channels == 6 and model.conv.out_channels == model.depthwise.groups == 4
    assert model.head.in_channels == 10
    test_input = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert rel_err(model(test_input), reference(test_input)) < 1e-4
