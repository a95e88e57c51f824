"""Built-in model architectures that uploaded weights (safetensors / state_dict) can be loaded into.

Example::

    >>> from compression_core.models import build_architecture
    >>> model = build_architecture("resnet18", num_classes=10)
    >>> model.fc.out_features
    10
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn

__all__ = [
    "ArchitectureSpec",
    "ARCHITECTURES",
    "DigitsCNN",
    "MnistCNN",
    "CifarCNN",
    "build_architecture",
    "architecture_choices",
    "register_architecture",
]


class DigitsCNN(nn.Module):
    """Small CNN for the 1x8x8 scikit-learn digits (10 classes).

    conv(1->16, 3, pad 1)-bn-relu-conv(16->32, 3, pad 1)-bn-relu-maxpool(2)
    -flatten-linear(32*4*4 -> 64)-relu-linear(64 -> num_classes).
    Every step is its own module, so pruners and speedup see plain layers.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.flatten(self.pool(x))
        return self.fc2(self.relu3(self.fc1(x)))


class MnistCNN(nn.Module):
    """LeNet-style CNN with batch norm for 1x28x28 MNIST-like images.

    conv(1->32, 3, pad 1)-bn-relu-maxpool(2)-conv(32->64, 3, pad 1)-bn-relu-maxpool(2)
    -flatten-linear(64*7*7 -> 128)-relu-linear(128 -> num_classes).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.flatten(x)
        return self.fc2(self.relu3(self.fc1(x)))


class CifarCNN(nn.Module):
    """VGG-style CNN for 3x32x32 CIFAR-like images (six conv layers with batch norm)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = []
        channels = 3
        for stage, width in enumerate((64, 128, 256)):
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision  # heavy: imported only when a torchvision architecture is built

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    build.__name__ = f"build_{name}"
    return build


@dataclass(frozen=True)
class ArchitectureSpec:
    """A built-in architecture: its name, what it is for and how to build it.

    ``builder(num_classes)`` returns a freshly initialised ``nn.Module``.

    Example::

        >>> spec = ARCHITECTURES["digits_cnn"]
        >>> spec.input_shape, spec.num_classes
        ((1, 8, 8), 10)
        >>> model = spec.build()
    """

    name: str
    description: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    builder: Callable[[int], nn.Module] = field(repr=False, compare=False)
    default_dataset: Optional[str] = None

    def build(self, num_classes: Optional[int] = None) -> nn.Module:
        """Build the model (``num_classes`` defaults to the spec's)."""
        return build_architecture(self.name, num_classes)

    def as_dict(self) -> dict:
        """JSON-friendly metadata (no builder)."""
        return {
            "name": self.name,
            "description": self.description,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }


ARCHITECTURES: Dict[str, ArchitectureSpec] = {}


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add (or replace) an architecture in :data:`ARCHITECTURES`.

    Example::

        >>> register_architecture(ArchitectureSpec("tiny", "2-layer MLP", (1, 8, 8), 10,
        ...     lambda n: nn.Sequential(nn.Flatten(), nn.Linear(64, n))))
    """
    if not spec.name or not spec.name.replace("_", "").isalnum():
        raise ValueError(f"architecture name must be alphanumeric/underscore, got {spec.name!r}")
    ARCHITECTURES[spec.name] = spec
    return spec


for _spec in (
    ArchitectureSpec(
        "digits_cnn",
        "Small 2-conv CNN for the 8x8 scikit-learn digits (about 40k parameters)",
        (1, 8, 8), 10, DigitsCNN, default_dataset="digits",
    ),
    ArchitectureSpec(
        "mnist_cnn", "LeNet-style CNN with batch norm for 28x28 MNIST images", (1, 28, 28), 10, MnistCNN
    ),
    ArchitectureSpec(
        "cifar_cnn", "VGG-style 6-conv CNN with batch norm for 32x32 CIFAR images", (3, 32, 32), 10, CifarCNN
    ),
    ArchitectureSpec("resnet18", "torchvision ResNet-18 (ImageNet layout)", (3, 224, 224), 1000, _torchvision("resnet18")),
    ArchitectureSpec("resnet50", "torchvision ResNet-50 (ImageNet layout)", (3, 224, 224), 1000, _torchvision("resnet50")),
    ArchitectureSpec(
        "mobilenet_v2", "torchvision MobileNetV2 (ImageNet layout)", (3, 224, 224), 1000, _torchvision("mobilenet_v2")
    ),
    ArchitectureSpec("vgg11", "torchvision VGG-11 (ImageNet layout)", (3, 224, 224), 1000, _torchvision("vgg11")),
):
    register_architecture(_spec)


def build_architecture(name: str, num_classes: Optional[int] = None) -> nn.Module:
    """Build a randomly initialised built-in architecture.

    The returned module carries ``condense_architecture`` (its name) and
    ``condense_input_shapes`` (``[[None, C, H, W]]``) attributes, which
    :func:`compression_core.io.save_model` uses for metadata and example inputs.

    Raises ``ValueError`` listing the known names for an unknown ``name``.

    Example::

        >>> build_architecture("digits_cnn")(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    spec = ARCHITECTURES.get(name)
    if spec is None:
        raise ValueError(
            f"Unknown architecture {name!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}"
        )
    if num_classes is None:
        num_classes = spec.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = spec.builder(num_classes)
    model.condense_architecture = spec.name
    model.condense_input_shapes = [[None, *spec.input_shape]]
    return model


def architecture_choices() -> List[dict]:
    """Architectures as dicts (name, description, input_shape, num_classes), sorted by name, for forms.

    Example::

        >>> [c["name"] for c in architecture_choices()][:2]
        ['cifar_cnn', 'digits_cnn']
    """
    return [ARCHITECTURES[name].as_dict() for name in sorted(ARCHITECTURES)]
