"""The registry of compression algorithms: one :class:`AlgorithmSpec` per algorithm, with its schema.

The web form, the API's validation, the job runner and the README's
algorithm table all read from here. The registry is a leaf: it imports no
algorithm and no job code. Algorithms arrive through the
``condense.algorithms`` entry point group, built-ins included (declared in
``pyproject.toml``): each entry point names a callable that receives
:func:`register` and calls it once per algorithm. A third-party package
adds its own algorithms the same way (see ``docs/custom-algorithms.md``)::

    # pyproject.toml of my-pruners
    [project.entry-points."condense.algorithms"]
    my_pruners = "my_pruners:register_algorithms"

    # my_pruners/__init__.py
    def register_algorithms(register):
        register(AlgorithmSpec(name="MyPruner", kind=AlgorithmKind.PRUNING, ...))

A module that is not installed as a package joins through the
``CONDENSE_PLUGINS`` environment variable instead: comma-separated
importable module names, each exposing ``register_algorithms(register)``
(:data:`PLUGIN_FUNCTION`). The web server and the workers read the same
environment, so they see the same algorithms.

Example::

    >>> spec = get_algorithm("L1NormPruner")
    >>> spec.kind, spec.needs_data
    (<AlgorithmKind.PRUNING: 'pruning'>, False)
    >>> validate_params("L1NormPruner", {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}]})["config_list"]
    [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
"""

from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from ..config import check_schema, with_defaults

ENTRY_POINT_GROUP = "condense.algorithms"
#: The environment variable listing plugin modules (comma-separated), and the function each one must expose.
PLUGINS_VARIABLE = "CONDENSE_PLUGINS"
PLUGIN_FUNCTION = "register_algorithms"
#: Where the built-in algorithms' classes live: the README's table lists those only.
BUILTIN_PACKAGE = "compression_core"

#: Parameters every job reads itself (which layers, training, the quantizer after pruning); the rest of an
#: algorithm's validated params go to its constructor.
JOB_PARAMS = ("config_list", "dependency_aware", "training", "epochs", "quantization")


class AlgorithmKind(str, enum.Enum):
    """What a job with this algorithm delivers; the job runner has one handler per kind."""

    PRUNING = "pruning"  # a smaller model, its channels removed by speedup
    QUANTIZATION = "quantization"  # a quantized model (real int8, or simulated low-bit weights)
    ANALYSIS = "analysis"  # measurements only (sensitivity curves), no compressed model

    def __str__(self) -> str:
        return self.value


