"""The prune-then-quantize job: prune, fine-tune and speed up, then quantize the smaller float model.

A pruning job's params carry ``"quantization": {"algorithm", "params"}``.
The job's ``after`` metrics are those of the deliverable (the quantized
model); ``pruned`` holds those of the float model it was made from.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .context import JobContext
from .pruning import finish_pruning, prune_and_measure
from .quantization import quantize
from .result import JobResult


def run_prune_then_quantize(ctx: JobContext, model: nn.Module, before: dict[str, Any],
                            layers_before: list[dict[str, Any]]) -> JobResult:
    """The handler of pruning jobs whose params name a quantizer to run after pruning."""
    pruned = prune_and_measure(ctx, model)
    then = ctx.params["quantization"]
    quantized = quantize(ctx, pruned.model, then["algorithm"], then["params"], float_metrics=pruned.after,
                         float_fidelity=pruned.fidelity, teacher=pruned.teacher)
    for form in ctx.latency.forms:
        if form.form == "compressed":
            form.headline = False  # the deliverable is the quantized model: its latency is the job's headline
    result = finish_pruning(ctx, before, layers_before, pruned)
    result.metrics.update({"pruned": pruned.after, "after": quantized.after, "fidelity": quantized.fidelity,
                           "quantization": quantized.metrics})
    result.artifacts += quantized.artifacts
    return result
