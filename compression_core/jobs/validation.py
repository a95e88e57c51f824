"""A recipe checked against its model, once, by :func:`validate_recipe`, before any long work starts.

Two depths of the same check:

- the web request runs the cheap one: the params against the algorithm's
  schema, the config keys, the dataset's name or file header against the
  model's input, what needs data, which layers the config list selects and
  whether the algorithm can compress them (its class is built on the model;
  nothing runs, no data is read);
- the worker runs the full one: the same, plus one forward pass on an
  example input of the recipe's shape.

Example::

    >>> params = validate_recipe(recipe)                     # in the web request
    >>> params = validate_recipe(recipe, model, full=True)   # in the worker, on the loaded model
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..algorithms import AlgorithmKind, AlgorithmSpec, algorithms_of_kind, get_algorithm, validate_params
from ..config import select_modules
from ..evaluation import TorchEvaluator, TrainingOptions
from ..pruning.base import PRUNABLE_TYPES
from .recipe import Recipe


def validate_recipe(recipe: Recipe, model: nn.Module | None = None, *, full: bool = False) -> dict[str, Any]:
    """Check ``recipe`` (against ``model``, loaded from the recipe when not given); return the validated
    params (defaults filled, config list canonical). Raises ``ValueError`` saying what is wrong."""
    spec = get_algorithm(recipe.algorithm)
    params = validate_params(recipe.algorithm, recipe.params)
    if params.get("quantization"):
        params["quantization"] = validate_quantize_after(params["quantization"])
    dataset = recipe.dataset_source()
    if dataset is not None:
        dataset.check_fits(recipe.input_shape)
    for name, needs in data_needs(spec, params).items():
        if needs and dataset is None:
            raise ValueError(f"{name} needs data: choose a dataset")
    training = TrainingOptions.from_params(params.get("training"))
    if spec.kind == AlgorithmKind.QUANTIZATION:
        if training.finetune_epochs:
            raise ValueError("training.finetune_epochs is fine-tuning after pruning; a quantization-aware trainer "
                             "trains for its own 'epochs'")
        model = model if model is not None else recipe.model.load()
        check_quantizer(spec, params, model)
    else:
        if spec.check_config is not None:
            spec.check_config(params["config_list"])
        if training.finetune_epochs and dataset is None:
            raise ValueError("fine-tuning needs data: choose a dataset, or set finetune_epochs to 0")
        model = model if model is not None else recipe.model.load()
        _check_selection(spec, params["config_list"], model)
        if params.get("quantization"):
            then = params["quantization"]
            check_quantizer(get_algorithm(then["algorithm"]), then["params"], model)
    if full:
        _check_runs(model, recipe.input_shape)
    return params


def data_needs(spec: AlgorithmSpec, params: Mapping[str, Any]) -> dict[str, bool]:
    """Which steps of the job need the dataset's train split: ``{algorithm name: needs it}``."""
    needs = {spec.name: spec.needs_data_for(params)}
    if params.get("quantization"):
        then = params["quantization"]
        needs[then["algorithm"]] = get_algorithm(then["algorithm"]).needs_data_for(then["params"])
    return needs


def validate_quantize_after(value: Mapping[str, Any]) -> dict[str, Any]:
    """A pruning job's ``quantization`` param checked against the quantizer's own schema."""
    spec = get_algorithm(value["algorithm"])
    if spec.kind != AlgorithmKind.QUANTIZATION:
        quantizers = ", ".join(s.name for s in algorithms_of_kind(AlgorithmKind.QUANTIZATION))
        raise ValueError(f"params.quantization.algorithm: {spec.name} is a {spec.kind.value} algorithm; "
                         f"choose a quantizer: {quantizers}")
    try:
        params = validate_params(spec.name, value.get("params") or {})
    except ValueError as exc:
        raise ValueError(f"params.quantization: {exc}") from None
    return {"algorithm": spec.name, "params": params}


def check_quantizer(spec: AlgorithmSpec, params: Mapping[str, Any], model: nn.Module) -> None:
    """Build the quantizer on ``model`` (no data, nothing run): its config and layer checks raise here."""
    kwargs = spec.constructor_kwargs(params)
    if spec.trains:
        kwargs["evaluator"] = _placeholder_evaluator()
    elif spec.needs_data_for(params):
        kwargs["calibration_data"] = torch.zeros(1)
    spec.factory(model, params.get("config_list"), **kwargs)


def _placeholder_evaluator() -> TorchEvaluator:
    return TorchEvaluator(lambda *args, **kwargs: None, lambda p: torch.optim.SGD(p, lr=0.1),
                          lambda batch, model: torch.zeros(()))


def _check_selection(spec: AlgorithmSpec, config_list: list[dict[str, Any]], model: nn.Module) -> None:
    supported = spec.supported_types or PRUNABLE_TYPES
    if not select_modules(model, config_list, supported_types=supported):
        names = ", ".join(t.__name__ for t in supported)
        raise ValueError(f"the config list selects no layer {spec.name} can prune in this model ({names})")


def _check_runs(model: nn.Module, input_shape: list[int]) -> None:
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported as such
        raise ValueError(f"the model does not run on an input of shape {[1, *input_shape]}: {exc}") from exc
