"""Quantization-aware training (NNI's ``QAT_Quantizer``) on PyTorch's QAT path, converted to real int8.

``prepare_qat_fx`` replaces the selected layers with fake-quantized
twins (Conv+BN(+ReLU) fused into one module that folds the BatchNorm into
the weights as it trains, Jacob et al. 2018), the evaluator's training loop
fine-tunes them, and ``convert_fx`` turns the result into
``torch.ao.nn.quantized`` modules: the same real int8 model as
:class:`~compression_core.quantization.PostTrainingQuantizer` gives, with
weights that have learnt to live on the int8 grid.

``quant_start_step`` (NNI's key): the first optimizer steps train in float
while the observers track activation ranges; fake quantization starts after
that many steps. ``freeze_bn_step``: from that step on, BatchNorm statistics
stop updating (PyTorch's QAT recipe).

Example::

    >>> config_list = [{"op_types": ["Conv2d", "Linear"], "quant_bits": 8}]
    >>> quantizer = QATQuantizer(model, config_list, evaluator, quant_start_step=100)  # doctest: +SKIP
    >>> int8_model, calibration_config = quantizer.compress(max_steps=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch.nn as nn
from torch.ao.nn.intrinsic.qat import freeze_bn_stats
from torch.ao.quantization import (
    FakeQuantizeBase,
    QConfigMapping,
    disable_fake_quant,
    enable_fake_quant,
    fuse_modules_qat,
)
from torch.ao.quantization.observer import ObserverBase
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from ..evaluation.evaluator import TorchEvaluator
from .ptq import PostTrainingQuantizer, _set_submodule
from .qconfig import qat_activation_qconfig, qat_qconfig
from ..config.quantization import LayerQuantSpec


class QATQuantizer(PostTrainingQuantizer):
    """Quantization-aware training to a real int8 model; needs a :class:`~compression_core.TorchEvaluator`.

    ``config_list``, ``backend``, ``allow_float`` and ``reduce_range`` mean
    what they mean for :class:`PostTrainingQuantizer` (8 bits, static int8).
    The evaluator needs a ``dummy_input`` (one batch, for tracing).
    ``compress(max_steps=None, max_epochs=None)`` trains that long (the
    evaluator's own loop decides when both are None), converts, and returns
    ``(int8_model, calibration_config)``; the input model is not modified.
    """

    def __init__(
        self,
        model: nn.Module,
        config_list: Iterable[Mapping[str, Any]] | None = None,
        evaluator: TorchEvaluator | None = None,
        *,
        quant_start_step: int = 0,
        freeze_bn_step: int | None = None,
        backend: str = "x86",
        allow_float: bool = False,
        reduce_range: bool = True,
    ):
        if not isinstance(evaluator, TorchEvaluator):
            raise ValueError("QATQuantizer fine-tunes the model with fake quantization: give "
                             "evaluator=TorchEvaluator(training_func, optimizers, training_step, dummy_input=...)")
        if quant_start_step < 0:
            raise ValueError(f"quant_start_step must be >= 0, got {quant_start_step}")
        if freeze_bn_step is not None and freeze_bn_step < 1:
            raise ValueError(f"freeze_bn_step must be >= 1 (or None), got {freeze_bn_step}")
        super().__init__(model, config_list, evaluator, backend=backend, allow_float=allow_float,
                         reduce_range=reduce_range, observer="moving_average_minmax")
        self.report.mode = "qat"
        self.quant_start_step = quant_start_step
        self.freeze_bn_step = freeze_bn_step
        self._max_steps: int | None = None
        self._max_epochs: int | None = None
        self._trained_float: nn.Module | None = None

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None) -> tuple[nn.Module, dict]:
        """Train with fake quantization, convert to int8; return ``(int8_model, calibration_config)``."""
        self._max_steps, self._max_epochs = max_steps, max_epochs
        result = super().compress()
        self.report.mode = "qat"
        return result

    def trained_float_model(self) -> nn.Module:
        """After ``compress()``: the trained model in float32, fake quantization and observers removed.

        What :func:`~compression_core.io.export_int8_onnx` takes to give a QAT-trained int8
        ONNX: PyTorch's fake-quantize operators have no ONNX form, so onnxruntime re-derives the ranges
        of these weights (which have learnt to sit on an int8 grid) from calibration data.
        """
        if self._trained_float is None:
            raise ValueError("call compress() first: there is no trained model yet")
        return self._trained_float

    def _keep_observed(self, observed: nn.Module) -> None:
        model = copy.deepcopy(observed).eval()
        for name, module in list(model.named_modules(remove_duplicate=False)):  # shared observers too
            if name and isinstance(module, (FakeQuantizeBase, ObserverBase)):
                _set_submodule(model, name, nn.Identity())
        for name, module in list(model.named_modules()):
            if name and type(module).__module__.startswith("torch.ao.nn") and hasattr(module, "to_float"):
                # QAT layers back to float ones; Conv+BN pairs come back with the BatchNorm folded in.
                _set_submodule(model, name, module.to_float())
        self._trained_float = model.eval()

    # -- the steps that differ from post-training quantization -------------------------
    def _global_qconfig(self):
        return qat_activation_qconfig(reduce_range=self.config.reduce_range)

    def _layer_qconfig(self, spec: LayerQuantSpec):
        return qat_qconfig(spec, reduce_range=self.config.reduce_range)

    def _fuse(self, model: nn.Module) -> None:
        model.train()
        fuse_modules_qat(model, self.fuse_names, inplace=True)
        model.eval()

    def _prepare(self, module: nn.Module, mapping: QConfigMapping, example: tuple,
                 custom: PrepareCustomConfig) -> nn.Module:
        return prepare_qat_fx(module.train(), mapping, example, prepare_custom_config=custom)

    def _observe(self, model: nn.Module) -> int:
        steps = {"done": 0}
        if self.quant_start_step > 0:
            model.apply(disable_fake_quant)

        def after_step(trained: nn.Module) -> None:
            steps["done"] += 1
            if steps["done"] == self.quant_start_step:
                trained.apply(enable_fake_quant)
            if self.freeze_bn_step is not None and steps["done"] == self.freeze_bn_step:
                trained.apply(freeze_bn_stats)

        model.train()
        done = self.evaluator.train(model, max_steps=self._max_steps, max_epochs=self._max_epochs,
                                    after_step=[after_step])
        model.apply(enable_fake_quant)
        return done
