"""The two upload formats, told apart by content, and the zip helpers and size caps both share.

Example::

    >>> np.savez("d.npz", x=np.zeros((4, 8)))
    >>> detect_dataset_format("d.npz")
    'npz'
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

from .archives import open_checked_zip
from .limits import IntakeLimits

NPZ = "npz"
IMAGE_ZIP = "image_zip"
DATASET_FORMATS = (NPZ, IMAGE_ZIP)

MAX_UNCOMPRESSED_BYTES = 1024**3
MAX_IMAGES = 50_000


def megabytes(size: int) -> str:
    """``size`` bytes for a message, e.g. ``"1.5 MB"``."""
    return f"{size / 1e6:.1f} MB"


def element_count(shape) -> int:
    """The number of values in a tensor of ``shape``."""
    return int(math.prod(int(d) for d in shape))


def open_zip(path: Path, limits: IntakeLimits = IntakeLimits()) -> zipfile.ZipFile:
    """The archive at ``path``; a ``ValueError`` fit for the uploader if it is not a readable zip, or if its
    central directory is over ``limits`` (members, declared bytes, compression ratio: nothing inflated yet)."""
    return open_checked_zip(
        Path(path), max_entries=limits.dataset_max_zip_entries, max_bytes=limits.dataset_max_uncompressed_bytes,
        limits=limits, entries_field="dataset_max_images", bytes_field="dataset_max_uncompressed_bytes",
        not_a_zip="the file is not a readable zip archive; upload a .npz or a .zip of images",
    )


def zip_files(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members that are files (not folders)."""
    return [info for info in archive.infolist() if not info.is_dir()]


def detect_dataset_format(path: str | Path, limits: IntakeLimits = IntakeLimits()) -> str:
    """``"npz"`` or ``"image_zip"`` from the file's content (not its name).

    An ``.npz`` is a zip whose members are all ``.npy`` arrays; any other zip
    is read as images. Raises ``ValueError`` for anything else, and for a zip
    over ``limits`` (judged from its central directory, see :func:`open_zip`).

    Example::

        >>> np.savez("d.npz", x=np.zeros((4, 8)))
        >>> detect_dataset_format("d.npz")
        'npz'
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(
            "this is a single .npy array; save inputs and labels together with "
            "numpy.savez('data.npz', x=inputs, y=labels)"
        )
    if not head.startswith(b"PK"):
        raise ValueError("the file is neither a .npz archive nor a .zip of images")
    with open_zip(path, limits) as archive:
        members = zip_files(archive)
        if members and all(info.filename.endswith(".npy") for info in members):
            return NPZ
    return IMAGE_ZIP
