"""Exactness of speedup on real architectures.

Every model is pruned 50% with L1NormPruner in dependency-aware mode
(``auto_set_dependency_group_ids`` on Conv2d and Linear, never the
classifier), sped up, and compared with ``masked_reference`` (the original
model with every removed channel zero through its whole group) on random
input. BatchNorm statistics are randomised so that BN(0) != 0 matters. Each
model must really lose parameters: a model whose channels all stay pinned
fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.models.vision_transformer import VisionTransformer

from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids, masked_reference


def randomize_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def prune_half(model: nn.Module, x: torch.Tensor) -> dict:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    config = [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5, "exclude_op_names": linears[-1:]}]
    config = auto_set_dependency_group_ids(model, config, x)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_exact(model: nn.Module, size: int, max_ratio: float = 0.8) -> tuple[float, float]:
    """Prune, speed up, compare with the masked reference; returns (param ratio, relative error)."""
    torch.manual_seed(0)
    model.eval()
    randomize_bn(model)
    x = torch.rand(1, 3, size, size)
    masks = prune_half(model, x)
    reference = masked_reference(model, x, masks)
    assert reference.removed_channels > 0
    before = n_params(model)
    ModelSpeedup(model, x, masks).speedup_model()
    ratio = n_params(model) / before
    test_input = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got, expected = model(test_input), reference(test_input)
    err = float((got - expected).abs().max() / expected.abs().max())
    assert got.shape == expected.shape
    assert err < 1e-4, f"relative error {err:.2e}"
    assert ratio < max_ratio, f"parameters only dropped to {ratio:.2f} of the original"
    return ratio, err


# --------------------------------------------------------------------------
# small variants of the same architectures (fast)

SMALL = {
    "resnet_basic": lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10),
    "shufflenet_v2": lambda: ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.35),
    "mobilenet_v3": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
    "squeezenet": lambda: torchvision.models.squeezenet1_1(num_classes=10),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_architectures_are_exact(name):
    check_exact(SMALL[name](), 32)


def test_grouped_conv_channels_are_removed_per_group():
    model = ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10)
    check_exact(model, 48)
    conv = model.layer1[0].conv2
    assert conv.groups == 8 and conv.in_channels < 32 and conv.in_channels % 8 == 0


def test_channel_shuffle_keeps_channels_of_both_halves():
    model = ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)
    check_exact(model, 48)
    # the main path (through split + shuffle) lost channels too, not only the branches
    assert model.stage2[1].branch2[0].in_channels < 16


# --------------------------------------------------------------------------
# the coverage list at full width, small inputs (slow, bounded: ~1.5 min on a loaded 2-core machine)

COVERAGE = {
    "alexnet": 64, "vgg11": 32, "resnet18": 32, "resnet50": 32, "resnext50_32x4d": 32, "wide_resnet50_2": 32,
    "densenet121": 32, "googlenet": 32, "inception_v3": 75, "mobilenet_v2": 32, "mobilenet_v3_large": 32,
    "mnasnet0_5": 32, "efficientnet_b0": 32, "regnet_y_400mf": 32, "shufflenet_v2_x0_5": 32,
    "squeezenet1_0": 32,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COVERAGE))
def test_torchvision_coverage_is_exact(name):
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(**kwargs)
    check_exact(model, COVERAGE[name])


def shrinks_and_runs(model: nn.Module, x: torch.Tensor, max_ratio: float) -> ModelSpeedup:
    model.eval()
    masks = prune_half(model, x)
    before = n_params(model)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert n_params(model) / before < max_ratio
    with torch.no_grad():
        out = model(torch.rand(2, *x.shape[1:]))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    return speedup


@pytest.mark.slow
def test_convnext_tiny_shrinks_and_runs():
    model = torchvision.models.convnext_tiny()
    shrinks_and_runs(model, torch.rand(1, 3, 32, 32), 0.5)
    block = model.features[1][0].block
    assert block[3].out_features < 384 and block[2].normalized_shape[0] == block[3].in_features


def test_vit_mlp_shrinks_and_runs():
    # same structure as vit_b_16, smaller sizes
    model = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    shrinks_and_runs(model, torch.rand(1, 3, 32, 32), 0.95)
    assert model.encoder.layers[0].mlp[0].out_features == 64
    assert model.encoder.layers[0].mlp[3].in_features == 64
