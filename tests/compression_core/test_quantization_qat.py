"""QATQuantizer: fake-quantized fine-tuning through a TorchEvaluator, converted to a real int8 model."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import FakeQuantizeBase

from compression_core import TorchEvaluator
from compression_core.quantization import QATQuantizer
from compression_core.quantization.calibration import is_int8_module


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def _evaluator(fake_quant_log):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_epochs or 100):
            for i in range(0, 64, 16):
                optimizers.zero_grad()
                training_step((x[i:i + 16], y[i:i + 16]), model).backward()
                optimizers.step()

    def training_step(batch, model):
        fake_quant_log.append(all(bool(m.fake_quant_enabled) for m in model.modules()
                                  if isinstance(m, FakeQuantizeBase)))
        return F.cross_entropy(model(batch[0]), batch[1])

    return TorchEvaluator(training_func, lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
                          training_step, dummy_input=x[:2]), x


def test_qat_trains_with_fake_quant_after_quant_start_step_and_converts_to_int8():
    model = _model()
    log = []
    evaluator, x = _evaluator(log)
    quantizer = QATQuantizer(model, [{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}], evaluator,
                             quant_start_step=3, freeze_bn_step=5)
    int8_model, calibration = quantizer.compress(max_steps=6)
    assert log == [False, False, False, True, True, True]  # float for the first 3 steps
    assert quantizer.report.calibration_batches == 6 and quantizer.report.mode == "qat"
    assert sorted(quantizer.report.quantized) == ["0", "3", "8"]
    modules = dict(int8_model.named_modules())
    assert type(modules["0"]).__name__ == "ConvReLU2d" and is_int8_module(modules["0"])  # BN folded
    assert isinstance(modules["8"], torch.ao.nn.quantized.Linear)
    assert "1" not in modules
    assert calibration["0"]["weight"]["quant_scheme"] == "per_channel_symmetric"
    assert calibration["0"]["_output_0"]["tracked_max"] > 0
    with torch.no_grad():
        cosine = F.cosine_similarity(model(x), int8_model(x)).mean()
    assert cosine > 0.9  # six small SGD steps away from the original
    assert not any(isinstance(m, FakeQuantizeBase) for m in model.modules())  # the input model is untouched


def test_qat_needs_an_evaluator_and_8_bits():
    with pytest.raises(ValueError, match="give evaluator=TorchEvaluator"):
        QATQuantizer(_model())
    evaluator, _ = _evaluator([])
    with pytest.raises(ValueError, match="supports 8 bits only"):
        QATQuantizer(_model(), [{"op_types": ["Conv2d"], "quant_bits": 4}], evaluator)
