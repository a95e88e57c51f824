"""What a job hands back: :class:`JobResult`, and the :class:`Artifact` records of the files it wrote.

Example::

    >>> result = JobResult(metrics={"before": {"params": 10}}, artifacts=[Artifact(name="m.onnx", kind="onnx",
    ...                                                                                  bytes=123)])
    >>> result.to_dict()["artifacts"]
    [{'name': 'm.onnx', 'kind': 'onnx', 'bytes': 123}]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict


class Artifact(TypedDict):
    """A file in the job's output folder: its name, what it holds (``onnx``, ``safetensors``, ``plan``,
    ``csv``, ``torchscript-int8``, ``onnx-int8``, ``calibration``, ``packed-weights``) and its size."""

    name: str
    kind: str
    bytes: int


def artifact(path: Path, kind: str, size: int | None = None) -> Artifact:
    """The record of a file just written (its size read from disk unless given)."""
    return Artifact(name=path.name, kind=kind, bytes=int(size if size is not None else path.stat().st_size))


@dataclass
class JobResult:
    """A finished job.

    - ``metrics``: ``before`` and (except analysis jobs) ``after`` (params, flops, file sizes, latencies,
      accuracy), ``fidelity`` to the original, and by job kind ``finetune``, ``auto``, ``pruned``,
      ``quantization``, ``sensitivity``.
    - ``layers``: one row per layer of the original model: params, FLOPs, sparsity, shapes and channels
      before and after.
    - ``artifacts``: the files written to the recipe's ``output_dir``.
    - ``warnings``: what the user should know (layers left whole, targets missed ...).
    - ``timings``: seconds per step, ``total_s`` included.
    - ``log``: every progress message, in order.
    """

    metrics: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
