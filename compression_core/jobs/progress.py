"""Where a job stands in time: the plan of its stages in estimated seconds, the bar's fraction and the estimate.

A job's bar is shared out by time, not by stage. :meth:`ProgressPlan.for_job`
reads the recipe before the job runs and gives each stage it will pass an
estimate in seconds: a fixed part (loading, measuring, exporting: small
defaults, :data:`STAGE_SECONDS`) plus, for the stages that train (fine-tuning,
quantization-aware training, pruners that train), their optimizer steps (epochs
x batches per epoch, or ``training_steps`` x rounds) at a default
:data:`STEP_S` each. With those defaults a 400-epoch fine-tuning owns nearly the
whole bar, and a job without training spends its bar on measuring.

As the job runs, :class:`ProgressEstimate` corrects the plan from what it
measures, in one place:

- the stage in progress: its time since its first report with some of it done,
  divided by the share done since (after the first epoch, or the first batch
  windows, the rest of a fine-tuning is known);
- training ahead: the seconds per step measured in the last training stage;
- fixed stages ahead: their defaults scaled by the pace of the fixed stages done
  (actual over planned seconds, with :data:`PACE_PRIOR_S` of default-paced work
  counted in).

The estimate of the time left (``eta_s``) is ``None`` until those rates have a
basis: a fixed stage done, and training timed between two reports of a stage when
training is ahead (so a training's warm-up is left out of its rate).
The bar never goes back: each report moves it by the share of the work left that
was done since the previous report, so when the estimate of the work left changes,
the part of the bar left is shared out again over it.

Example::

    >>> plan = ProgressPlan([PlannedStage("load", 2.0), PlannedStage("finetune", 2.0, steps=960)])
    >>> {stage: (round(start, 2), round(end, 2)) for stage, (start, end) in plan.fractions().items()
    ...  if end > start}
    {'load': (0.0, 0.04), 'finetune': (0.04, 1.0)}
    >>> clock = iter([0.0, 4.0, 9.0, 14.0])
    >>> estimate = ProgressEstimate(plan, clock=lambda: next(clock))
    >>> estimate.update("load", 0.0).eta_s is None          # nothing measured yet
    True
    >>> estimate.update("finetune", 0.0).eta_s is None      # training ahead, no step timed
    True
    >>> estimate.update("finetune", 0.25).eta_s is None     # a first point (after the warm-up)
    True
    >>> round(estimate.update("finetune", 0.5).eta_s, 1)    # a quarter in 5 s: 10 s left
    10.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..algorithms import AlgorithmKind, AlgorithmSpec, QuantizedForm, get_algorithm
from ..evaluation import TrainingOptions, steps_per_epoch

#: Every stage a job can pass, in the order jobs pass them. Analysis jobs go from ``measure_original`` to
#: ``analyse``; pruning jobs skip it; quantization jobs go from ``measure_original`` to ``quantize``;
#: prune-then-quantize jobs pass every pruning stage, then ``quantize``, then ``export``; every job that
#: compresses ends timing its forms against the original (``measure_latency``).
STAGES: tuple[str, ...] = ("load", "measure_original", "analyse", "dependency_groups", "prune", "speedup", "finetune",
                           "measure_compressed", "quantize", "measure_quantized", "export_int8_onnx", "export",
                           "measure_latency", "done")

#: Default seconds of the stages' fixed parts (before anything is measured; the job's pace scales them).
STAGE_SECONDS: dict[str, float] = {
    "load": 2.0, "measure_original": 3.0, "dependency_groups": 2.0, "prune": 2.0, "speedup": 2.0,
    "measure_compressed": 3.0, "quantize": 3.0, "measure_quantized": 6.0, "export_int8_onnx": 3.0, "export": 2.0,
}
#: Default seconds of one optimizer step, until the job has timed its own.
STEP_S = 0.05
#: Seconds of work at the default pace counted into the measured pace (so the first stages done only nudge it).
PACE_PRIOR_S = 3.0
#: Default seconds of one evaluation of the metric (per fine-tuning epoch, per sensitivity trial).
EVALUATION_S = 0.5
#: Layer groups a sensitivity analysis is guessed to try before it says how many (it reports its total).
ANALYSED_GROUPS_GUESS = 5
#: Timed rows a compressing job's latency measurement has per batch size (PyTorch eager and ONNX).
LATENCY_FORMS = 2


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a job's plan: ``seconds`` of fixed work (at the default pace) and ``steps`` of training."""

    name: str
    seconds: float = 0.0
    steps: int = 0


