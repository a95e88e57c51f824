"""NNI's evaluator idea: the user's training loop, optimizer and metric in one object.

Data-dependent pruners (activation statistics, Taylor scores, Slim's and
ADMM's regularised training, AGP, Lottery Ticket, NetAdapt, ...) never see
the user's data directly. They ask the evaluator to train the model for some
steps (adding their own loss terms and running their own code around each
optimizer step) and to evaluate it.

Example::

    >>> import torch, torch.nn as nn, torch.nn.functional as F
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
    ...     for _ in range(max_epochs or 1):
    ...         for i in range(0, 64, 16):
    ...             optimizers.zero_grad()
    ...             training_step((x[i:i + 16], y[i:i + 16]), model).backward()
    ...             optimizers.step()
    >>> def training_step(batch, model):
    ...     return F.cross_entropy(model(batch[0]), batch[1])
    >>> evaluator = TorchEvaluator(training_func, lambda params: torch.optim.SGD(params, lr=0.1), training_step,
    ...                            evaluating_func=lambda model: float((model(x).argmax(1) == y).float().mean()))
    >>> evaluator.train(nn.Linear(4, 2), max_steps=3)
    3
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

LossTerm = Callable[[nn.Module], torch.Tensor]
StepHook = Callable[[nn.Module], None]


class _StepBudgetReached(Exception):
    """Raised from inside the user's loop once ``max_steps`` optimizer steps are done."""


def _rebuild_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """The same optimizer (class, per-group settings) over ``model``'s parameters.

    Pruners train copies of the model (NetAdapt, simulated annealing,
    sensitivity analysis), so an optimizer the user built for the original
    cannot be used as is. Parameters are matched by name; parameters it did
    not cover get its defaults.
    """
    owner_names = getattr(optimizer, "_condense_param_names", None)
    by_id = {id(p): name for name, p in model.named_parameters()}
    groups = []
    claimed: set[str] = set()
    for index, group in enumerate(optimizer.param_groups):
        settings = {k: v for k, v in group.items() if k != "params"}
        names = []
        for position, p in enumerate(group["params"]):
            name = by_id.get(id(p))
            if name is None and owner_names is not None:
                name = owner_names[index][position]
            if name is not None:
                names.append(name)
        claimed.update(names)
        groups.append((names, settings))
    params = dict(model.named_parameters())
    param_groups = [{"params": [params[n] for n in names if n in params], **settings} for names, settings in groups]
    param_groups = [g for g in param_groups if g["params"]]
    rest = [p for n, p in params.items() if n not in claimed]
    if rest:
        param_groups.append({"params": rest})
    fresh = type(optimizer)(param_groups, **optimizer.defaults)
    return fresh


