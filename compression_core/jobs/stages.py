"""A job's progress: its stages, where each sits on the 0-1 progress bar, and the reporter.

Every progress report of a job goes through :class:`Reporter` with a stage
name from :data:`STAGES`, so the bar's layout is this one table. A stage
that repeats (fine-tuning epochs, sensitivity trials) reports ``done`` of
``total`` and moves through its span.

Example::

    >>> seen = []
    >>> report = Reporter(lambda fraction, message: seen.append((round(fraction, 3), message)))
    >>> report("prune", "pruning with L1NormPruner")
    >>> report("finetune", "fine-tuning: epoch 1 of 2", done=1, total=2)
    >>> seen
    [(0.4, 'pruning with L1NormPruner'), (0.575, 'fine-tuning: epoch 1 of 2')]
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]

#: ``stage: (start, end)`` on the progress bar, in the order a job passes them. Analysis jobs go from
#: ``measure_original`` to ``analyse``; pruning jobs skip it; quantization jobs go from ``measure_original``
#: to ``quantize``; prune-then-quantize jobs pass every pruning stage, then ``quantize``, then ``export``; every
#: job that compresses ends timing its forms against the original (``measure_latency``).
STAGES: dict[str, tuple[float, float]] = {
    "load": (0.02, 0.08),
    "measure_original": (0.08, 0.10),
    "analyse": (0.10, 0.90),
    "dependency_groups": (0.35, 0.40),
    "prune": (0.40, 0.50),
    "speedup": (0.50, 0.55),
    "finetune": (0.55, 0.60),
    "measure_compressed": (0.60, 0.62),
    "quantize": (0.62, 0.70),
    "measure_quantized": (0.70, 0.78),
    "export_int8_onnx": (0.78, 0.85),
    "export": (0.85, 0.90),
    "measure_latency": (0.90, 1.00),
    "done": (1.00, 1.00),
}


class JobCancelled(Exception):
    """Raised by a progress callback to stop the job between two steps."""


class Reporter:
    """Sends ``(fraction, message)`` to the job's progress callback and keeps the messages as the job's log.

    The callback may raise :class:`JobCancelled` to stop the job there. Each of ``on_stage`` is called with
    the stage's name first (the job's GPU memory is recorded per stage).
    """

    def __init__(self, progress: Progress | None = None):
        self.progress = progress or (lambda fraction, message: None)
        self.log: list[str] = []
        self.stage: str | None = None  # the last stage reported: where a failure happened
        self.on_stage: list[Callable[[str], None]] = []

    def __call__(self, stage: str, message: str, *, done: int = 0, total: int = 1) -> None:
        start, end = STAGES[stage]
        for watcher in self.on_stage:
            watcher(stage)
        self.stage = stage
        self.log.append(message)
        self.progress(start + (end - start) * done / total, message)
