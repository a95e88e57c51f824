"""Simulated quantizers' weights stored at their bit width, and read back exactly."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from compression_core import TorchEvaluator
from compression_core.quantization import BNNQuantizer, DoReFaQuantizer, NaiveQuantizer, load_packed, save_packed
from compression_core.quantization.packing import _pack, _unpack


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 6 * 6, 10)).eval()


def _evaluator():
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for i in range(0, 32, 8):
            optimizers.zero_grad()
            training_step((x[i:i + 8], y[i:i + 8]), model).backward()
            optimizers.step()

    return TorchEvaluator(training_func, lambda p: torch.optim.SGD(p, lr=0.01),
                          lambda batch, model: nn.functional.cross_entropy(model(batch[0]), batch[1]))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8])
def test_bit_packing_round_trips_and_takes_bits_per_code(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    packed = _pack(codes, bits)
    assert packed.dtype == np.uint8 and len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(_unpack(packed, bits, 1001), codes)


@pytest.mark.parametrize("make, weight_bits", [
    (lambda m: NaiveQuantizer(m), 8),
    (lambda m: NaiveQuantizer(m, [{"op_types": ["Conv2d", "Linear"], "quant_bits": 4,
                                   "quant_scheme": "per_tensor_symmetric"}]), 4),
    (lambda m: DoReFaQuantizer(m, [{"op_types": ["Conv2d", "Linear"], "quant_bits": 2}], _evaluator()), 2),
    (lambda m: BNNQuantizer(m, [{"op_types": ["Conv2d", "Linear"], "quant_bits": 1}], _evaluator()), 1),
])
def test_packed_weights_load_back_into_the_model(tmp_path, make, weight_bits):
    quantized, calibration = make(copy.deepcopy(_model())).compress()
    info = save_packed(quantized, calibration, tmp_path / "m.packed.safetensors")
    assert info["packed"] == {"0.weight": weight_bits, "4.weight": weight_bits}
    weight_bytes = (16 * 3 * 9 + 10 * 576) * 4
    assert info["bytes"] < 2500 + weight_bytes * weight_bits / 32  # codes; grids, biases, BatchNorm, header

    fresh = _model()
    fresh.load_state_dict(load_packed(tmp_path / "m.packed.safetensors"))
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(fresh(x), quantized(x), atol=1e-5)
    assert max(len(torch.unique(row)) for row in fresh[4].weight) <= 2**weight_bits  # per output channel


def test_a_weight_off_its_grid_and_an_unpacked_file_are_refused(tmp_path):
    quantized, calibration = NaiveQuantizer(_model()).compress()
    with torch.no_grad():
        quantized[0].weight.add_(1e-3)
    with pytest.raises(ValueError, match="0.weight is not on the 8-bit grid"):
        save_packed(quantized, calibration, tmp_path / "m.safetensors")
    from safetensors.torch import save_file

    save_file(_model().state_dict(), str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="holds no packed weights"):
        load_packed(tmp_path / "plain.safetensors")
