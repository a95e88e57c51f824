"""Pruning a transformer's embedding width: attention channels, fixed-size reshapes, class token, plan."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
import torchvision

from compression_core.analysis import count_flops_params
from compression_core.models.attention import PrunedMultiheadAttention, head_mask
from compression_core.pruning import L1NormPruner
from compression_core.speedup import (
    ModelSpeedup,
    SpeedupError,
    apply_pruning_plan,
    auto_set_dependency_group_ids,
    masked_reference,
    plan_from_state_dict,
    prunability_report,
)
from compression_core.speedup.attention import cut_attention
from tests.compression_core.speedup_helpers import onnx_output, rel_err

FULL = ["Conv2d", "MultiheadAttention", "Linear"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=False)
        x = x + y
        return x + self.mlp(x)


class TinyViT(nn.Module):
    """torchvision's ViT without LayerNorm (which renormalises over the kept channels, so is not exact)."""

    def __init__(self, hidden_dim: int = 32, heads: int = 4, layers: int = 2, patch: int = 4, image: int = 16):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.patch_size = patch
        self.conv_proj = nn.Conv2d(3, hidden_dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, hidden_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, hidden_dim))
        self.blocks = nn.Sequential(*[Block(hidden_dim, heads) for _ in range(layers)])
        self.head = nn.Linear(hidden_dim, 10)

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.blocks(x)[:, 0])


def prune(model: nn.Module, x, op_types=FULL, exclude=("head",)):
    config = [{"op_types": list(op_types), "sparse_ratio": 0.5, "exclude_op_names": list(exclude)}]
    config = auto_set_dependency_group_ids(model, config, x)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


# --------------------------------------------------------------------------
# a small transformer without LayerNorm: exact


@pytest.mark.parametrize("op_types, heads", [(FULL, 2), (["Conv2d"], 4)], ids=["width-and-heads", "width-only"])
def test_tiny_vit_width_is_exact_and_replans(op_types, heads):
    model = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    masks = prune(model, x, op_types)
    reference = masked_reference(model, x, masks)
    flops_before = count_flops_params(model, x)[0]
    speedup = ModelSpeedup(model, x, masks, strict=True)
    speedup.speedup_model()

    assert model.hidden_dim == 16 and model.conv_proj.out_channels == 16
    assert model.class_token.shape == (1, 1, 16) and model.pos_embedding.shape == (1, 17, 16)
    for block in model.blocks:
        attn = block.attn
        assert isinstance(attn, PrunedMultiheadAttention)
        assert (attn.embed_dim, attn.qdim, attn.num_heads, attn.head_dim) == (16, 16, heads, 8)
        assert attn.in_proj_weight.shape == (3 * heads * 8, 16) and attn.out_proj.weight.shape == (16, heads * 8)
        assert block.mlp[0].in_features == 16 and block.mlp[2].out_features == 16
    assert model.head.in_features == 16
    y = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        got = model(y)
        assert rel_err(got, reference(y)) < 1e-4
    assert count_flops_params(model, x)[0] < 0.6 * flops_before

    plan = json.loads(json.dumps(speedup.plan))
    assert plan["hidden_dim"] == {"type": "int", "value": 16, "before": {"value": 32}}
    assert plan["class_token"]["shape"] == [1, 1, 16]
    fresh = apply_pruning_plan(TinyViT(), plan)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.hidden_dim == 16
    with torch.no_grad():
        assert rel_err(fresh.eval()(y), got) < 1e-6


def test_report_names_the_attention_output_projection_in_the_residual_group():
    report = prunability_report(TinyViT(), torch.rand(1, 3, 16, 16))
    residual = next(g for g in report["groups"] if "conv_proj" in g["layers"])
    assert residual["prunable"] and residual["prunable_channels"] == 32
    assert {"blocks.0.attn.out_proj", "blocks.0.mlp.2", "blocks.1.attn.out_proj"} <= set(residual["layers"])
    assert report["unprunable"] == []


def test_out_proj_mask_is_applied_while_the_pruner_is_attached():
    model = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    config = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    with torch.no_grad():
        model(x)  # the attention layer's hook masks its out_proj, which it never calls
    rows = masks["blocks.0.attn.out_proj"]["weight"][:, 0] == 0
    assert rows.sum() == 16 and float(model.blocks[0].attn.out_proj.weight.detach()[rows].abs().sum()) == 0.0
    pruner.unwrap_model()


class TwoEqualAttributes(TinyViT):
    def __init__(self):
        super().__init__()
        self.token_dim = self.hidden_dim  # equal to the literal, but forward never reads it


def test_reshape_follows_the_attribute_forward_reads():
    model = TwoEqualAttributes().eval()
    x = torch.rand(1, 3, 16, 16)
    speedup = ModelSpeedup(model, x, prune(model, x), strict=True)
    speedup.speedup_model()
    assert (model.hidden_dim, model.token_dim) == (16, 32) and "token_dim" not in speedup.plan


class LiteralWidth(TinyViT):
    def __init__(self):
        super().__init__()
        del self.hidden_dim  # no attribute holds the width the forward spells out

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, 32, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.blocks(x)[:, 0])


