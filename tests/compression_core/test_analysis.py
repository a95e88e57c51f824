"""Tests for compression_core.analysis: FLOPs/params, summary, latency, fidelity."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision

from compression_core.analysis import count_flops_params, measure_latency, model_summary, output_fidelity


def test_resnet18_flops_and_params_match_published_numbers():
    model = torchvision.models.resnet18()
    flops, params, layers = count_flops_params(model, torch.randn(1, 3, 224, 224))
    assert flops == pytest.approx(1.82e9, rel=0.02)
    assert params == pytest.approx(11.69e6, rel=0.02)
    assert params == sum(p.numel() for p in model.parameters())
    conv1 = next(layer for layer in layers if layer["name"] == "conv1")
    assert conv1 == {
        "name": "conv1", "type": "Conv2d", "input_shape": [1, 3, 224, 224], "output_shape": [1, 64, 112, 112],
        "weight_shape": [64, 3, 7, 7], "params": 64 * 3 * 49, "flops": 64 * 112 * 112 * 3 * 49,
    }
    assert {layer["type"] for layer in layers} >= {"Conv2d", "BatchNorm2d", "Linear"}
    assert "ReLU" not in {layer["type"] for layer in layers}


def test_flops_formulas_and_batch_invariance():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 10),
    )
    flops1, params, layers = count_flops_params(model, torch.randn(1, 4, 5, 5))
    flops3, _, _ = count_flops_params(model, torch.randn(3, 4, 5, 5))
    conv = 8 * 25 * (4 // 2) * 9
    bn = 8 * 25
    linear = 200 * 10
    assert [layer["flops"] for layer in layers] == [conv, bn, linear]
    assert flops1 == flops3 == conv + bn + linear
    assert params == sum(p.numel() for p in model.parameters())
    with_bias, _, _ = count_flops_params(model, torch.randn(1, 4, 5, 5), count_bias=True)
    assert with_bias == flops1 + 8 * 25 + 10


def test_nni_shape_tuple_and_masking_hooks_are_counted_normally():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    mask = torch.zeros_like(model[0].weight)

    def masking_hook(module, inputs):
        with torch.no_grad():
            module.weight.mul_(mask)

    model[0].register_forward_pre_hook(masking_hook)
    flops, params, _ = count_flops_params(model, (1, 3, 10, 10))
    assert flops == 8 * 8 * 8 * 27
    assert params == 8 * 27 + 8


def test_linear_on_sequences_and_attention():
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    flops, _, layers = count_flops_params(layer, torch.randn(2, 5, 16))
    by_name = {entry["name"]: entry for entry in layers}
    assert by_name["linear1"]["flops"] == 5 * 16 * 32
    assert by_name["self_attn"]["flops"] > 4 * 5 * 16 * 16
    assert flops > 0


def test_model_summary_is_json_and_restores_training_mode():
    model = torchvision.models.resnet18().train()
    summary = model_summary(model, torch.randn(1, 3, 64, 64))
    json.dumps(summary)
    assert summary["input_shape"] == [1, 3, 64, 64]
    assert summary["output_shape"] == [1, 1000]
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["layer_count"] == len(summary["layers"]) > 20
    assert summary["flops"] == sum(layer["flops"] for layer in summary["layers"])
    assert model.training and model.layer1[0].bn1.training


def test_measure_latency_returns_positive_numbers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).train()
    result = measure_latency(model, torch.randn(1, 3, 16, 16), warmup=1, runs=5)
    assert set(result) == {"median_ms", "p10_ms", "p90_ms", "runs", "batch_size", "device"}
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["runs"] == 5 and result["batch_size"] == 1 and result["device"] == "cpu"
    assert model.training

    seen = []
    model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape[0]))
    batched = measure_latency(model, torch.randn(2, 3, 16, 16), warmup=0, runs=2, batch_size=7)
    assert batched["batch_size"] == 7 and seen == [7, 7]
    json.dumps(batched)
    with pytest.raises(ValueError):
        measure_latency(model, torch.randn(1, 3, 16, 16), runs=0)


def test_output_fidelity():
    ref = torch.randn(8, 10)
    same = output_fidelity(ref, ref.clone())
    assert same["cosine_similarity"] == pytest.approx(1.0)
    assert same["max_abs_diff"] == 0.0 and same["mean_abs_diff"] == 0.0
    assert same["top1_agreement"] == 1.0

    flipped = ref.clone()
    flipped[:2] = -flipped[:2]
    result = output_fidelity(ref, flipped)
    assert result["cosine_similarity"] == pytest.approx(0.5, abs=1e-6)  # 6 rows at +1, 2 at -1
    assert result["top1_agreement"] <= 0.75
    assert result["max_abs_diff"] == pytest.approx(float(2 * ref[:2].abs().max()))

    maps = output_fidelity(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    assert maps["top1_agreement"] is None and -1 <= maps["cosine_similarity"] <= 1
    json.dumps(maps)
    with pytest.raises(ValueError, match="shape"):
        output_fidelity(torch.randn(2, 3), torch.randn(2, 4))


def test_head_pruned_attention_is_counted_like_the_original():
    from compression_core.analysis import count_flops_params
    from compression_core.models.attention import PrunedMultiheadAttention

    class SelfAttention(torch.nn.Module):
        def __init__(self, attention):
            super().__init__()
            self.attention = attention

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    x = torch.randn(1, 10, 64)
    full = count_flops_params(SelfAttention(torch.nn.MultiheadAttention(64, 4, batch_first=True)), x)
    same = count_flops_params(SelfAttention(PrunedMultiheadAttention(64, 4, 16, batch_first=True)), x)
    half = count_flops_params(SelfAttention(PrunedMultiheadAttention(64, 2, 16, batch_first=True)), x)
    assert same[:2] == full[:2]
    assert half[0] == full[0] // 2
