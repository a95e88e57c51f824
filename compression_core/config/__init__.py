"""NNI-style ``config_list`` entries: the keys, their validation, layer selection, parameter schemas.

- :mod:`.selection`: the selector keys (``op_types``, ``op_names``, ``op_names_re``,
  ``exclude_op_names`` / ``exclude_op_types``, ``exclude``), the pruning keys
  (``sparse_ratio`` or its alias ``sparsity``, ``max``/``min_sparse_ratio``,
  ``granularity``, ``dependency_group_id``, ``global_group_id``) and
  :func:`select_modules`.
- :mod:`.quantization`: the quantization keys (``quant_types``, ``quant_bits``,
  ``quant_dtype``, ``quant_scheme``, ``granularity``, ``fuse_names``) and the
  per-layer settings they give.
- :mod:`.schema`: the JSON Schema subset that checks algorithm parameters, and
  the schemas of config entries.

A bad config is a ``ValueError`` naming the entry and the key.

Example::

    >>> canonicalize_config_list([{"op_types": ["Conv2d"], "sparsity": 0.5}])
    [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
"""

from .quantization import (
    DEFAULT_OP_TYPES,
    LayerQuantSpec,
    TargetSpec,
    fuse_groups,
    parse_entry,
    parse_quant_config_list,
    resolve_layers,
)
from .schema import CONFIG_ENTRY_SCHEMA, QUANT_CONFIG_ENTRY_SCHEMA, check_schema, with_defaults
from .selection import (
    GRANULARITIES,
    KNOWN_KEYS,
    PRUNING_KEYS,
    QUANTIZATION_KEYS,
    SELECTOR_KEYS,
    canonicalize_config_list,
    select_modules,
)

__all__ = [
    "CONFIG_ENTRY_SCHEMA",
    "DEFAULT_OP_TYPES",
    "GRANULARITIES",
    "KNOWN_KEYS",
    "LayerQuantSpec",
    "PRUNING_KEYS",
    "QUANTIZATION_KEYS",
    "QUANT_CONFIG_ENTRY_SCHEMA",
    "SELECTOR_KEYS",
    "TargetSpec",
    "canonicalize_config_list",
    "check_schema",
    "fuse_groups",
    "parse_entry",
    "parse_quant_config_list",
    "resolve_layers",
    "select_modules",
    "with_defaults",
]
