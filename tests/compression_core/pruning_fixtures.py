"""Small models and evaluators shared by the pruner tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compression_core import TorchEvaluator


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def blob_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is the quadrant holding a bright blob: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.1
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 1.0
    return x, y


def loop_evaluator(data=None, lr: float = 0.05, optimizer=torch.optim.SGD) -> TorchEvaluator:
    """A TorchEvaluator over ``data`` in batches of 16, written the way a user would."""
    x, y = data if data is not None else blob_data()

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        steps = 0
        for _ in range(max_epochs or 1000):
            for i in range(0, len(x), 16):
                optimizers.zero_grad()
                training_step((x[i : i + 16], y[i : i + 16]), model).backward()
                optimizers.step()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    return

    def training_step(batch, model):
        return F.cross_entropy(model(batch[0]), batch[1])

    def evaluating_func(model):
        return float((model(x).argmax(1) == y).float().mean())

    return TorchEvaluator(training_func, lambda params: optimizer(params, lr=lr), training_step,
                          dummy_input=x[:1], evaluating_func=evaluating_func)


def sparsity(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.mean())


def dead_filters(mask: torch.Tensor) -> list[int]:
    return [i for i, row in enumerate(mask.flatten(1)) if not row.any()]
