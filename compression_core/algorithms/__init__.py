"""The algorithms a job can run: the registry (:mod:`.registry`) and the built-in catalog (:mod:`.catalog`).

Example::

    >>> from compression_core.algorithms import get_algorithm
    >>> get_algorithm("PostTrainingQuantizer").quantized_form
    <QuantizedForm.INT8: 'int8'>
"""

from .registry import (
    ENTRY_POINT_GROUP,
    PLUGIN_FUNCTION,
    PLUGINS_VARIABLE,
    AlgorithmKind,
    AlgorithmSpec,
    PluginError,
    QuantizedForm,
    algorithms_of_kind,
    all_algorithms,
    get_algorithm,
    markdown_table,
    plugin_modules,
    register,
    validate_params,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_FUNCTION",
    "PLUGINS_VARIABLE",
    "AlgorithmKind",
    "AlgorithmSpec",
    "PluginError",
    "QuantizedForm",
    "algorithms_of_kind",
    "all_algorithms",
    "get_algorithm",
    "markdown_table",
    "plugin_modules",
    "register",
    "validate_params",
]
