"""``ModelSpeedup``: turn pruning masks into a physically smaller model.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> keep = torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 0])
    >>> masks = {"0": {"weight": keep.view(8, 1, 1, 1).expand(8, 3, 3, 3), "bias": keep}}
    >>> _ = ModelSpeedup(model, torch.rand(1, 3, 16, 16), masks).speedup_model()
    >>> model[0].out_channels, model[2].in_channels
    (4, 4)
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..dependency import ChannelAnalysis, SpeedupError, analyze_channels
from ..dependency.graph import TensorInfo, describe_input, normalize_inputs, set_training_flags, summarize
from ..dependency.literals import plain_sizes, sizes_like
from ..tensors import get_tensor, module_device, to_device
from .attention import merged_mask, speedup_attention
from .failure import failing_op
from .plan import resolve_attr, swap_in
from .replace import apply_masks, cut_module, cut_tensor, module_sizes, output_rows

logger = logging.getLogger(__name__)

Masks = dict[str, dict[str, torch.Tensor]]


def _load_masks(masks_or_file: Any, map_location: Any = None) -> Masks:
    if masks_or_file is None:
        return {}
    if isinstance(masks_or_file, (str, os.PathLike)):
        try:
            masks_or_file = torch.load(masks_or_file, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise SpeedupError(f"cannot read masks from {os.fspath(masks_or_file)!r}: {exc}") from exc
    if not isinstance(masks_or_file, Mapping):
        raise SpeedupError(f"masks must be a dict {{module_name: {{'weight': Tensor, ...}}}}, got {type(masks_or_file).__name__}")
    masks: Masks = {}
    for name, entry in masks_or_file.items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise SpeedupError(f"mask for {name!r} must be a dict like {{'weight': Tensor}}, got {type(entry).__name__}")
        masks[name] = {k: v for k, v in entry.items() if v is not None}
    return masks


def _validate_masks(model: nn.Module, masks: Masks) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    for name, entry in masks.items():
        module = named.get(name)
        if module is None or name == "":
            close = [n for n in named if n and name.split(".")[-1] in n][:5]
            hint = f" (similar names: {', '.join(close)})" if close else ""
            raise SpeedupError(f"mask for {name!r} names no module of the model{hint}")
        for pname, pmask in entry.items():
            if not isinstance(pmask, torch.Tensor):
                raise SpeedupError(f"mask for {name!r}: {pname!r} must be a tensor, got {type(pmask).__name__}")
            param = get_tensor(module, pname)
            if not isinstance(param, torch.Tensor):
                raise SpeedupError(f"mask for {name!r} names {pname!r}, which {type(module).__name__} {name!r} does not have")
            try:
                shape = torch.broadcast_shapes(tuple(pmask.shape), tuple(param.shape))
            except RuntimeError:
                shape = None
            if shape != tuple(param.shape) or pmask.dim() != param.dim():
                raise SpeedupError(
                    f"mask for {name!r}: {pname!r} has shape {tuple(pmask.shape)} but the layer's {pname} is "
                    f"{tuple(param.shape)}"
                )
    return named


def _dead_channels(module: nn.Module, mask: Mapping[str, torch.Tensor] | None, out_dim: int) -> list[bool]:
    """Per output channel: is it fully masked (weight slice zero and effective bias zero)?"""
    weight = module.weight
    if not mask or mask.get("weight") is None:
        return [False] * output_rows(module, weight, out_dim).shape[0]
    wm = mask["weight"].to(weight.device).expand(weight.shape)
    dead = (output_rows(module, wm, out_dim) == 0).all(dim=1)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        value = bias.detach()
        if mask.get("bias") is not None:
            value = value * mask["bias"].to(device=value.device, dtype=value.dtype)
        dead &= value.reshape(-1) == 0
    return dead.tolist()


def _output_shapes(value: Any) -> Any:
    if isinstance(value, TensorInfo):
        return value.shape
    if isinstance(value, (tuple, list)):
        return [_output_shapes(v) for v in value]
    if isinstance(value, dict):
        return {k: _output_shapes(v) for k, v in value.items()}
    return None


# NNI's ModelSpeedup options (2.x and 3.0) that mean nothing here, and why
IGNORED_NNI_OPTIONS = {
    "batch_dim": "speedup runs the model once on dummy_input as given, it builds no batch",
    "batch_size": "speedup runs the model once on dummy_input as given, it builds no batch",
    "confidence": "speedup runs the model once on dummy_input as given, it builds no batch",
    "customized_mask_updaters": "give custom operations a rule with compression_core.speedup.register_channel_rule",
    "customized_replacers": "resize custom modules with compression_core.speedup.register_module_cutter",
    "customized_replace_func": "resize custom modules with compression_core.speedup.register_module_cutter",
    "garbage_collect_values": "the shape pass keeps the shapes of values, never the values",
}
_OPTIONS = ("model", "dummy_input", "masks_or_file", "map_location", "graph_module", "logger", "strict")


def _ignore_nni_options(options: Mapping[str, Any]) -> None:
    """Warn about NNI's options ``ModelSpeedup`` ignores; a ``TypeError`` for any other keyword."""
    for name in options:
        if name not in IGNORED_NNI_OPTIONS:
            close = difflib.get_close_matches(name, [*_OPTIONS, *IGNORED_NNI_OPTIONS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"ModelSpeedup() got an unexpected keyword argument {name!r}{hint}")
    if options:
        why = "; ".join(f"{name}: {IGNORED_NNI_OPTIONS[name]}" for name in options)
        warnings.warn(f"ModelSpeedup ignores NNI's option(s) {', '.join(options)} ({why})", UserWarning,
                      stacklevel=3)


class ModelSpeedup:
    """Replace masked layers of ``model`` by smaller ones (NNI's ``ModelSpeedup``).

    ``masks_or_file`` is NNI's mask dict ``{module_name: {"weight": Tensor,
    "bias": Tensor}}`` (0 = pruned) or a path to a ``torch.save``d one.
    ``dummy_input`` is a tensor or a tuple of tensors the model accepts; it
    fixes the graph and the shapes. A channel is removed when every layer
    producing it (the convolutions feeding one residual add, ...) has it fully
    masked; channels that reach the model's inputs or outputs, or pass through
    an operation speedup does not understand, are kept (see ``warnings``);
    with ``strict=True`` the latter is a :class:`SpeedupError` naming the op
    and the graph node. Grouped convolutions, GroupNorm and ``chunk`` need
    the same channel count per group: speedup keeps extra (masked) channels
    where the masks are uneven, so the result still equals
    :func:`~compression_core.speedup.masked_reference`.

    ``speedup_model()`` modifies ``model`` in place (layers are replaced by
    new, smaller module objects on their parents) and returns it. Afterwards
    ``plan`` holds the JSON-serialisable per-layer new shapes for
    :func:`apply_pruning_plan` (and the new value of every int attribute a
    fixed-size reshape reads its channel count from, e.g. a ViT's
    ``hidden_dim``: ``{"type": "int", "value": 384, "before": {"value":
    768}}``, and of every list of split sizes ``torch.split`` reads:
    ``"type": "list"``), and ``warnings`` lists the operations that kept
    channels. On any error a :class:`SpeedupError` is raised and the model is
    left unchanged.

    ``map_location`` places masks read from a file, ``graph_module`` is a
    GraphModule already traced from ``model`` (its ``call_module`` targets
    the model's module names), ``logger`` gets the warnings. NNI's options
    that mean nothing here (``batch_dim``, ``batch_size``, ``confidence``,
    ``customized_mask_updaters``, ``customized_replacers``,
    ``customized_replace_func``, ``garbage_collect_values``) are accepted
    with a ``UserWarning`` saying why they are ignored; any other keyword is
    a ``TypeError``.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> w = model.layer1[0].conv1.weight
        >>> keep = (torch.arange(64) % 2).float()
        >>> masks = {"layer1.0.conv1": {"weight": keep.view(-1, 1, 1, 1).expand_as(w).clone()}}
        >>> _ = ModelSpeedup(model, torch.rand(1, 3, 64, 64), masks).speedup_model()
        >>> model.layer1[0].conv1.out_channels, model.layer1[0].bn1.num_features
        (32, 32)
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        masks_or_file: Any,
        map_location: Any = None,
        *,
        graph_module: fx.GraphModule | None = None,
        logger: logging.Logger | None = None,  # noqa: A002 - NNI's name
        strict: bool = False,
        **nni_options: Any,
    ):
        _ignore_nni_options(nni_options)
        if not isinstance(model, nn.Module):
            raise SpeedupError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        # On the model's device (a GPU job's model, an evaluator's example batch on the CPU).
        self.dummy_input = to_device(dummy_input, module_device(model))
        self.masks = _load_masks(masks_or_file, map_location)
        self.graph_module = graph_module
        self.logger = logger or globals()["logger"]
        self.plan: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        self.analysis: ChannelAnalysis | None = None
        self.strict = strict
        self.removed: set[int] = set()

    # ------------------------------------------------------------------
    def analyze(self) -> ChannelAnalysis:
        """Validate the masks, trace the model and decide which channel classes go (no change to the model).

        Sets :attr:`analysis` and :attr:`removed` (root channel ids of the
        removed classes) and returns the analysis.
        """
        self._named = _validate_masks(self.model, self.masks)
        normalize_inputs(self.dummy_input)
        with torch.no_grad():
            analysis = analyze_channels(self.model, self.dummy_input, self.graph_module)
        self.analysis = analysis
        self.warnings = list(analysis.warnings)
        self.removed = self._removed_classes(analysis)
        return analysis

    def speedup_model(self) -> nn.Module:
        """Compute the smaller layers, swap them into the model and return it."""
        model = self.model
        analysis = self.analyze()
        self._current = ""
        with torch.no_grad():
            try:
                replacements, tensors, sizes, plan = self._build(analysis, self._named, self.removed)
            except SpeedupError:
                raise
            except Exception as exc:  # a cutter that failed: nothing was swapped in yet
                module = self._named.get(self._current)
                kind = f" ({type(module).__name__})" if module is not None else ""
                raise SpeedupError(
                    f"internal error: speedup cannot resize layer '{self._current}'{kind} ({type(exc).__name__}: "
                    f"{exc}); the model was left unchanged. Exclude that layer from pruning, or report this."
                ) from exc
            self._swap(replacements, tensors, sizes, analysis)
        self.plan = plan
        for message in self.warnings:
            self.logger.info("speedup: %s", message)
        return model

    # ------------------------------------------------------------------
    def _removed_classes(self, analysis: ChannelAnalysis) -> set[int]:
        uf = analysis.uf
        producing: set[int] = set()
        blocked: set[int] = set()
        for state in analysis.modules.values():
            mask = self.masks.get(state.name)
            if state.kind == "attention":
                # its output channels are out_proj's rows (masked through "<name>.out_proj" or "out_proj.weight")
                merged = merged_mask(state.name, self.masks)
                out_mask = {"weight": merged.get("out_proj.weight"), "bias": merged.get("out_proj.bias")}
                dead = _dead_channels(state.module.out_proj, out_mask, 0)
                for x, is_dead in zip(state.out_ids, dead):
                    root = uf.find(x)
                    producing.add(root)
                    if not is_dead:
                        blocked.add(root)
            elif state.produces:
                out_dim = {"conv_transpose": 1, "embedding": 1}.get(state.kind, 0)
                dead = _dead_channels(state.module, mask, out_dim)
                for x, is_dead in zip(state.out_ids, dead):
                    root = uf.find(x)
                    producing.add(root)
                    if not is_dead:
                        blocked.add(root)
            elif state.kind in ("depthwise", "grouped") and mask:
                dead = _dead_channels(state.module, mask, 0)
                for x, is_dead in zip(state.out_ids, dead):
                    if not is_dead:
                        blocked.add(uf.find(x))
        candidates = {r for r in producing if r not in blocked and not uf.pinned[r]}
        if self.strict:
            self._check_strict(analysis, candidates)
        removed = {r for r in candidates if not uf.soft[r]}
        _equalize(analysis, removed)
        return removed

    def _check_strict(self, analysis: ChannelAnalysis, candidates: set[int]) -> None:
        uf = analysis.uf
        for op in analysis.unknown_ops:
            hit = [x for x in op.ids if uf.find(x) in candidates]
            if hit:
                raise SpeedupError(
                    f"strict speedup: {op.op} at node '{op.node}' ({op.reason}) touches {len(hit)} channels "
                    "that the masks remove; register how it treats channels with "
                    "compression_core.speedup.register_channel_rule (and register_module_cutter), or use "
                    "strict=False to keep those channels"
                )

    def _build(self, analysis: ChannelAnalysis, named: dict[str, nn.Module], removed: set[int]):
        uf = analysis.uf

        def kept(ids: list[int] | None) -> list[int] | None:
            if ids is None:
                return None
            return [i for i, x in enumerate(ids) if uf.find(x) not in removed]

        replacements: dict[str, nn.Module] = {}
        plan: dict[str, dict[str, Any]] = {}
        absorbed: set[str] = set()  # masks folded into an attention layer's replacement
        # producers first, so that an all-removed layer is named by its own mask
        order = sorted(analysis.modules.values(), key=lambda s: not s.produces)
        for state in order:
            name, module = state.name, state.module
            self._current = name
            if named.get(name) is not module:
                raise SpeedupError(f"layer {name!r} of the traced graph is not a module of the model")
            if state.kind == "attention":
                # heads go by the mask, channels by the analysis (see .attention)
                mask = merged_mask(name, self.masks)
                absorbed.update({name, f"{name}.out_proj"})
                new, entry = speedup_attention(
                    name, module, mask, kept_out=kept(state.out_ids), kept_in=kept(state.in_ids),
                    kept_key=kept(state.key_ids), kept_value=kept(state.value_ids),
                )
                if new is not None:
                    replacements[name], plan[name] = new, entry
                elif mask:
                    replacements[name] = apply_masks(module, mask)
                continue
            if state.out_ids is None:
                continue
            kept_out = kept(state.out_ids)
            kept_in = kept(state.in_ids) if state.in_ids is not None else None
            in_ids = state.in_ids if state.in_ids is not None else []
            if not kept_out:
                n = len(state.out_ids)
                if name in self.masks:
                    raise SpeedupError(
                        f"the mask for {name!r} would remove every output channel of layer {name!r} "
                        f"({n} of {n}); keep at least one channel"
                    )
                raise SpeedupError(
                    f"the masks would remove every channel of layer {name!r} ({n} of {n}): every layer "
                    "producing its channels is fully masked; keep at least one channel"
                )
            if kept_in is not None and not kept_in:
                raise SpeedupError(
                    f"the masks would remove every input channel of layer {name!r} ({len(state.in_ids)} of "
                    f"{len(state.in_ids)}): all layers feeding it are fully masked"
                )
            changed = len(kept_out) < len(state.out_ids) or (kept_in is not None and len(kept_in) < len(in_ids))
            if not changed and name not in self.masks:
                continue
            new = cut_module(module, kept_out if changed else None, kept_in if changed else None, self.masks.get(name))
            replacements[name] = new
            if changed:
                before, after = module_sizes(module), module_sizes(new)
                plan[name] = {"type": type(module).__name__, **after, "kept_out": kept_out, "kept_in": kept_in,
                              "before": before}
        # masks of layers the graph analysis did not resize (e.g. grouped convs, unused layers)
        for name, mask in self.masks.items():
            if name not in replacements and name not in absorbed:
                replacements[name] = apply_masks(named[name], mask)

        tensors: dict[str, torch.Tensor] = {}
        for target, tie in analysis.attr_ties.items():
            if not tie.valid:
                continue
            idx = kept(tie.ids)
            if len(idx) == len(tie.ids):
                continue
            owner, attr = resolve_attr(self.model, target)
            old = getattr(owner, attr)
            tensors[target] = cut_tensor(old, tie.dim, idx)
            plan[target] = {
                "type": "Parameter" if isinstance(old, nn.Parameter) else "Buffer",
                "shape": list(tensors[target].shape),
                "dim": tie.dim,
                "kept": idx,
                "before": {"shape": list(old.shape)},
            }

        sizes: dict[str, Any] = {}
        for target, size_attr in analysis.size_attrs.items():
            old = getattr(self.model.get_submodule(size_attr.module), size_attr.attr)
            value = size_attr.new_value(lambda ids: len(kept(ids)), old)
            if value == plain_sizes(old):
                continue
            sizes[target] = sizes_like(old, value)
            plan[target] = {"type": type(old).__name__, "value": value, "before": {"value": plain_sizes(old)}}
        return replacements, tensors, sizes, plan

    def _swap(self, replacements: dict[str, nn.Module], tensors: dict[str, torch.Tensor], sizes: dict[str, Any],
              analysis: ChannelAnalysis):
        model = self.model
        undo = swap_in(model, replacements, tensors, sizes)
        try:
            self._check(analysis)
        except Exception as exc:
            args, kwargs = normalize_inputs(self.dummy_input)
            try:
                where = failing_op(model, args, kwargs)
            except Exception:  # noqa: BLE001 - the message is only less precise
                where = None
            finally:
                undo()
            at = f" at {where}" if where else ""
            raise SpeedupError(
                f"internal error: speedup cannot handle this model{at}: the resized model failed on dummy_input "
                f"of shape {describe_input(self.dummy_input)} ({type(exc).__name__}: {exc}); the model was left "
                "unchanged. Exclude that layer's inputs from pruning, or report this with the model."
            ) from exc

    def _check(self, analysis: ChannelAnalysis) -> None:
        args, kwargs = normalize_inputs(self.dummy_input)
        flags = set_training_flags(self.model)
        try:
            out = self.model(*args, **kwargs)
        finally:
            set_training_flags(self.model, flags)
        expected = _output_shapes(analysis.output_info)
        got = _output_shapes(summarize(out))
        if expected is not None and got != expected:
            raise RuntimeError(f"output shape changed from {expected} to {got}")


def _equalize(analysis: ChannelAnalysis, removed: set[int]) -> None:
    """Restore removed classes until every uniform constraint keeps equal counts per segment.

    Grouped convolutions, GroupNorm and ``chunk`` need the same number of
    channels in each group; a restored channel keeps its (masked, zero)
    weights, so the result is still the masked model.
    """
    uf = analysis.uf
    if not removed or not analysis.uniform:
        return
    changed = True
    while changed:
        changed = False
        for constraint in analysis.uniform:
            roots = [[uf.find(x) for x in seg] for seg in constraint.segments]
            counts = [sum(1 for r in seg if r not in removed) for seg in roots]
            target = max(counts)
            if target == 0 or min(counts) == target:
                continue
            for seg, count in zip(roots, counts):
                need = target - count
                for r in seg:
                    if need <= 0:
                        break
                    if r in removed:
                        removed.discard(r)
                        need -= sum(1 for q in seg if q == r)
            changed = True
