"""Models: the built-in architectures and the geometry of attention layers.

:mod:`.architectures` holds the architectures uploaded weights can be loaded
into (``build_architecture``, ``ARCHITECTURES``); :mod:`.attention` says
where an attention layer's heads sit (``head_mask``, ``attention_dims``, ...)
and holds :class:`PrunedMultiheadAttention`, the layer speedup puts in place
of a pruned ``nn.MultiheadAttention``.

Example::

    >>> from compression_core.models import build_architecture
    >>> build_architecture("digits_cnn").__class__.__name__
    'DigitsCNN'
"""

from .architectures import (
    ARCHITECTURES,
    ArchitectureSpec,
    CifarCNN,
    DigitsCNN,
    MnistCNN,
    architecture_choices,
    build_architecture,
    register_architecture,
)
from .attention import (
    ATTENTION_TYPES,
    PROJECTIONS,
    PrunedMultiheadAttention,
    attention_dims,
    attention_sizes,
    head_mask,
    input_dims,
    is_attention,
    projection_weights,
    qkv_weights,
    unsupported_reason,
)

__all__ = [
    "ARCHITECTURES",
    "ATTENTION_TYPES",
    "ArchitectureSpec",
    "CifarCNN",
    "DigitsCNN",
    "MnistCNN",
    "PROJECTIONS",
    "PrunedMultiheadAttention",
    "architecture_choices",
    "attention_dims",
    "attention_sizes",
    "build_architecture",
    "head_mask",
    "input_dims",
    "is_attention",
    "projection_weights",
    "qkv_weights",
    "register_architecture",
    "unsupported_reason",
]