def _remember_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    by_id = {id(p): name for name, p in model.named_parameters()}
    names = [[by_id.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]
    if all(n is not None for group in names for n in group):
        optimizer._condense_param_names = names  # type: ignore[attr-defined]


class TorchEvaluator:
    """Training loop + optimizer + training step + metric, as NNI 3.0's ``TorchEvaluator``.

    - ``training_func(model, optimizers, training_step, lr_schedulers=None,
      max_steps=None, max_epochs=None)``: the user's loop. It must call
      ``training_step(batch, model)`` for the loss and step the optimizer(s)
      it is given; it should honour ``max_steps`` / ``max_epochs`` (the
      evaluator also stops it once ``max_steps`` optimizer steps are done).
    - ``optimizers``: an optimizer (or a list), or a factory
      ``params -> optimizer`` (a lambda or ``functools.partial(torch.optim.SGD, lr=0.1)``);
      no special tracing is needed. An optimizer instance is rebuilt over the
      parameters of whichever model is trained (same class and settings).
    - ``training_step(batch, model) -> loss``.
    - ``lr_schedulers``: ``None``, or a factory ``optimizer -> scheduler`` (or a list).
    - ``evaluating_func(model) -> float`` or a dict with a ``"default"`` entry.
    - ``dummy_input``: an example input (pruners use it for tracing).
    """

    def __init__(
        self,
        training_func: Callable[..., Any],
        optimizers: Any,
        training_step: Callable[[Any, nn.Module], torch.Tensor],
        lr_schedulers: Any = None,
        dummy_input: Any = None,
        evaluating_func: Callable[[nn.Module], Any] | None = None,
    ):
        if not callable(training_func):
            raise ValueError("TorchEvaluator: training_func must be callable (model, optimizers, training_step, ...)")
        if not callable(training_step):
            raise ValueError("TorchEvaluator: training_step must be callable (batch, model) -> loss")
        self.training_func = training_func
        self.training_step = training_step
        self._optimizer_specs = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        if not self._optimizer_specs or not all(
            isinstance(o, torch.optim.Optimizer) or callable(o) for o in self._optimizer_specs
        ):
            raise ValueError("TorchEvaluator: optimizers must be torch optimizers or factories params -> optimizer")
        self._single_optimizer = not isinstance(optimizers, (list, tuple))
        if lr_schedulers is None:
            self._scheduler_specs: list[Any] = []
        else:
            self._scheduler_specs = list(lr_schedulers) if isinstance(lr_schedulers, (list, tuple)) else [lr_schedulers]
        for spec in self._scheduler_specs:
            if isinstance(spec, torch.optim.lr_scheduler.LRScheduler) or not callable(spec):
                raise ValueError("TorchEvaluator: pass lr_schedulers as factories optimizer -> scheduler "
                                 "(e.g. lambda opt: torch.optim.lr_scheduler.StepLR(opt, 10)), so they can "
                                 "follow the optimizer to pruned copies of the model")
        self.dummy_input = dummy_input
        self.evaluating_func = evaluating_func
        self.steps_done = 0
        #: Run after every optimizer step of every ``train()`` call, whoever calls it (a job's progress
        #: reports, which can also stop the training by raising).
        self.step_hooks: list[StepHook] = []
        #: The loss of the last training step (detached; read it only when reporting: ``float`` waits for it).
        self.last_loss: torch.Tensor | None = None

    # -- public API --------------------------------------------------------
    def bind_model(self, model: nn.Module) -> None:
        """Remember parameter names of optimizer instances built for ``model`` (lets copies reuse their settings)."""
        for spec in self._optimizer_specs:
            if isinstance(spec, torch.optim.Optimizer):
                _remember_names(spec, model)

    def train(
        self,
        model: nn.Module,
        max_steps: int | None = None,
        max_epochs: int | None = None,
        *,
        loss_terms: Sequence[LossTerm] = (),
        before_step: Sequence[StepHook] = (),
        after_step: Sequence[StepHook] = (),
        update_weights: bool = True,
    ) -> int:
        """Run the user's loop on ``model``; returns the number of optimizer steps taken.

        ``loss_terms(model)`` are added to every training step's loss (Slim's
        and ADMM's regularisers, distillation); ``before_step(model)`` runs
        after backward and before each optimizer step (gradients are there:
        Taylor scores), ``after_step(model)`` after it (AGP's schedule,
        re-applying masks). With ``update_weights=False`` the optimizer step
        is skipped, so only statistics are gathered.
        """
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        optimizers = [self._optimizer_for(spec, model) for spec in self._optimizer_specs]
        counter = {"steps": 0}
        originals = []
        for optimizer in optimizers:
            originals.append(optimizer.step)
            optimizer.step = self._counted_step(optimizer, model, counter, max_steps, before_step,
                                                (*after_step, *self.step_hooks), update_weights,
                                                optimizers)  # type: ignore[method-assign]
        # Built after the step is wrapped: schedulers check that step() was called before them.
        schedulers = [factory(optimizers[0]) for factory in self._scheduler_specs]

        def step_with_terms(batch: Any, trained: nn.Module) -> torch.Tensor:
            loss = self.training_step(batch, trained)
            for term in loss_terms:
                loss = loss + term(trained)
            self.last_loss = loss.detach()
            return loss

        was_training = model.training
        model.train()
        try:
            # Pruners compute masks under no_grad; training needs gradients whatever the caller's mode.
            with torch.enable_grad():
                self.training_func(
                    model,
                    optimizers[0] if self._single_optimizer else optimizers,
                    step_with_terms,
                    **self._schedule_kwargs(schedulers),
                    max_steps=max_steps,
                    max_epochs=max_epochs,
                )
        except _StepBudgetReached:
            pass
        finally:
            for optimizer, step in zip(optimizers, originals):
                optimizer.step = step  # type: ignore[method-assign]
            model.train(was_training)
        self.steps_done += counter["steps"]
        return counter["steps"]

    def evaluate(self, model: nn.Module) -> float:
        """The metric of ``model`` (``evaluating_func``'s number, or its ``"default"`` entry)."""
        if self.evaluating_func is None:
            raise ValueError("this evaluator has no evaluating_func: give one to rank or check models by a metric")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = self.evaluating_func(model)
        finally:
            model.train(was_training)
        if isinstance(value, Mapping):
            if "default" not in value:
                raise ValueError("evaluating_func returned a dict without a 'default' entry")
            value = value["default"]
        return float(value)

    # -- helpers -------------------------------------------------------------
    def _optimizer_for(self, spec: Any, model: nn.Module) -> torch.optim.Optimizer:
        if isinstance(spec, torch.optim.Optimizer):
            own = {id(p) for group in spec.param_groups for p in group["params"]}
            if own == {id(p) for p in model.parameters()}:
                return spec
            return _rebuild_optimizer(spec, model)
        optimizer = spec(model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"the optimizer factory returned {type(optimizer).__name__}, not a torch optimizer")
        return optimizer

    def _schedule_kwargs(self, schedulers: list[Any]) -> dict[str, Any]:
        if not schedulers:
            value = None
        else:
            value = schedulers[0] if len(schedulers) == 1 else schedulers
        params = inspect.signature(self.training_func).parameters
        if "lr_schedulers" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return {"lr_schedulers": value}
        return {}

    @staticmethod
    def _counted_step(optimizer, model, counter, max_steps, before_step, after_step, update_weights, all_opts):
        original = optimizer.step
        # With several optimizers, one "step" of the loop is the step of the first.
        leader = optimizer is all_opts[0]

        def step(_optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            if max_steps is not None and counter["steps"] >= max_steps:
                raise _StepBudgetReached
            if leader:
                for hook in before_step:
                    hook(model)
            result = original(*args, **kwargs) if update_weights else None
            if leader:
                counter["steps"] += 1
                for hook in after_step:
                    hook(model)
                if max_steps is not None and counter["steps"] >= max_steps:
                    raise _StepBudgetReached
            return result

        # A bound method, as LR schedulers expect to find on an optimizer.
        return types.MethodType(step, optimizer)



class LossRecorder:
    """The training loss of each step an evaluator takes, averaged per epoch: a job's training curve.

    It wraps ``evaluator.training_step`` (the loss before loss terms are added); the losses stay on their
    device until :meth:`epoch_mean`, one host sync per epoch rather than per step. With the evaluator of
    this module's example::

        >>> recorder = LossRecorder(evaluator)
        >>> evaluator.train(nn.Linear(4, 2), max_epochs=1)
        4
        >>> recorder.epoch_mean() > 0
        True
    """

    def __init__(self, evaluator: TorchEvaluator):
        self._losses: list[torch.Tensor] = []
        step = evaluator.training_step

        def recorded_step(batch: Any, model: nn.Module) -> torch.Tensor:
            loss = step(batch, model)
            self._losses.append(loss.detach().float())
            return loss

        evaluator.training_step = recorded_step

    def epoch_mean(self) -> float | None:
        """The mean loss of the steps since the last call (None when there were none); starts a new epoch."""
        losses, self._losses = self._losses, []
        return float(torch.stack(losses).mean()) if losses else None