class ScaledWidth(TinyViT):
    def forward(self, x):
        # the attribute also feeds a number that is not a channel count: changing it would change the math
        return super().forward(x * self.hidden_dim ** -0.5)


@pytest.mark.parametrize("cls", [LiteralWidth, ScaledWidth])
def test_fixed_reshape_without_an_attribute_to_follow_stays_pinned(cls):
    report = prunability_report(cls(), torch.rand(1, 3, 16, 16))
    residual = next(g for g in report["groups"] if "conv_proj" in g["layers"])
    assert not residual["prunable"] and "channel count 32 cannot follow the pruned channels" in residual["reason"]


def test_failing_speedup_restores_modules_tensors_and_int_attributes():
    model = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    masks = prune(model, x)

    def expects_width_32(module, args):  # the model's own hooks run in the real model only, not while tracing
        if module.hidden_dim != 32:
            raise RuntimeError("this hook expects width 32")

    model.register_forward_pre_hook(expects_width_32)
    state = copy.deepcopy(model.state_dict())
    modules = dict(model.named_modules())
    with pytest.raises(SpeedupError, match="width 32"):
        ModelSpeedup(model, x, masks).speedup_model()
    assert model.hidden_dim == 32 and dict(model.named_modules()) == modules
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_plan_that_does_not_fit_leaves_the_model_unchanged():
    model = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    speedup = ModelSpeedup(model, x, prune(model, x))
    speedup.speedup_model()
    fresh = TinyViT(hidden_dim=32)
    fresh.hidden_dim = 48  # not what the plan was made for
    modules = dict(fresh.named_modules())
    with pytest.raises(SpeedupError, match="hidden_dim"):
        apply_pruning_plan(fresh, speedup.plan)
    assert fresh.hidden_dim == 48 and dict(fresh.named_modules()) == modules
    assert fresh.class_token.shape == (1, 1, 32)


# --------------------------------------------------------------------------
# every nn.MultiheadAttention option, heads and channels cut


OPTIONS = {
    "bias_kv": {"add_bias_kv": True},
    "zero_attn": {"add_zero_attn": True},
    "kdim_vdim": {"kdim": 12, "vdim": 10},
    "all": {"kdim": 12, "vdim": 10, "add_bias_kv": True, "add_zero_attn": True, "bias": False},
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_cut_attention_equals_the_masked_layer(options, batch_first):
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, **OPTIONS[options]).eval()
    kdim, vdim = mha.kdim, mha.vdim
    kept_heads = torch.tensor([True, False, True, True])
    mask = head_mask(mha, kept_heads)
    masked = copy.deepcopy(mha)
    with torch.no_grad():
        for name, pmask in mask.items():
            owner = masked.out_proj if name.startswith("out_proj.") else masked
            getattr(owner, name.rpartition(".")[2]).mul_(pmask)
    kept_out, kept_in = [0, 2, 3, 5, 8, 9, 15], [1, 2, 4, 6, 7, 11, 12, 13, 14]
    kept_key, kept_value = ([0, 3, 4, 7, 11], [1, 2, 5, 9]) if kdim != 16 else (None, None)
    small = cut_attention(mha, [0, 2, 3], mask, kept_out, kept_in, kept_key, kept_value)
    assert small.num_heads == 3 and small.embed_dim == 7 and small.qdim == 9
    if kept_key is not None:
        assert (small.kdim, small.vdim, small.in_proj_weight) == (5, 4, None)
        assert small.k_proj_weight.shape == (12, 5) and small.v_proj_weight.shape == (12, 4)
    if mha.bias_k is not None:
        assert small.bias_k.shape == small.bias_v.shape == (1, 1, 12)

    def inputs(width: int, length: int, kept):
        full = torch.randn(2, length, width) if batch_first else torch.randn(length, 2, width)
        zero = torch.zeros(width)
        zero[kept if kept is not None else slice(None)] = 1.0
        full = full * zero  # removed input channels are zero in the masked model
        return full, full[..., kept] if kept is not None else full

    q, q_small = inputs(16, 5, kept_in)
    k, k_small = inputs(kdim, 7, kept_key if kept_key is not None else kept_in)
    v, v_small = inputs(vdim, 7, kept_value if kept_value is not None else kept_in)
    if kdim == 16:
        v, v_small = k, k_small  # packed projections read key and value through the same columns
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[0, -2:] = True
    cases = [
        {"need_weights": False},
        {"key_padding_mask": kpm},
        {"attn_mask": torch.randn(2 * 4, 5, 7), "need_weights": False},  # per original head
        {"attn_mask": torch.randn(5, 7), "key_padding_mask": torch.zeros(2, 7).masked_fill(kpm, float("-inf")),
         "need_weights": False},
    ]
    with torch.no_grad():
        for kwargs in cases:
            got, weights = small(q_small, k_small, v_small, **kwargs)
            want, _ = masked(q, k, v, **kwargs)
            assert got.shape[-1] == 7 and rel_err(got, want[..., kept_out]) < 1e-5, kwargs
            if kwargs.get("need_weights", True):
                assert weights.shape[-1] == 7 + int(mha.bias_k is not None) + int(mha.add_zero_attn)
        self_q, self_q_small = inputs(16, 5, kept_in)
        if kdim == 16:  # self-attention, one packed matmul
            got, _ = small(self_q_small, self_q_small, self_q_small, need_weights=False)
            want, _ = masked(self_q, self_q, self_q, need_weights=False)
            assert rel_err(got, want[..., kept_out]) < 1e-5


