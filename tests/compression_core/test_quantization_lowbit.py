"""DoReFaQuantizer and BNNQuantizer: low-bit weights (and binary activations) learnt through a TorchEvaluator."""

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compression_core import TorchEvaluator
from compression_core.io import onnx_session, save_model
from compression_core.quantization import BNNQuantizer, DoReFaQuantizer


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.Hardtanh(), nn.Linear(8, 2)).eval()


def _data(n=128):
    """Two separable classes of 1x4x4 images: the sign of the left half's sum minus the right half's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 4, 4, generator=generator)
    y = (x[..., :2].sum(dim=(1, 2, 3)) > x[..., 2:].sum(dim=(1, 2, 3))).long()
    return x, y


def _evaluator(log=None, lr=0.01, optimizer="adam", probe=None):
    """A TorchEvaluator over _data(); ``log`` gets (loss, probe(model)) at every training step."""
    x, y = _data()

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_epochs or 1):
            for i in range(0, len(x), 32):
                optimizers.zero_grad()
                training_step((x[i:i + 32], y[i:i + 32]), model).backward()
                optimizers.step()

    def training_step(batch, model):
        loss = F.cross_entropy(model(batch[0]), batch[1])
        if log is not None:
            log.append((float(loss.detach()), probe(model) if probe else None))
        return loss

    if optimizer == "adam":
        factory = lambda params: torch.optim.Adam(params, lr=lr)  # noqa: E731
    else:
        factory = lambda params: torch.optim.SGD(params, lr=lr)  # noqa: E731
    return TorchEvaluator(training_func, factory, training_step, dummy_input=x[:2])


WEIGHTS = [{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"]}]
BNN_CONFIG = [{"op_names": ["3", "7"], "quant_types": ["weight"], "quant_bits": 1},
              {"op_types": ["Hardtanh"], "quant_types": ["output"], "quant_bits": 1}]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_puts_each_weight_on_a_bits_wide_grid_with_one_scale_per_layer(bits):
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = DoReFaQuantizer(model, [{**WEIGHTS[0], "quant_bits": bits}], _evaluator())
    quantized, calibration = quantizer.compress(max_epochs=2)
    assert quantized is not model and list(quantized.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # input untouched
    assert all(type(m).__module__.startswith("torch.nn") for m in quantized.modules())  # no parametrization
    assert quantizer.report.mode == "dorefa (simulated)" and quantizer.report.backend == "none"
    assert quantizer.report.quantized == {"0": "Conv2d", "3": "Conv2d", "7": "Linear", "9": "Linear"}
    assert quantizer.report.calibration_batches == 8  # 2 epochs of 4 batches
    assert calibration is quantizer.calibration_config
    for name in ("0", "3", "7", "9"):
        weight = quantized.get_submodule(name).weight.detach()
        record = calibration[name]["weight"]
        assert calibration[name]["module_type"] in ("Conv2d", "Linear")
        assert record == {"quant_bits": bits, "quant_dtype": f"uint{bits}", "quant_scheme": "per_tensor_symmetric",
                          "scale": pytest.approx(record["scale"]), "zero_point": (2**bits - 1) / 2,
                          "quant_min": 0, "quant_max": 2**bits - 1}
        assert weight.unique().numel() <= 2**bits
        q = weight / record["scale"] + record["zero_point"]  # value = scale * (q - zero_point)
        assert torch.allclose(q, q.round(), atol=1e-3)
        assert q.round().min() >= 0 and q.round().max() <= 2**bits - 1
        assert not torch.equal(weight, before[f"{name}.weight"])
    if bits == 1:  # the paper's E(|w|) * sign(w): one magnitude per layer
        assert quantized[0].weight.abs().unique().numel() == 1


def test_dorefa_scale_keeps_a_pretrained_model_close_to_itself():
    from compression_core.quantization.lowbit import dorefa_grid

    torch.manual_seed(0)  # no BatchNorm to absorb a lost scale; lr 0: the quantization alone
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2)).eval()
    x, _ = _data()
    quantized, _ = DoReFaQuantizer(model, [{**WEIGHTS[0], "quant_bits": 8}],
                                   _evaluator(lr=0.0, optimizer="sgd")).compress(max_steps=1)
    for name in ("0", "3"):
        original, rounded = model.get_submodule(name).weight, quantized.get_submodule(name).weight
        assert (rounded - original).norm() / original.norm() < 0.02  # tanh's curvature and 8-bit rounding
        nni_grid, _ = dorefa_grid(original, 8)  # NNI's weights in [-1, 1], without the layer scale
        assert (nni_grid - original).norm() / original.norm() > 1
    with torch.no_grad():
        assert F.cosine_similarity(model(x), quantized.eval()(x)).mean() > 0.999


def test_dorefa_learns_through_the_straight_through_estimator():
    log = []
    model = _cnn()
    evaluator = _evaluator(log, lr=0.02, probe=lambda m: m[3].parametrizations.weight.original.detach().clone())
    quantized, _ = DoReFaQuantizer(model, [{**WEIGHTS[0], "quant_bits": 2}], evaluator).compress(max_epochs=30)
    losses = [loss for loss, _ in log]
    assert len(losses) == 120
    first_latent, last_latent = log[0][1], log[-1][1]
    assert torch.equal(first_latent, model[3].weight)  # training starts from the input model's weights
    assert not torch.allclose(first_latent, last_latent)  # the optimizer moves the latent float weights
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])
    x, y = _data()
    quantized.eval()
    with torch.no_grad():
        assert (quantized(x).argmax(1) == y).float().mean() > 0.9


def test_bnn_binarizes_weights_and_hardtanh_outputs_and_trains():
    log = []
    model = _cnn()
    with torch.no_grad():
        model[7].weight.mul_(10.0)  # latent weights beyond +-1, to be clipped
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluator = _evaluator(log, lr=0.01, probe=lambda m: m[7].parametrizations.weight.original.detach().clone())
    quantizer = BNNQuantizer(model, BNN_CONFIG, evaluator)
    quantized, calibration = quantizer.compress(max_epochs=30)

    # Latent weights: start at the input's (some beyond 1), clipped to [-1, 1] after every step, and trained.
    latents = [latent for _, latent in log[:3]]
    assert latents[0].abs().max() > 1.0 and torch.equal(latents[0], model[7].weight)
    assert latents[1].abs().max() <= 1.0 and not torch.equal(latents[1], latents[2])
    losses = [loss for loss, _ in log]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])

    assert list(quantized.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())  # input untouched
    for name in ("3", "7"):
        assert set(quantized.get_submodule(name).weight.unique().tolist()) == {-1.0, 1.0}
    assert quantized[0].weight.unique().numel() > 2  # not selected: float
    seen = {}
    for name in ("2", "5", "8"):
        quantized.get_submodule(name).register_forward_hook(
            lambda module, args, out, name=name: seen.__setitem__(name, out.detach()))
    quantized.eval()
    x, y = _data()
    with torch.no_grad():
        accuracy = (quantized(x).argmax(1) == y).float().mean()
    assert accuracy > 0.75
    for name in ("2", "5", "8"):
        assert set(seen[name].unique().tolist()) == {-1.0, 1.0}

    assert quantizer.report.mode == "bnn (simulated)"
    assert quantizer.report.quantized == {"2": "Hardtanh", "3": "Conv2d", "5": "Hardtanh", "7": "Linear",
                                          "8": "Hardtanh"}
    grid = {"quant_bits": 1, "quant_dtype": "uint1", "quant_scheme": "per_tensor_symmetric", "scale": 2.0,
            "zero_point": 0.5, "quant_min": 0, "quant_max": 1}
    assert calibration["3"] == {"module_type": "Conv2d", "weight": grid}
    assert calibration["2"] == {"module_type": "Hardtanh", "output": grid}


def test_straight_through_gradients():
    from compression_core.quantization.lowbit import binarize, dorefa_weight

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = binarize(x)  # BNN: sign, gradient where |x| <= 1
    y.sum().backward()
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]

    w = torch.tensor([-0.4, -0.1, 0.2, 0.3], requires_grad=True)
    upstream = torch.tensor([1.0, -2.0, 3.0, -4.0])
    y = dorefa_weight(w, 1)  # the paper's 1 bit: E(|w|) * sign(w), gradient passed unchanged
    (y * upstream).sum().backward()
    assert torch.allclose(y, torch.tensor([-0.25, -0.25, 0.25, 0.25])) and torch.equal(w.grad, upstream)

    w.grad = None
    y = dorefa_weight(w, 4)  # through tanh and the max, rounding passed straight through
    (y * upstream).sum().backward()
    assert y.unique().numel() <= 16 and torch.isfinite(w.grad).all() and w.grad.abs().min() > 0


@pytest.mark.parametrize("algorithm", ["dorefa", "bnn"])
def test_baked_model_deepcopies_and_exports_to_onnx_with_the_same_outputs(algorithm, tmp_path):
    model = _cnn()
    if algorithm == "dorefa":
        quantizer = DoReFaQuantizer(model, [{**WEIGHTS[0], "quant_bits": 4}], _evaluator())
    else:
        quantizer = BNNQuantizer(model, BNN_CONFIG, _evaluator())
    quantized, _ = quantizer.compress(max_steps=3)
    quantized.eval()
    x, _ = _data(16)
    with torch.no_grad():
        expected = quantized(x)
        assert torch.equal(copy.deepcopy(quantized)(x), expected)
        buffer = io.BytesIO()
        torch.save(quantized, buffer)  # the hooks are module-level functions: they pickle
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
    result = save_model(quantized, tmp_path / "m.onnx", example_inputs=(x[:1],))
    assert result["format"] == "onnx"
    session = onnx_session(tmp_path / "m.onnx")
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(output, expected.numpy(), rtol=1e-4, atol=1e-4)
    if algorithm == "bnn":  # the binarization is in the graph, not only in PyTorch's forward
        import onnx
        assert "Where" in {node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node}


def test_bnn_takes_one_bit_by_default():
    quantizer = BNNQuantizer(_cnn(), [{"op_types": ["Linear"], "quant_types": ["weight"]},
                                      {"op_types": ["Hardtanh"], "quant_types": ["output"]}], _evaluator())
    assert {s.bits for spec in quantizer.layers.values() for s in spec.targets.values()} == {1}


@pytest.mark.parametrize("make, match", [
    (lambda: DoReFaQuantizer(_cnn(), WEIGHTS), r"DoReFaQuantizer trains .* give evaluator=TorchEvaluator"),
    (lambda: BNNQuantizer(_cnn(), BNN_CONFIG, evaluator=None), r"BNNQuantizer trains .* give evaluator=TorchEvaluator"),
    (lambda: DoReFaQuantizer(_cnn(), [{**WEIGHTS[0], "quant_bits": 9}], _evaluator()),
     r"config_list\[0\]: DoReFaQuantizer takes quant_bits from 1 to 8 .*layer '0'.*got 9"),
    (lambda: DoReFaQuantizer(_cnn(), [{**WEIGHTS[0], "quant_bits": 0}], _evaluator()),
     r"config_list\[0\]: 'quant_bits'"),
    (lambda: BNNQuantizer(_cnn(), [{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 2}],
                          _evaluator()),
     r"config_list\[0\]: BNNQuantizer binarizes .*quant_bits must be 1 for the weight of layer '0', got 2"),
    (lambda: DoReFaQuantizer(_cnn(), [{"op_types": ["Conv2d"], "quant_types": ["weight", "output"]}], _evaluator()),
     r"config_list\[0\]: DoReFaQuantizer quantizes weights only.*remove 'output'.*QATQuantizer"),
    (lambda: DoReFaQuantizer(_cnn(), [{"op_types": ["Conv2d"], "quant_types": ["input", "weight"]}], _evaluator()),
     r"config_list\[0\]: DoReFaQuantizer quantizes weights only.*remove 'input'"),
    (lambda: BNNQuantizer(_cnn(), [{"op_types": ["Conv2d"], "quant_types": ["input"]}], _evaluator()),
     r"config_list\[0\]: BNNQuantizer binarizes weights and outputs, not inputs"),
    (lambda: DoReFaQuantizer(_cnn(), [WEIGHTS[0], {"op_types": ["Hardtanh"], "quant_types": ["weight"]}],
                             _evaluator()),
     r"config_list\[1\]: layer '2' \(Hardtanh\) has no float weight parameter"),
    (lambda: BNNQuantizer(_cnn(), [{"op_types": ["BatchNorm2d", "Hardtanh"], "quant_types": ["weight"]}],
                          _evaluator()),
     r"config_list\[0\]: layer '2' \(Hardtanh\) has no float weight.*binarize its output only"),
    (lambda: DoReFaQuantizer(_cnn(), [{"op_types": ["LSTM"], "quant_types": ["weight"]}], _evaluator()),
     r"config_list\[0\] selects no layer of the model.*layer types here: .*Conv2d"),
    (lambda: BNNQuantizer(_cnn(), [WEIGHTS[0], {"op_types": ["ReLU"], "quant_types": ["output"]}], _evaluator()),
     r"config_list\[1\] selects no layer"),
    (lambda: DoReFaQuantizer(_cnn(), [WEIGHTS[0], {"exclude": True, "op_types": ["Conv2d", "Linear"]}],
                             _evaluator()),
     r"^config_list selects no layer of the model"),
    (lambda: BNNQuantizer(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), [{"op_types": ["ReLU"],
                                                                       "quant_types": ["output"]}], _evaluator()),
     r"config_list\[0\]: layer '1' is a ReLU, whose output is never negative.*Hardtanh"),
    (lambda: DoReFaQuantizer(_cnn(), [{**WEIGHTS[0], "quant_scheme": "per_channel_symmetric"}], _evaluator()),
     r"config_list\[0\]: DoReFaQuantizer does not take 'quant_scheme'"),
])
def test_bad_input_is_a_value_error_that_says_what_to_change(make, match):
    with pytest.raises(ValueError, match=match):
        make()
