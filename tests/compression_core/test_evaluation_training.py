"""The small training and accuracy helpers: accuracy, the digits CNN, the global RNG left alone."""

from __future__ import annotations

import torch
from torch import nn

from compression_core.models import build_architecture
from compression_core.data import load_builtin_dataset
from compression_core.evaluation import evaluate_accuracy, train_classifier, train_digits_cnn


def test_evaluate_accuracy_counts_and_restores_mode():
    class Constant(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 10)
            out[:, 3] = 1.0
            return out

    labels = torch.tensor([3, 3, 1, 3])
    model = Constant().train()
    assert evaluate_accuracy(model, torch.zeros(4, 1, 8, 8), labels, batch_size=3) == 0.75
    assert model.training


def test_training_reaches_90_percent():
    model = train_digits_cnn(epochs=8, seed=0)
    x_test, y_test = load_builtin_dataset("digits", "test")
    assert not model.training
    assert evaluate_accuracy(model, x_test, y_test) > 0.9


def test_train_classifier_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    x, y = load_builtin_dataset("digits", "train")
    with torch.random.fork_rng(devices=[]):
        model = build_architecture("digits_cnn")
    train_classifier(model, x[:128], y[:128], epochs=1)
    assert torch.equal(torch.rand(1), expected)
