"""Built-in architecture registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression_core.models import (
    ARCHITECTURES,
    ArchitectureSpec,
    DigitsCNN,
    architecture_choices,
    build_architecture,
)

EXPECTED = {
    "digits_cnn": ((1, 8, 8), 10),
    "mnist_cnn": ((1, 28, 28), 10),
    "cifar_cnn": ((3, 32, 32), 10),
    "resnet18": ((3, 224, 224), 1000),
    "resnet50": ((3, 224, 224), 1000),
    "mobilenet_v2": ((3, 224, 224), 1000),
    "vgg11": ((3, 224, 224), 1000),
}


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_registry_contents():
    for name, (shape, classes) in EXPECTED.items():
        spec = ARCHITECTURES[name]
        assert isinstance(spec, ArchitectureSpec)
        assert spec.name == name and spec.input_shape == shape and spec.num_classes == classes
        assert spec.description


@pytest.mark.parametrize("name", ["digits_cnn", "mnist_cnn", "cifar_cnn"])
def test_small_networks_forward(name):
    shape, classes = EXPECTED[name]
    model = build_architecture(name).eval()
    with torch.no_grad():
        assert model(torch.randn(3, *shape)).shape == (3, classes)
    assert build_architecture(name, num_classes=4)(torch.randn(2, *shape)).shape == (2, 4)


def test_digits_cnn_layout():
    model = build_architecture("digits_cnn")
    assert isinstance(model, DigitsCNN)
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 16, (3, 3))
    assert (model.conv2.in_channels, model.conv2.out_channels) == (16, 32)
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm2d)
    assert (model.fc1.in_features, model.fc1.out_features) == (32 * 4 * 4, 64)
    assert (model.fc2.in_features, model.fc2.out_features) == (64, 10)
    assert model.condense_architecture == "digits_cnn"
    assert model.condense_input_shapes == [[None, 1, 8, 8]]
    assert build_architecture("digits_cnn") is not model  # a fresh module every time


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vgg11"])
def test_torchvision_classifiers(name):
    model = build_architecture(name, num_classes=7).eval()
    assert _last_linear(model).out_features == 7
    assert model.condense_architecture == name
    if name in ("resnet18", "mobilenet_v2"):
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_default_num_classes_for_torchvision():
    assert _last_linear(build_architecture("resnet18")).out_features == 1000


def test_unknown_architecture_lists_names():
    with pytest.raises(ValueError) as info:
        build_architecture("alexnet")
    for name in EXPECTED:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_architecture("digits_cnn", num_classes=bad)


def test_architecture_choices_for_forms():
    choices = architecture_choices()
    assert [c["name"] for c in choices] == sorted(ARCHITECTURES)
    digits = next(c for c in choices if c["name"] == "digits_cnn")
    assert digits == {
        "name": "digits_cnn",
        "description": ARCHITECTURES["digits_cnn"].description,
        "input_shape": [1, 8, 8],
        "num_classes": 10,
    }