class QuantizedForm(str, enum.Enum):
    """What a quantizer's ``compress()`` returns."""

    INT8 = "int8"  # a real int8 model on PyTorch's kernels (exposes ``simulated_model`` too)
    SIMULATED = "simulated"  # the float model with weights on the quantization grid


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm: its class, its parameter schema and what a job must do around it.

    The capability fields replace probing the class at run time:

    - ``needs_data``: the job must give it the dataset's train split (an
      evaluator or calibration batches), unless its params match
      ``data_free_when`` (e.g. ``{"mode": "dynamic"}`` for post-training
      quantization of weights only).
    - ``granularity``: what it removes by default (``out_channel`` pruners
      remove whole channels, so dependency groups and speedup apply).
    - ``uses_dependency_groups``: a channel pruner that takes
      ``dependency_group_id`` (Slim ranks BatchNorm scales and does not).
    - ``supported_types``: the layer classes it can compress (``None``: the
      engine's default set of prunable layers).
    - ``check_config``: a static check of the canonical config list, run
      before the job is queued (the search pruners' overall sparsity).
    - ``canonical_config``: the config list checked and put in canonical form.
    - ``trains``: it trains for its own ``epochs`` through an evaluator
      (QAT, DoReFa, BNN).
    - ``quantized_form``: a quantizer's result, :class:`QuantizedForm`.
    - ``bit_widths``: the ``quant_bits`` a quantizer's config entries may take, widest first (the job
      form's bits control offers these).
    - ``searches_target``: after ``compress()`` its ``report`` holds the
      target it searched for and the sensitivity curves of the search.
    - ``when_to_use``: the situations it suits, and when another algorithm
      does better (the algorithms page shows it next to ``description``).
    """

    name: str
    kind: AlgorithmKind
    description: str
    paper: str
    paper_url: str
    factory: Callable[..., Any]
    params_schema: dict[str, Any] = field(default_factory=dict)
    needs_data: bool = False
    data_free_when: Mapping[str, Any] = field(default_factory=dict)
    granularity: str = "fine_grained"
    uses_dependency_groups: bool = False
    supported_types: tuple[type, ...] | None = None
    check_config: Callable[[list[dict[str, Any]]], Any] | None = None
    canonical_config: Callable[[Any], Any] | None = None
    trains: bool = False
    quantized_form: QuantizedForm | None = None
    bit_widths: tuple[int, ...] = ()
    searches_target: bool = False
    when_to_use: str = ""

    @property
    def is_builtin(self) -> bool:
        """Is its class part of Condense (not a plugin's)?"""
        return self.factory.__module__.split(".")[0] == BUILTIN_PACKAGE

    def needs_data_for(self, params: Mapping[str, Any]) -> bool:
        """Does a job with these (validated) params need the dataset's train split?"""
        if self.data_free_when and all(params.get(k) == v for k, v in self.data_free_when.items()):
            return False
        return self.needs_data

    def constructor_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The validated ``params`` the algorithm's class takes (all but :data:`JOB_PARAMS`)."""
        return {k: v for k, v in params.items() if k not in JOB_PARAMS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "description": self.description,
            "paper": self.paper,
            "paper_url": self.paper_url,
            "params_schema": self.params_schema,
            "needs_data": self.needs_data,
            "granularity": self.granularity,
        }


class PluginError(RuntimeError):
    """A module named in ``CONDENSE_PLUGINS`` cannot be imported or has no ``register_algorithms``."""


_REGISTRY: dict[str, AlgorithmSpec] = {}
_entry_points_loaded = False


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add ``spec``; a second, different spec under the same name is an error."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"algorithm {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    functions = [entry_point.load() for entry_point in entry_points(group=ENTRY_POINT_GROUP)]
    # A bad CONDENSE_PLUGINS entry raises here, before anything is registered: every lookup says so again.
    functions += [_plugin_function(module_name) for module_name in plugin_modules()]
    _entry_points_loaded = True
    # dict.fromkeys: a plugin both installed (entry point) and listed in CONDENSE_PLUGINS registers once.
    for register_algorithms in dict.fromkeys(functions):
        register_algorithms(register)
    if not _REGISTRY:
        raise RuntimeError(
            f"no compression algorithm is registered: the {ENTRY_POINT_GROUP!r} entry points were not found. "
            "Install the project (pip install -e . from the repository, as ./condense does) so that its "
            "entry points are visible"
        )


def plugin_modules(value: str | None = None) -> list[str]:
    """The module names listed in ``CONDENSE_PLUGINS`` (or in ``value``), blanks dropped.

    Example::

        >>> plugin_modules(" my_pruners, lab.quantizers ,")
        ['my_pruners', 'lab.quantizers']
    """
    value = os.environ.get(PLUGINS_VARIABLE, "") if value is None else value
    return [name.strip() for name in value.split(",") if name.strip()]


def _plugin_function(module_name: str) -> Callable[..., Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module's import raises (its own imports too), said with its name
        raise PluginError(f"{PLUGINS_VARIABLE} lists module {module_name!r}, which cannot be imported: "
                          f"{type(exc).__name__}: {exc}. Check the name and that it is on the Python path of the "
                          "web server and of the workers") from exc
    function = getattr(module, PLUGIN_FUNCTION, None)
    if not callable(function):
        raise PluginError(f"{PLUGINS_VARIABLE} lists module {module_name!r}, which has no function "
                          f"{PLUGIN_FUNCTION}(register); define it to register the module's algorithms")
    return function


def all_algorithms() -> list[AlgorithmSpec]:
    _load_entry_points()
    return sorted(_REGISTRY.values(), key=lambda spec: (spec.kind.value, spec.name))


def algorithms_of_kind(kind: AlgorithmKind) -> list[AlgorithmSpec]:
    return [spec for spec in all_algorithms() if spec.kind == kind]


def get_algorithm(name: str) -> AlgorithmSpec:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def markdown_table() -> str:
    """The README's algorithm table, generated from the registry (built-ins only, not installed plugins)."""
    rows = ["| Name | Kind | What it does | Paper |", "|---|---|---|---|"]
    for spec in (spec for spec in all_algorithms() if spec.is_builtin):
        rows.append(f"| {spec.name} | {spec.kind.value} | {spec.description} | [{spec.paper}]({spec.paper_url}) |")
    return "\n".join(rows)


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the algorithm's schema; return them with defaults filled in and
    ``config_list`` in canonical form. Raises ``ValueError`` naming the key."""
    spec = get_algorithm(name)
    if not isinstance(params, Mapping):
        raise ValueError("params must be an object")
    check_schema(params, spec.params_schema, "params")
    result = with_defaults(params, spec.params_schema)
    if spec.canonical_config is not None and "config_list" in result:
        result["config_list"] = spec.canonical_config(result["config_list"])
    return result