@dataclass(frozen=True)
class Estimate:
    """The bar's fraction after a report, and the seconds left (``None`` until measured rates give a basis)."""

    fraction: float
    eta_s: float | None
    stage_started_at: float  # wall-clock (``time.time()``) start of the stage in progress


class ProgressPlan:
    """A job's stages in :data:`STAGES` order with their estimated seconds; stages not listed weigh nothing."""

    def __init__(self, stages: Iterable[PlannedStage] = ()):
        given = {stage.name: stage for stage in stages}
        unknown = set(given) - set(STAGES)
        if unknown:
            raise KeyError(f"no such stage: {', '.join(sorted(unknown))}")
        self.stages: dict[str, PlannedStage] = {name: given.get(name, PlannedStage(name)) for name in STAGES}

    @classmethod
    def for_job(cls, spec: AlgorithmSpec, params: Mapping[str, Any], *, training: TrainingOptions,
                train_samples: int, speedup: bool, latency_rows: int, latency_budget_s: float) -> "ProgressPlan":
        """The plan of a job from its algorithm's spec, validated params and data size; ``latency_rows`` is the
        batch sizes timed per form (times :data:`LATENCY_FORMS`).

        Example::

            >>> from compression_core.algorithms import get_algorithm
            >>> plan = ProgressPlan.for_job(get_algorithm("L1NormPruner"), {"config_list": []},
            ...                             training=TrainingOptions(finetune_epochs=20), train_samples=60000,
            ...                             speedup=True, latency_rows=2, latency_budget_s=1.0)
            >>> plan.stages["finetune"].steps, round(plan.fractions()["finetune"][0], 3)
            (18760, 0.009)
        """
        stages = [PlannedStage("load", STAGE_SECONDS["load"]),
                  PlannedStage("measure_original", STAGE_SECONDS["measure_original"])]
        if spec.kind == AlgorithmKind.ANALYSIS:
            trials = len(params.get("sparsities") or [0.5]) * ANALYSED_GROUPS_GUESS
            return cls([*stages, PlannedStage("analyse", trials * EVALUATION_S)])
        then = params.get("quantization")
        if spec.kind == AlgorithmKind.PRUNING:
            per_epoch = steps_per_epoch(max(train_samples, 1), training.batch_size)
            if params.get("dependency_aware"):
                stages.append(PlannedStage("dependency_groups", STAGE_SECONDS["dependency_groups"]))
            stages.append(PlannedStage("prune", STAGE_SECONDS["prune"], steps=pruner_training_steps(spec, params)))
            if speedup:
                stages.append(PlannedStage("speedup", STAGE_SECONDS["speedup"]))
            if training.finetune_epochs:
                stages.append(PlannedStage("finetune", training.finetune_epochs * EVALUATION_S,
                                           steps=training.finetune_epochs * per_epoch))
            stages += [PlannedStage("measure_compressed", STAGE_SECONDS["measure_compressed"]),
                       PlannedStage("export", STAGE_SECONDS["export"])]
        if spec.kind == AlgorithmKind.QUANTIZATION or then:
            quantizer = get_algorithm(then["algorithm"]) if then else spec
            quantizer_params = then["params"] if then else params
            stages += [PlannedStage("quantize", STAGE_SECONDS["quantize"],
                                    steps=quantizer_training_steps(quantizer, quantizer_params, train_samples)),
                       PlannedStage("measure_quantized", STAGE_SECONDS["measure_quantized"])]
            if quantizer.quantized_form == QuantizedForm.INT8:
                stages.append(PlannedStage("export_int8_onnx", STAGE_SECONDS["export_int8_onnx"]))
        # Each row runs its fewest rounds, then goes on until its interval is tight or its budget is spent.
        stages.append(PlannedStage("measure_latency", LATENCY_FORMS * latency_rows * latency_budget_s))
        return cls(stages)

    def estimate_s(self, stage: str, *, step_s: float = STEP_S, pace: float = 1.0) -> float:
        """Seconds ``stage`` is expected to take at ``step_s`` per training step and ``pace`` times the defaults."""
        planned = self.stages[stage]
        return planned.seconds * pace + planned.steps * step_s

    def fractions(self) -> dict[str, tuple[float, float]]:
        """``stage: (start, end)`` on the bar if every stage takes its estimate (the bar before any measurement).

        Example::

            >>> ProgressPlan([PlannedStage("load", 1.0), PlannedStage("export", 3.0)]).fractions()["export"]
            (0.25, 1.0)
        """
        total = sum(self.estimate_s(stage) for stage in STAGES) or 1.0
        spans, start = {}, 0.0
        for stage in STAGES:
            end = min(start + self.estimate_s(stage) / total, 1.0)
            spans[stage] = (start, end)
            start = end
        spans["done"] = (1.0, 1.0)
        return spans


