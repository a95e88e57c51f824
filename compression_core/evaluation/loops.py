"""The engine's one minibatch training loop and one batched inference loop.

Every training in the engine (:func:`~.training.train_classifier`, the
:class:`~.tensor_data.TensorDataEvaluator` that pruners and quantizers train
through) runs :func:`train_loop`; every accuracy and every "run this model or
forward function over these inputs" (:func:`~.training.evaluate_accuracy`, the
evaluator's metric, a quantization job's measurements) runs
:func:`predict_logits`. So the order of shuffles and batches, and hence
results on a given seed, are the same wherever a model is trained.

Example::

    >>> import torch, torch.nn as nn, torch.nn.functional as F
    >>> x, y = torch.randn(100, 8), torch.randint(0, 3, (100,))
    >>> model = nn.Linear(8, 3)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> step = lambda batch, model: F.cross_entropy(model(batch[0]), batch[1])
    >>> train_loop(model, x, y, step, optimizer, batch_size=32, max_epochs=2)   # 4 batches an epoch
    8
    >>> logits = predict_logits(model, x)
    >>> logits.shape, logits.dtype, 0.0 <= accuracy(logits, y) <= 1.0
    (torch.Size([100, 3]), torch.float32, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..tensors import first_tensor, module_device

TrainingStep = Callable[[tuple[torch.Tensor, torch.Tensor | None], nn.Module], torch.Tensor]


def output_logits(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, the first of a tuple, or ``output["logits"]``.

    Example::

        >>> output_logits({"logits": torch.ones(2, 3), "hidden": torch.zeros(2, 5)}).shape
        torch.Size([2, 3])
    """
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    tensor = first_tensor(output)
    if tensor is None:
        raise TypeError(f"cannot take class scores from a model output of type {type(output).__name__}")
    return tensor


def train_loop(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    training_step: TrainingStep,
    optimizer: Any,
    *,
    batch_size: int,
    seed: int | None = 0,
    max_epochs: int | None = None,
    max_steps: int | None = None,
) -> int:
    """Train ``model`` on minibatches of ``(inputs, labels)``; return the number of optimizer steps.

    Each epoch visits the rows in a new shuffle drawn from a generator seeded
    with ``seed`` (a random seed for ``None``; the global RNG is left alone).
    A last batch of one sample is skipped (batch norm needs two) unless the
    data is a single sample. Every batch goes to the model's device as
    ``(inputs, labels or None)``; ``training_step(batch, model)`` returns the
    loss, which is back-propagated before ``optimizer.step()``. Stops after
    ``max_epochs`` epochs or ``max_steps`` steps, whichever comes first (one
    of them is needed). The model is put in training mode and left there.

    Example::

        >>> train_loop(model, x, y, step, optimizer, batch_size=32, max_steps=3)
        3
    """
    if max_epochs is None and max_steps is None:
        raise ValueError("train_loop needs max_epochs or max_steps")
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    device = module_device(model)
    model.train()
    epoch = 0
    steps = 0
    while max_epochs is None or epoch < max_epochs:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2 and len(inputs) >= 2:  # batch norm needs two samples
                continue
            batch = (inputs[index].to(device), None if labels is None else labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            training_step(batch, model).backward()
            optimizer.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return steps
        epoch += 1
    return steps


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps :func:`train_loop` takes per epoch over ``samples`` rows (a last batch of one is skipped).

    Example::

        >>> steps_per_epoch(100, 32), steps_per_epoch(97, 32), steps_per_epoch(1, 32)
        (4, 3, 1)
    """
    if samples < 2:
        return 1
    return samples // batch_size + (1 if samples % batch_size >= 2 else 0)


def predict_logits(
    forward: nn.Module | Callable[[torch.Tensor], Any], inputs: torch.Tensor, *, batch_size: int = 256
) -> torch.Tensor:
    """``forward`` over ``inputs`` in batches, without gradients: the logits, float32, on the CPU.

    A module runs in eval mode (its training flag is restored afterwards) on
    its own device; any other callable (an onnxruntime session's wrapper, a
    half-precision twin) gets the batches as they are and handles devices
    itself. The logits are taken from each output by :func:`output_logits`.

    Example::

        >>> predict_logits(nn.Linear(8, 3), torch.randn(600, 8)).shape   # 3 batches of at most 256
        torch.Size([600, 3])
        >>> predict_logits(lambda x: (x.double() * 2, "extra"), torch.ones(2, 3)).dtype
        torch.float32
    """
    if len(inputs) == 0:
        raise ValueError("there are no inputs to run the model on")
    module = forward if isinstance(forward, nn.Module) else None
    device = module_device(module) if module is not None else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size]
                output = forward(batch.to(device) if device is not None else batch)
                outputs.append(output_logits(output).detach().float().cpu())
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose top class (argmax over dim 1) equals ``labels``.

    With another model's top classes as ``labels`` it is the top-1 agreement
    between the two.

    Example::

        >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
        0.6666666666666666
    """
    if len(logits) != len(labels):
        raise ValueError(f"logits ({len(logits)}) and labels ({len(labels)}) differ in length")
    correct = int((logits.argmax(dim=1) == labels.to(logits.device)).sum())
    return correct / len(labels)
