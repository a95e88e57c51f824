"""An example Condense plugin: a random-channel pruner and a power-of-two quantizer.

Condense finds :func:`register_algorithms` through the ``condense.algorithms``
entry point of this package's ``pyproject.toml`` (or, without installing it,
through ``CONDENSE_PLUGINS=condense_example_plugin``) and calls it with the
registry's ``register``.

Example::

    >>> from compression_core.algorithms import get_algorithm
    >>> get_algorithm("RandomChannelPruner").granularity
    'out_channel'
"""

from __future__ import annotations

from collections.abc import Callable

from compression_core.algorithms import AlgorithmKind, AlgorithmSpec, QuantizedForm
from compression_core.algorithms.catalog.schemas import pruning_schema, quantization_schema
from compression_core.config import canonicalize_config_list, parse_quant_config_list

from .power_of_two import MAX_BITS, MIN_BITS, PowerOfTwoQuantizer
from .random_channel import RandomChannelPruner

__all__ = ["PowerOfTwoQuantizer", "RandomChannelPruner", "register_algorithms"]


def _checked_quant_config(config_list):
    parse_quant_config_list(config_list)  # the message names the bad key before the job is queued
    return config_list


def register_algorithms(register: Callable[[AlgorithmSpec], AlgorithmSpec]) -> None:
    """Register this package's algorithms with Condense."""
    register(AlgorithmSpec(
        name="RandomChannelPruner", kind=AlgorithmKind.PRUNING, factory=RandomChannelPruner,
        description="Removes randomly chosen output channels (seeded), as many as the sparsity asks; "
                    "dependency-aware, so speedup removes them.",
        when_to_use="As the control of a pruning experiment: run it at the same sparsity as the pruner you "
                    "are judging (several seeds). If that pruner does not beat random channels after the same "
                    "fine-tuning, it is not ranking channels well. Not for a model you mean to ship.",
        paper="Li et al., Revisiting Random Channel Pruning for Neural Network Compression (CVPR 2022)",
        paper_url="https://arxiv.org/abs/2205.05676",
        params_schema=pruning_schema({
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0,
                     "description": "Seed of the random choice: the same seed removes the same channels"},
        }),
        needs_data=False, granularity="out_channel",
        uses_dependency_groups=RandomChannelPruner.uses_dependency_groups,
        supported_types=RandomChannelPruner.supported_types, canonical_config=canonicalize_config_list,
    ))
    register(AlgorithmSpec(
        name="PowerOfTwoQuantizer", kind=AlgorithmKind.QUANTIZATION, factory=PowerOfTwoQuantizer,
        description=f"Rounds each selected layer's weights to signed powers of two (quant_bits 2 to {MAX_BITS}: a "
                    "sign and 2^(bits-1)-1 exponents per output channel, or zero), no data; simulated.",
        when_to_use="To see whether a model survives weights that multiply by shifts (hardware without "
                    "multipliers, logarithmic quantization research); no data needed. Simulated: the model "
                    "is not faster on a CPU. For speed use PostTrainingQuantizer.",
        paper="Miyashita et al., Convolutional Neural Networks using Logarithmic Data Representation (2016)",
        paper_url="https://arxiv.org/abs/1603.01025",
        params_schema=quantization_schema(), needs_data=False, granularity="per_channel",
        canonical_config=_checked_quant_config, quantized_form=QuantizedForm.SIMULATED,
        bit_widths=tuple(range(MAX_BITS, MIN_BITS - 1, -1)),
    ))