def pruner_training_steps(spec: AlgorithmSpec, params: Mapping[str, Any]) -> int:
    """Optimizer steps a pruner that trains is expected to take: ``training_steps`` per round, times its rounds
    (a searching pruner's candidates are not counted: its measured rate corrects the estimate)."""
    if not spec.needs_data or "training_steps" not in params:
        return 0
    rounds = params.get("total_iteration") or params.get("iterations") or 1
    return int(params["training_steps"]) * int(rounds) * int(params.get("admm_iterations") or 1)


def quantizer_training_steps(spec: AlgorithmSpec, params: Mapping[str, Any], train_samples: int) -> int:
    """Optimizer steps of a quantizer that trains: its epochs over the fit part of the train split."""
    if not spec.trains:
        return 0
    training = TrainingOptions.from_params(params.get("training"))
    fit_samples = max(1, round(train_samples * 0.8))  # data.holdout keeps 80 % to fit
    return int(params.get("epochs") or 1) * steps_per_epoch(fit_samples, training.batch_size)


class ProgressEstimate:
    """The bar's fraction and the estimate of the time left, from the plan and the rates the job measures.

    :meth:`update` takes the stage in progress and the share of it done (0 to 1); see the module docstring
    for the rules. ``clock`` gives seconds (``time.monotonic`` by default).
    """

    def __init__(self, plan: ProgressPlan, clock: Callable[[], float] = time.monotonic):
        self.plan = plan
        self.clock = clock
        self.fraction = 0.0
        self.stage: str | None = None
        self.share = 0.0  # of the stage in progress, done
        self.stage_started = 0.0
        self.stage_started_at = time.time()
        self.anchor: tuple[float, float] | None = None  # (time, share) of the stage's first measured point
        self.step_s: float | None = None  # measured seconds per training step
        self.finished: dict[str, float] = {}  # seconds each finished stage took

    def replan(self, plan: ProgressPlan) -> None:
        """Use ``plan`` for the work left (once the job's data and params are known); the bar stays where it is."""
        self.plan = plan

    @property
    def pace(self) -> float | None:
        """Actual over planned seconds of the fixed stages done (by the plan in use: the job's own, once the
        runner has it), ``None`` before one is done."""
        fixed = [(actual, self.plan.stages[stage]) for stage, actual in self.finished.items()]
        fixed = [(actual, stage.seconds) for actual, stage in fixed if not stage.steps and stage.seconds]
        if not fixed:
            return None
        # PACE_PRIOR_S of default-paced work counted in: one quick stage does not make the rest look free.
        actual_s, planned_s = sum(actual for actual, _ in fixed), sum(planned for _, planned in fixed)
        return (actual_s + PACE_PRIOR_S) / (planned_s + PACE_PRIOR_S)

    def update(self, stage: str, share: float) -> Estimate:
        """Move to ``share`` (0 to 1) of ``stage``; the bar never goes back, to an earlier stage or within one."""
        now = self.clock()
        index = STAGES.index(stage)
        if self.stage is not None and index < STAGES.index(self.stage):
            stage, share = self.stage, self.share
        share = min(max(share, 0.0), 1.0)
        if stage == "done":
            self._leave(now)
            self.stage, self.share, self.fraction = stage, 1.0, 1.0
            return Estimate(1.0, 0.0, self.stage_started_at)
        if stage != self.stage:
            left = self._stage_left_s(now) + self._between_s(self.stage, stage)
            self._leave(now)
            self.stage, self.share, self.stage_started, self.stage_started_at = stage, 0.0, now, time.time()
            self.anchor = None
            done_s = left + share * self._stage_total_s(now, share)
            self.share = share
        else:
            share = max(share, self.share)
            done_s = (share - self.share) * self._stage_total_s(now, share)
            self.share = share
        if self.anchor is None and share > 0:
            self.anchor = (now, share)
        self._measure_steps(now)
        remaining = self._stage_left_s(now) + self._between_s(stage, "done")
        if done_s + remaining > 0:
            self.fraction += (1.0 - self.fraction) * done_s / (done_s + remaining)
        return Estimate(min(self.fraction, 1.0), remaining if self._has_basis() else None, self.stage_started_at)

    # -- the rates --------------------------------------------------------------------------------------------
    def _stage_total_s(self, now: float, share: float) -> float:
        """The stage in progress, in seconds: measured once any of it is done, from its first measured point on
        (the stage's warm-up, its first batches and setup, left out) once there are two."""
        if self.anchor is not None and share > self.anchor[1] and now > self.anchor[0]:
            return (now - self.anchor[0]) / (share - self.anchor[1])
        elapsed = now - self.stage_started
        if share > 0 and elapsed > 0:
            return elapsed / share
        return self._planned_s(self.stage)

    def _stage_left_s(self, now: float) -> float:
        if self.stage is None:
            return 0.0
        return max(self._stage_total_s(now, self.share) * (1.0 - self.share), 0.0)

    def _planned_s(self, stage: str | None) -> float:
        if stage is None:
            return 0.0
        return self.plan.estimate_s(stage, step_s=self.step_s or STEP_S, pace=self.pace or 1.0)

    def _between_s(self, after: str | None, before: str) -> float:
        """Planned seconds of the stages strictly between ``after`` (None: the start) and ``before``."""
        first = STAGES.index(after) + 1 if after is not None else 0
        return sum(self._planned_s(stage) for stage in STAGES[first:STAGES.index(before)])

    def _measure_steps(self, now: float) -> None:
        planned = self.plan.stages[self.stage]
        if planned.steps and self.anchor is not None and self.share > self.anchor[1] and now > self.anchor[0]:
            # The stage's fixed part (evaluations) is in its time too: a step costs what it costs in this job.
            self.step_s = self._stage_total_s(now, self.share) / planned.steps

    def _leave(self, now: float) -> None:
        """Book the stage in progress as finished (a fixed stage's time sets the pace)."""
        if self.stage is not None:
            self.finished[self.stage] = now - self.stage_started

    def _has_basis(self) -> bool:
        """A fixed stage done, and training timed (over two points of a stage) if there is training left."""
        if self.pace is None:
            return False
        ahead = STAGES[STAGES.index(self.stage):]
        return self.step_s is not None or not any(self.plan.stages[stage].steps for stage in ahead)