class CrossAttention(nn.Module):
    """Queries from one stream, keys and values from another: separate projections of their own widths."""

    def __init__(self):
        super().__init__()
        self.q_in = nn.Linear(8, 32)
        self.k_in = nn.Linear(6, 24)
        self.v_in = nn.Linear(6, 20)
        self.attn = nn.MultiheadAttention(32, 4, kdim=24, vdim=20, add_bias_kv=True, batch_first=True)
        self.out = nn.Linear(32, 5)

    def forward(self, x, memory):
        q = self.q_in(x)
        y, _ = self.attn(q, self.k_in(memory), self.v_in(memory), need_weights=False)
        return self.out(q + y)


def test_cross_attention_with_kdim_vdim_and_bias_kv_is_exact():
    model = CrossAttention().eval()
    x = (torch.randn(2, 5, 8), torch.randn(2, 7, 6))
    masks = prune(model, x, ["Linear", "MultiheadAttention"], exclude=("out",))
    reference = masked_reference(model, x, masks)
    speedup = ModelSpeedup(model, x, masks, strict=True)
    speedup.speedup_model()
    attn = model.attn
    assert (attn.embed_dim, attn.kdim, attn.vdim, attn.num_heads) == (16, 12, 10, 2)
    assert attn.bias_k.shape == (1, 1, 16) and model.out.in_features == 16
    y = (torch.randn(3, 5, 8), torch.randn(3, 9, 6))
    with torch.no_grad():
        assert rel_err(model(*y), reference(*y)) < 1e-4
    fresh = apply_pruning_plan(CrossAttention(), json.loads(json.dumps(speedup.plan)))
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_weights_only_plan_rebuilds_pruned_attention_layers():
    model = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    masks = prune(model, x, ["MultiheadAttention", "Linear"], exclude=("head", "blocks.0.mlp.2", "blocks.1.mlp.2"))
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.blocks[0].attn.num_heads == 2 and model.hidden_dim == 32
    fresh = TinyViT()
    plan = plan_from_state_dict(fresh, model.state_dict())
    assert {"blocks.0.attn", "blocks.1.attn"} <= set(plan) and "blocks.0.attn.out_proj" not in plan
    apply_pruning_plan(fresh, plan)
    fresh.load_state_dict(model.state_dict(), strict=True)
    y = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert rel_err(fresh.eval()(y), model(y)) < 1e-6


# --------------------------------------------------------------------------
# torchvision's vit_b_16


def _vit_b_16() -> nn.Module:
    return torchvision.models.vit_b_16(weights=None).eval()


@pytest.mark.slow
def test_vit_b_16_width_heads_and_mlp_halve(tmp_path):
    model = _vit_b_16()
    x = torch.randn(1, 3, 224, 224)
    speedup = ModelSpeedup(model, x, prune(model, x, exclude=("heads.head",)), strict=True)
    speedup.speedup_model()

    assert model.hidden_dim == 384 and model.conv_proj.out_channels == 384
    assert model.class_token.shape == (1, 1, 384) and model.encoder.pos_embedding.shape == (1, 197, 384)
    assert all(m.normalized_shape == (384,) for m in model.modules() if isinstance(m, nn.LayerNorm))
    for layer in model.encoder.layers:
        attn = layer.self_attention
        assert (attn.embed_dim, attn.qdim, attn.num_heads, attn.head_dim) == (384, 384, 6, 64)
        assert layer.mlp[0].out_features == 1536 and layer.mlp[3].out_features == 384
    assert model.heads.head.in_features == 384
    with torch.no_grad():
        got = model(x)
    assert got.shape == (1, 1000) and torch.isfinite(got).all()

    fresh = apply_pruning_plan(_vit_b_16(), json.loads(json.dumps(speedup.plan)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert rel_err(fresh(x), got) < 1e-6

    pytest.importorskip("onnxruntime")
    assert rel_err(onnx_output(model, x, tmp_path / "vit_b_16.onnx"), got) < 1e-4


@pytest.mark.slow
def test_vit_b_16_width_only_keeps_every_head():
    model = _vit_b_16()
    x = torch.randn(1, 3, 224, 224)
    ModelSpeedup(model, x, prune(model, x, ["Conv2d"], exclude=())).speedup_model()
    assert model.hidden_dim == 384 and model.heads.head.in_features == 384
    for layer in model.encoder.layers:
        attn = layer.self_attention
        assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (384, 12, 64)
        assert attn.in_proj_weight.shape == (3 * 768, 384) and layer.mlp[0].out_features == 3072
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
