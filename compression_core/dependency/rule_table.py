"""The channel rule table: which rule the channel analysis applies to each graph operation.

One table maps every operation the analysis understands to its rule, with
one lookup per kind of graph node:

- ``call_module``: by the module's class, walking its MRO (a subclass gets
  its base's rule, the most specific registered class wins), then by class
  name (onnx2torch's converted modules, named here so that onnx2torch is
  never imported);
- ``call_function``: by the function object, then by its qualified name
  (``"torchvision.ops.stochastic_depth.stochastic_depth"``: functions of
  packages not imported here);
- ``call_method``: by the Tensor method's name.

The built-in rules (:mod:`.builtin_rules`) and the user's
(:func:`register_channel_rule`) fill it with the same :meth:`RuleTable.add`.
A rule is one of :data:`RULE_NAMES` or a callable ``rule(propagator, node,
module)`` (``module`` is ``None`` for functions and methods) returning the
output's :class:`~.channels.Layout` (or ``None``); see
:meth:`~.rules.Propagator.apply_rule`.

Example::

    >>> import torch.nn as nn
    >>> class Scale(nn.Module):
    ...     def forward(self, x):
    ...         return x * 2
    >>> register_channel_rule(Scale, "passthrough")
    >>> RULES.for_module(Scale()), RULES.keeps_whole(Scale())
    ('passthrough', True)
    >>> RULES.remove(Scale)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch
import torch.fx as fx
import torch.nn as nn

RULE_NAMES = ("passthrough", "channelwise", "producer", "pin")
KINDS = ("module", "function", "method")

Rule = Union[str, Callable[[Any, fx.Node, Union[nn.Module, None]], Any]]


def _qualified_name(f: Any) -> str | None:
    module, name = getattr(f, "__module__", None), getattr(f, "__qualname__", None)
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else None


class RuleTable:
    """Operation -> channel rule, for modules, functions and Tensor methods (see the module docstring)."""

    def __init__(self) -> None:
        self._rules: dict[str, dict[Any, Rule]] = {kind: {} for kind in KINDS}
        self._whole: dict[type, None] = {}  # module classes the tracer keeps as one call

    def add(self, kind: str, keys: Any, rule: Rule, keep_whole: bool = False) -> None:
        """Give every key of ``keys`` (one key, or a list / tuple / set of them) the rule ``rule``.

        ``kind`` is ``"module"`` (keys: classes or class names),
        ``"function"`` (function objects or qualified names) or
        ``"method"`` (Tensor method names). ``keep_whole``: the tracer keeps
        modules of these classes as one call (fx does not trace into them).
        A key that has a rule already gets the new one.
        """
        table = self._rules[kind]
        for key in keys if isinstance(keys, (list, tuple, set, frozenset)) else [keys]:
            table[key] = rule
            if keep_whole and isinstance(key, type):
                self._whole[key] = None

    def remove(self, target: Any) -> None:
        """Forget the rule of ``target`` (as given to :func:`register_channel_rule`), built-in or not."""
        kind, key = rule_key(target)
        self._rules[kind].pop(key, None)
        self._whole.pop(key, None)

    def for_module(self, m: nn.Module) -> Rule | None:
        table = self._rules["module"]
        for cls in type(m).__mro__:
            rule = table.get(cls)
            if rule is not None:
                return rule
        return table.get(type(m).__name__)

    def for_function(self, f: Any) -> Rule | None:
        table = self._rules["function"]
        try:
            rule = table.get(f)
        except TypeError:  # an unhashable call target
            rule = None
        return rule if rule is not None else table.get(_qualified_name(f))

    def for_method(self, name: str) -> Rule | None:
        return self._rules["method"].get(name)

    def keeps_whole(self, m: nn.Module) -> bool:
        """Is ``m`` of a class registered with :func:`register_channel_rule` (the tracer keeps it whole)?"""
        return bool(self._whole) and isinstance(m, tuple(self._whole))


RULES = RuleTable()


def rule_key(target: Any) -> tuple[str, Any]:
    """``(kind, key)`` under which :func:`register_channel_rule` files ``target``."""
    if isinstance(target, type):
        return "module", target
    name = getattr(target, "__name__", None)
    if isinstance(name, str) and getattr(torch.Tensor, name, None) is target:
        return "method", name  # fx records torch.Tensor.<name>(x, ...) and x.<name>(...) as a method call
    if callable(target):
        return "function", target
    raise ValueError(
        f"a channel rule is registered for a module class, a function or a torch.Tensor method, got {target!r}"
    )


def register_channel_rule(target: Any, rule: Rule) -> None:
    """Tell speedup how ``target`` treats channels.

    ``target`` is a module class (its subclasses inherit the rule), a
    function, or a Tensor method given as ``torch.Tensor.<name>`` (it
    applies to ``x.<name>(...)``). ``rule`` is one of:

    - ``"passthrough"``: the output has the input's channels, nothing to cut
      (an activation, a custom pooling, ...);
    - ``"channelwise"``: like BatchNorm: output channel i is input channel i
      and the module holds per-channel parameters; register a cutter with
      :func:`~compression_core.speedup.register_module_cutter` to resize it;
    - ``"producer"``: like a convolution: the module reads the input's
      channels and creates new output channels on the same dimension; its
      mask decides which are removed; needs a cutter too;
    - ``"pin"``: the channels around it are kept (no warning);
    - a callable ``rule(propagator, node, module)`` returning the output's
      :class:`~.channels.Layout` (or ``None``), for anything else; see
      :class:`~.rules.Propagator` for the helpers it can use.

    Registered module classes are kept whole by the tracer (fx does not trace
    into them). A rule registered for a class or function that has a
    built-in rule replaces it.

    Example::

        >>> import torch
        >>> register_channel_rule(torch.Tensor.roll, "passthrough")  # x.roll(1, dims=-1): channels stay put
    """
    if not (isinstance(rule, str) and rule in RULE_NAMES) and not callable(rule):
        raise ValueError(f"a channel rule must be one of {', '.join(RULE_NAMES)} or a callable, got {rule!r}")
    kind, key = rule_key(target)
    RULES.add(kind, key, rule, keep_whole=kind == "module")


__all__ = ["KINDS", "RULES", "RULE_NAMES", "Rule", "RuleTable", "register_channel_rule", "rule_key"]
