"""A job's progress reports: the stage names, the callback's contract and the reporter every report goes through.

Every report of a job goes through :class:`Reporter` with a stage name from
:data:`STAGES` and the share of the stage done; the reporter turns it into the
bar's fraction and the estimate of the time left (:mod:`.progress`). Steps of
a job (a stage starting, an epoch) go into its log; batch windows of a training
(:meth:`Reporter.window`) only move the bar, at most every
:data:`WINDOW_S` seconds and :data:`WINDOW_BATCHES` batches.

The callback is ``progress(fraction, message)``; one that also takes a
``detail`` keyword gets where the job stands as a dict: ``stage``, ``done``,
``total`` and ``unit`` (with ``batch`` and ``batches`` inside an epoch),
``stage_started_at`` and ``updated_at`` (ISO 8601, UTC), ``eta_s`` (seconds
left, ``None`` until there is a basis) and ``in_log`` (False for batch windows).

Example::

    >>> seen = []
    >>> report = Reporter(lambda fraction, message, detail=None: seen.append((message, detail["eta_s"])))
    >>> report("load", "loading model")
    >>> report("done", "done")
    >>> seen
    [('loading model', None), ('done', 0.0)]
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .progress import STAGES, ProgressEstimate, ProgressPlan

__all__ = ["STAGES", "JobCancelled", "Progress", "Reporter"]

Progress = Callable[[float, str], None]

#: A training's batch windows are reported at most every this many seconds ...
WINDOW_S = 2.0
#: ... and this many batches (whichever is rarer), so a worker does not write to the database every batch.
WINDOW_BATCHES = 10


class JobCancelled(Exception):
    """Raised by a progress callback to stop the job between two steps."""


def _takes_detail(progress: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(progress).parameters
    except (TypeError, ValueError):  # a builtin without a signature: the plain contract
        return False
    return "detail" in parameters


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="seconds")


class Reporter:
    """Sends ``(fraction, message)`` (and the detail, to a callback that takes it) to the job's progress callback
    and keeps the steps' messages as the job's log.

    The callback may raise :class:`JobCancelled` to stop the job there. Each of ``on_stage`` is called with
    the stage's name first (the job's GPU memory is recorded per stage). ``estimate`` starts from a plan with
    default weights; the runner gives it the job's own (:meth:`.progress.ProgressEstimate.replan`).
    """

    def __init__(self, progress: Callable[..., Any] | None = None, plan: ProgressPlan | None = None):
        self.progress = progress or (lambda fraction, message: None)
        self._detail = _takes_detail(self.progress)
        self.log: list[str] = []
        self.stage: str | None = None  # the last stage reported: where a failure happened
        self.on_stage: list[Callable[[str], None]] = []
        self.estimate = ProgressEstimate(plan or ProgressPlan())
        self._window_at = 0.0  # monotonic time of the last report sent
        self._window_batches = 0

    def __call__(self, stage: str, message: str, *, done: int = 0, total: int = 1, unit: str | None = None,
                 batch: tuple[int, int] | None = None) -> None:
        """A step of the job: ``done`` of ``total`` units of ``stage`` finished (and ``batch`` of ``batches`` of
        the next one, inside an epoch); the message goes into the log."""
        if stage not in STAGES:
            raise KeyError(stage)
        for watcher in self.on_stage:
            watcher(stage)
        self.stage = stage
        self.log.append(message)
        self._send(stage, message, done, total, unit, batch, in_log=True)

    def window_due(self) -> bool:
        """Count one batch; True when :data:`WINDOW_S` seconds and :data:`WINDOW_BATCHES` batches have passed
        since the last report (then send a :meth:`window`)."""
        self._window_batches += 1
        return self._window_batches >= WINDOW_BATCHES and time.monotonic() - self._window_at >= WINDOW_S

    def window(self, stage: str, message: str, *, done: int, total: int, unit: str | None = None,
               batch: tuple[int, int] | None = None) -> None:
        """Where a training is between two steps (call it when :meth:`window_due`): moves the bar, not logged."""
        self._send(stage, message, done, total, unit, batch, in_log=False)

    def _send(self, stage: str, message: str, done: int, total: int, unit: str | None,
              batch: tuple[int, int] | None, *, in_log: bool) -> None:
        self._window_at, self._window_batches = time.monotonic(), 0
        units = done + (batch[0] / batch[1] if batch else 0.0)
        estimate = self.estimate.update(stage, units / total if total else 0.0)
        if not self._detail:
            self.progress(estimate.fraction, message)
            return
        detail: dict[str, Any] = {"stage": stage, "done": done, "total": total, "unit": unit}
        if batch:
            detail.update(batch=batch[0], batches=batch[1])
        eta = None if estimate.eta_s is None else round(estimate.eta_s, 1)
        detail.update(stage_started_at=_iso(estimate.stage_started_at), eta_s=eta, updated_at=_iso(time.time()),
                      in_log=in_log)
        self.progress(estimate.fraction, message, detail=detail)


class TrainingReports:
    """A step hook of an evaluator (its ``step_hooks``) reporting a training to the job's reporter.

    With ``epochs``: batch windows "<label>: epoch 3 of 400, batch 120 of 469, loss 0.41" and, with
    ``log_epochs``, each finished epoch as a step "<label>: epoch 3 of 400" (where the job can be cancelled).
    Without: windows "<label>: training step 120 of about 400, loss 0.41" (``steps``: the plan's count, 0 when
    unknown). ``loss_of()`` gives the last training loss (the evaluator's ``last_loss``).

    Example::

        >>> seen = []
        >>> report = Reporter(lambda fraction, message: seen.append(message))
        >>> hook = TrainingReports(report, "quantize", "quantization-aware training", per_epoch=2, epochs=2,
        ...                        log_epochs=True)
        >>> for _ in range(4):
        ...     hook(None)
        >>> seen
        ['quantization-aware training: epoch 1 of 2', 'quantization-aware training: epoch 2 of 2']
    """

    def __init__(self, report: Reporter, stage: str, label: str, *, per_epoch: int = 1, epochs: int | None = None,
                 steps: int = 0, log_epochs: bool = False, loss_of: Callable[[], Any] | None = None):
        self.report, self.stage, self.label = report, stage, label
        self.per_epoch, self.epochs, self.steps, self.log_epochs = max(per_epoch, 1), epochs, steps, log_epochs
        self.loss_of = loss_of or (lambda: None)
        self.done = 0

    def __call__(self, model: Any) -> None:
        self.done += 1
        if self.epochs is not None:
            epoch, batch = divmod(self.done - 1, self.per_epoch)
            epoch, batch = epoch + 1, batch + 1
            if batch == self.per_epoch and self.log_epochs:
                self.report(self.stage, f"{self.label}: epoch {epoch} of {self.epochs}", done=epoch,
                            total=self.epochs, unit="epoch")
            elif self.report.window_due():
                self.report.window(self.stage, f"{self.label}: epoch {epoch} of {self.epochs}, batch {batch} of "
                                   f"{self.per_epoch}{self._loss()}", done=epoch - 1, total=self.epochs,
                                   unit="epoch", batch=(batch, self.per_epoch))
        elif self.report.window_due():
            of = f" of about {self.steps}" if self.steps else ""
            self.report.window(self.stage, f"{self.label}: training step {self.done}{of}{self._loss()}",
                               done=min(self.done, self.steps), total=self.steps, unit="step")

    def _loss(self) -> str:
        loss = self.loss_of()
        return "" if loss is None else f", loss {float(loss):.3g}"
