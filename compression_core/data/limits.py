"""The caps every upload reader checks before it materialises anything: :class:`IntakeLimits`.

One plain dataclass for models and datasets alike, so the web side can build it
from its ``CONDENSE_*`` settings and pass it to the engine. It lives at the
bottom of the engine (here, below :mod:`compression_core.io`) because both the
model readers and the dataset readers check it; :mod:`compression_core.io`
re-exports it.

Example::

    >>> limits = IntakeLimits(max_onnx_nodes=100_000)
    >>> limits.setting("max_onnx_nodes")
    'CONDENSE_ONNX_MAX_NODES'
    >>> limits.over("the model has", 120_000, "nodes", "max_onnx_nodes")
    'the model has 120,000 nodes, more than the limit of 100,000 (CONDENSE_ONNX_MAX_NODES)'
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["IntakeLimits", "SETTING_NAMES"]

#: The ``CONDENSE_*`` setting an operator changes to move each limit (named in refusals).
SETTING_NAMES = {
    "max_onnx_nodes": "CONDENSE_ONNX_MAX_NODES",
    "max_subgraph_depth": "CONDENSE_ONNX_MAX_SUBGRAPH_DEPTH",
    "max_tensor_elements": "CONDENSE_MAX_TENSOR_ELEMENTS",
    "max_unpacked_bytes": "CONDENSE_MODEL_MAX_UNPACKED_BYTES",
    "max_zip_entries": "CONDENSE_MODEL_ZIP_MAX_ENTRIES",
    "max_zip_ratio": "CONDENSE_ZIP_MAX_RATIO",
    "max_image_pixels": "CONDENSE_DATASET_MAX_IMAGE_PIXELS",
    "max_total_pixels": "CONDENSE_DATASET_MAX_TOTAL_PIXELS",
    "dataset_max_uncompressed_bytes": "CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES",
    "dataset_max_images": "CONDENSE_DATASET_MAX_IMAGES",
}


@dataclass(frozen=True)
class IntakeLimits:
    """Caps on what an uploaded file may declare, checked from headers and structure before loading.

    - ``max_onnx_nodes``: ONNX nodes, those of ``If`` / ``Loop`` / ``Scan`` bodies and local functions
      included. Converting costs about 3 ms a node (20,000 Relu nodes: 69 s); torchvision's exports hold
      1,000 to 2,200 (EfficientNet-B7, ViT-L/16, MaxViT), Swin-B 13,017, the most we know of.
    - ``max_subgraph_depth``: how deeply ONNX subgraphs may nest.
    - ``max_tensor_elements``: elements of any one tensor a model declares: an initializer, a graph
      input, output or value_info with static dims, or what ``ConstantOfShape`` / ``Expand`` / ``Tile``
      / ``Range`` build from constant operands (VGG16's largest weight has 103 M; 2^28 is 1 GiB as float32).
    - ``max_unpacked_bytes``: a model zip's bytes once unpacked, and a model's declared weight bytes.
    - ``max_zip_entries``: members of a model zip.
    - ``max_zip_ratio``: uncompressed / compressed size of any zip member over 1 MiB (deflate tops out
      near 1000; real weights and images compress less than 10x).
    - ``max_image_pixels`` / ``max_total_pixels``: pixels of one dataset image, and of all of them, read
      from the image headers before any is decoded.
    - ``dataset_max_uncompressed_bytes`` / ``dataset_max_images``: a dataset zip or .npz unpacked, and
      its image count (its member count may be twice that, plus 1000, for folders and other files).

    Example::

        >>> IntakeLimits().max_onnx_nodes
        15000
        >>> IntakeLimits(max_zip_ratio=500).max_zip_ratio
        500
    """

    max_onnx_nodes: int = 15_000
    max_subgraph_depth: int = 16
    max_tensor_elements: int = 2**28
    max_unpacked_bytes: int = 2 * 1024**3
    max_zip_entries: int = 1000
    max_zip_ratio: float = 100.0
    max_image_pixels: int = 4096 * 4096
    max_total_pixels: int = 1_000_000_000
    dataset_max_uncompressed_bytes: int = 1024**3
    dataset_max_images: int = 50_000

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"IntakeLimits.{spec.name} must be a positive number, got {value!r}")

    @property
    def dataset_max_zip_entries(self) -> int:
        """Members a dataset zip may hold: two per image (folders, stray files) and 1000 more."""
        return 2 * int(self.dataset_max_images) + 1000

    @staticmethod
    def setting(field_name: str) -> str:
        """The ``CONDENSE_*`` setting that moves the limit ``field_name``."""
        return SETTING_NAMES[field_name]

    def over(self, what: str, figure: float, unit: str, field_name: str) -> str:
        """One sentence for a refusal: what, the figure, the limit and the setting that raises it."""
        limit = getattr(self, field_name)
        return (f"{what} {_figure(figure)} {unit}, more than the limit of {_figure(limit)} "
                f"({self.setting(field_name)})")


def _figure(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"
