"""Built-in datasets, accuracy and the small training loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression_core.models import build_architecture
from compression_core.datasets import (
    BUILTIN_DATASETS,
    dataset_choices,
    evaluate_accuracy,
    load_builtin_dataset,
    train_classifier,
    train_digits_cnn,
)


def test_digits_splits():
    x_train, y_train = load_builtin_dataset("digits", split="train")
    x_test, y_test = load_builtin_dataset("digits")  # test by default
    assert x_train.shape == (1437, 1, 8, 8) and y_train.shape == (1437,)
    assert x_test.shape == (360, 1, 8, 8) and y_test.shape == (360,)
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(10))
    x_all, _ = load_builtin_dataset("digits", split="all")
    assert len(x_all) == 1797


def test_digits_split_is_deterministic_and_fresh():
    x1, y1 = load_builtin_dataset("digits", "test")
    x1.zero_()  # callers may modify what they get
    x2, y2 = load_builtin_dataset("digits", "test")
    assert torch.equal(y1, y2) and float(x2.abs().sum()) > 0


def test_metadata():
    spec = BUILTIN_DATASETS["digits"]
    assert (spec.name, spec.input_shape, spec.num_classes, spec.has_labels) == ("digits", (1, 8, 8), 10, True)
    assert dataset_choices()[0]["name"] == "digits"
    assert dataset_choices()[0]["input_shape"] == [1, 8, 8]


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="digits"):
        load_builtin_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_builtin_dataset("digits", split="validation")


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
