"""Inspecting an upload: what the worker runs, in a budgeted child process, before a model or dataset is usable.

The web side stores the received files and asks for an :class:`IntakeRequest`; :func:`intake_run` does the
work (an ONNX zip or a model and its data files made into one checked ``.onnx``, the model loaded and run at
batch 1 and 2; a dataset read and described) and returns plain values. :mod:`.sandbox` runs it in a separate
process under a memory and CPU-time budget, so a hostile file costs at most that budget.

Example::

    >>> request = IntakeRequest(kind="model", workdir="/tmp/i", source="builtin", architecture="digits_cnn")
    >>> intake_run(request)["summary"]["input_shape"]
    [1, 8, 8]
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data import inspect_dataset
from ..io import IntakeLimits, consolidate_onnx, detect_format, load_model
from .inspect import inspect_model
from .recipe import ModelSource


@dataclass
class IntakeRequest:
    """One upload to inspect, as plain values (it travels to the child process as JSON).

    ``path`` is the received file (``None`` for a built-in architecture without weights);
    ``data_files`` the external-data files sent beside a ``.onnx``; ``workdir`` a folder the result is
    written to; ``limits`` the caps an operator set (fields of :class:`~compression_core.io.IntakeLimits`;
    empty: the defaults).
    """

    kind: str  # "model" | "dataset"
    workdir: str
    path: str | None = None
    data_files: list[str] = field(default_factory=list)
    source: str = "onnx"  # models: "onnx" | "builtin"
    architecture: str = ""
    num_classes: int | None = None
    input_shape: list[int] | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IntakeRequest":
        return cls(**data)


def intake_run(request: IntakeRequest) -> dict[str, Any]:
    """Inspect the upload; return ``{"summary", "path", "file_format", "size_bytes"}``.

    ``path`` is the file to store (for an ONNX upload the consolidated single ``.onnx`` in ``workdir``).
    Raises ``ValueError`` (``ModelFormatError`` is one) with a sentence for the person who uploaded it.
    """
    limits = IntakeLimits(**request.limits)
    if request.kind == "dataset":
        summary = inspect_dataset(request.path, limits=limits)
        return {"summary": summary, "path": request.path, "file_format": summary["format"],
                "size_bytes": Path(request.path).stat().st_size}
    if request.kind != "model":
        raise ValueError(f"unknown upload kind {request.kind!r}")
    path = Path(request.path) if request.path else None
    file_format = detect_format(path) if path else "builtin"
    if request.source == "onnx":
        path = _single_onnx_file(path, file_format, [Path(p) for p in request.data_files], request.workdir, limits)
        file_format = "onnx"
    source = ModelSource(path=str(path) if path else None, architecture=request.architecture or None,
                         num_classes=request.num_classes, trusted=False, limits=request.limits or None)
    loaded = source.load()
    summary = inspect_model(source, request.input_shape, model=loaded)
    return {"summary": summary, "path": str(path) if path else None, "file_format": file_format,
            "size_bytes": path.stat().st_size if path else 0}


def _single_onnx_file(upload: Path, file_format: str, data_files: list[Path], workdir: str,
                      limits: IntakeLimits) -> Path:
    """The upload as one self-contained ``.onnx`` in the work folder: a ``.onnx`` (its data files beside it)
    or a zip of them."""
    target_folder = Path(workdir) / "model"
    if file_format == "onnx_zip" or (file_format == "unknown" and zipfile.is_zipfile(upload)):
        return consolidate_onnx(upload, target_folder / f"{upload.stem}.onnx", limits=limits)
    if file_format != "onnx":
        load_model(upload)  # says what the file is and why it is refused
        raise ValueError("the file is not an ONNX model: upload a .onnx file, or a .zip holding one and its data files")
    if data_files:
        folder = {p.parent for p in data_files} | {upload.parent}
        if len(folder) != 1:
            raise ValueError("the external-data files must be received in the model's folder")
    return consolidate_onnx(upload, target_folder / upload.name,
                            external_data_dir=upload.parent if data_files else None, limits=limits)
