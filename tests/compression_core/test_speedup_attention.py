"""Head pruning of nn.MultiheadAttention: pruner masks, speedup, exactness, plan, ONNX."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

from compression_core.models.attention import PrunedMultiheadAttention, head_mask
from compression_core.pruning import L1NormPruner, LevelPruner
from compression_core.speedup import (
    ModelSpeedup,
    SpeedupError,
    apply_pruning_plan,
    auto_set_dependency_group_ids,
    masked_reference,
    prunability_report,
)
from compression_core.speedup.attention import cut_attention
from tests.compression_core.speedup_helpers import onnx_output, rel_err

# Heads and MLP hidden channels only: selecting the MLP's output Linear (it writes into the
# residual stream) would prune the embedding width too, see test_speedup_vit_width.py.
CONFIG = [
    {"op_types": ["MultiheadAttention"], "sparse_ratio": 0.5},
    {"op_types": ["Linear"], "op_names_re": [r".*\.mlp\.0"], "sparse_ratio": 0.5},
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_vit() -> nn.Module:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                             mlp_dim=128).eval()


def prune(model: nn.Module, x: torch.Tensor, config=CONFIG):
    config = auto_set_dependency_group_ids(model, config, x)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


# --------------------------------------------------------------------------
# the pruner


def test_l1_pruner_masks_whole_heads_of_smallest_norm():
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        w = mha.in_proj_weight.view(3, 4, 4, 16)
        w[:, 1] *= 0.01
        w[:, 3] *= 0.02
    model = nn.Sequential()
    model.add_module("attn", mha)
    pruner = L1NormPruner(model, [{"op_types": ["MultiheadAttention"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    mask = masks["attn"]
    assert set(mask) == {"in_proj_weight", "in_proj_bias", "out_proj.weight"}
    kept = mask["in_proj_weight"].view(3, 4, 4, 16)[0, :, 0, 0]
    assert kept.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert mask["out_proj.weight"].view(16, 4, 4)[0, :, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    pruner.unwrap_model()
    with torch.no_grad():
        assert float(mha.out_proj.weight.view(16, 4, 4)[:, 1].abs().sum()) == 0.0
        assert float(mha.in_proj_bias.view(3, 4, 4)[:, 3].abs().sum()) == 0.0
    assert pruner.sparsity_report()["attn"] == pytest.approx(0.5)


def test_level_pruner_masks_attention_projections():
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    _, masks = LevelPruner(model, [{"op_types": ["MultiheadAttention"], "sparsity": 0.5}]).compress()
    assert int(masks["0"]["in_proj_weight"].sum()) == 96 and int(masks["0"]["out_proj.weight"].sum()) == 32


def test_unsupported_attention_is_a_clear_error():
    class ScaledAttention(nn.MultiheadAttention):
        def forward(self, query, key, value, **kwargs):
            return super().forward(query * 2, key, value, **kwargs)

    model = nn.Sequential(ScaledAttention(8, 2))
    with pytest.raises(ValueError, match="its own forward"):
        L1NormPruner(model, [{"op_types": ["ScaledAttention"], "sparse_ratio": 0.5}])


# --------------------------------------------------------------------------
# the pruned module itself


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_pruned_module_equals_masked_attention(batch_first, bias):
    mha = nn.MultiheadAttention(16, 4, bias=bias, batch_first=batch_first).eval()
    kept = torch.tensor([True, False, True, True])
    mask = head_mask(mha, kept)
    masked = copy.deepcopy(mha)
    with torch.no_grad():
        masked.in_proj_weight.mul_(mask["in_proj_weight"])
        masked.out_proj.weight.mul_(mask["out_proj.weight"])
        if bias:
            masked.in_proj_bias.mul_(mask["in_proj_bias"])
    small = cut_attention(mha, [0, 2, 3], mask)
    assert isinstance(small, PrunedMultiheadAttention) and small.num_heads == 3
    assert small.in_proj_weight.shape == (36, 16) and small.out_proj.weight.shape == (16, 12)
    q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    kv = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[0, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    per_head = torch.randn(2 * 4, 5, 7)  # (N * original heads, L, S)
    with torch.no_grad():
        cases = [
            ((q, q, q), {"need_weights": False}),
            ((q, kv, kv), {"key_padding_mask": kpm}),
            ((q, kv, kv), {"attn_mask": per_head, "need_weights": False}),
            ((q, q, q), {"attn_mask": causal, "is_causal": True, "need_weights": False}),
        ]
        for args, kwargs in cases:
            got, weights = small(*args, **kwargs)
            want, _ = masked(*args, **kwargs)
            assert got.shape == want.shape
            assert rel_err(got, want) < 1e-5, kwargs
            assert (weights is None) == (kwargs.get("need_weights", True) is False)
        # unbatched input
        got, _ = small(q[0] if batch_first else q[:, 0], kv[0] if batch_first else kv[:, 0],
                       kv[0] if batch_first else kv[:, 0])
        want, _ = masked(q[0] if batch_first else q[:, 0], kv[0] if batch_first else kv[:, 0],
                         kv[0] if batch_first else kv[:, 0])
        assert rel_err(got, want) < 1e-5
        # weights: kept heads only, averaged or per head
        _, w_avg = small(q, q, q)
        _, w_all = small(q, q, q, average_attn_weights=False)
        assert w_avg.shape == (2, 5, 5) and w_all.shape == (2, 3, 5, 5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_standalone_attention_speedup(batch_first):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 8, batch_first=batch_first)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            y, _ = self.attn(x, x, x, need_weights=False)
            return self.fc(x + y)

    model = Block().eval()
    x = torch.randn(2, 6, 32) if batch_first else torch.randn(6, 2, 32)
    masks = prune(model, x, [{"op_types": ["MultiheadAttention"], "sparse_ratio": 0.75}])
    reference = masked_reference(model, x, masks)
    speedup = ModelSpeedup(model, x, masks, strict=True)
    speedup.speedup_model()
    assert isinstance(model.attn, PrunedMultiheadAttention) and model.attn.num_heads == 2
    y = torch.randn_like(x)
    with torch.no_grad():
        assert rel_err(model(y), reference(y)) < 1e-4
    assert speedup.plan["attn"]["num_heads"] == 2 and len(speedup.plan["attn"]["kept_heads"]) == 2


def test_removing_every_head_is_refused_and_model_unchanged():
    model = nn.Sequential()
    model.add_module("attn", nn.MultiheadAttention(8, 2, batch_first=True))
    mask = head_mask(model.attn, torch.tensor([False, False]))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = model.attn

        def forward(self, x):
            return self.attn(x, x, x)[0]

    wrapped = Wrap()
    with pytest.raises(SpeedupError, match="every head"):
        ModelSpeedup(wrapped, torch.randn(1, 3, 8), {"attn": mask}).speedup_model()
    assert isinstance(wrapped.attn, nn.MultiheadAttention)


# --------------------------------------------------------------------------
# a small ViT: heads and MLP halve, exact, plan round trip, ONNX


def test_vit_heads_and_mlp_halve_exactly(tmp_path):
    model = small_vit()
    x = torch.rand(1, 3, 32, 32)
    masks = prune(model, x)
    assert "encoder.layers.encoder_layer_0.self_attention" in masks
    reference = masked_reference(model, x, masks)
    before, encoder_before = n_params(model), n_params(model.encoder)
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    for layer in model.encoder.layers:
        attn = layer.self_attention
        assert isinstance(attn, PrunedMultiheadAttention)
        assert attn.num_heads == 2 and attn.head_dim == 16 and attn.embed_dim == 64
        assert attn.in_proj_weight.shape == (96, 64) and attn.out_proj.weight.shape == (64, 32)
        assert layer.mlp[0].out_features == 64 and layer.mlp[3].in_features == 64
    # attention and MLP weights halve; LayerNorms, embeddings and the 1000-class head stay
    assert n_params(model.encoder) < 0.55 * encoder_before and n_params(model) < before
    y = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, expected = model(y), reference(y)
    assert got.shape == expected.shape == (2, 1000)
    assert rel_err(got, expected) < 1e-4

    # plan round trip: a fresh model rebuilt from the JSON plan loads the pruned weights strictly
    plan = json.loads(json.dumps(speedup.plan))
    entry = plan["encoder.layers.encoder_layer_0.self_attention"]
    assert entry["type"] == "MultiheadAttention" and entry["before"] == {"embed_dim": 64, "num_heads": 4}
    fresh = apply_pruning_plan(small_vit(), plan)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.eval()
    with torch.no_grad():
        assert rel_err(fresh(y), got) < 1e-6

    # ONNX export of the pruned model runs in onnxruntime
    pytest.importorskip("onnxruntime")
    with torch.no_grad():
        assert rel_err(onnx_output(model, x, tmp_path / "vit.onnx"), model(x)) < 1e-4


def test_report_lists_attention_layers_as_prunable():
    model = small_vit()
    report = prunability_report(model, torch.rand(1, 3, 32, 32))
    attention = {a["layer"]: a for a in report["attention"]}
    entry = attention["encoder.layers.encoder_layer_0.self_attention"]
    assert entry["prunable"] and entry["heads"] == 4 and entry["head_dim"] == 16
    assert not any(u["layer"] == "encoder.layers.encoder_layer_0.self_attention" for u in report["unprunable"])
