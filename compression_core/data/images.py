"""Zipped image folders: top-level folders are class names, images are decoded in memory.

``cat/1.png``, ``dog/7.jpg`` make a labelled dataset; images without folders an
unlabelled one. One folder that wraps everything is looked through;
``__MACOSX`` and dotfiles are ignored. Images (png, jpg, jpeg, bmp, gif, webp)
are decoded from the archive, never extracted to disk, within caps on the
unpacked size, the image count, the pixels per image and the pixels of all
images: :func:`check_image_headers` reads every image's size from its header
before any is decoded, and every member is inflated against a byte budget.

Example::

    >>> with open_zip(Path("pets.zip")) as archive:
    ...     listing = list_images(archive, max_bytes=2**30, max_images=50_000)
    >>> listing.classes, len(listing.entries)
    (['cat', 'dog'], 240)
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .archives import ByteBudget, read_member
from .formats import IMAGE_ZIP, megabytes, open_zip, zip_files
from .limits import IntakeLimits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Pillow formats allowed to parse uploads; others (EPS runs Ghostscript) never see them.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")

_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass(frozen=True)
class ImageEntry:
    """One image of the archive and its class folder (``None`` for an unlabelled zip)."""

    info: zipfile.ZipInfo
    class_name: str | None


@dataclass(frozen=True)
class ImageListing:
    """The images of an archive in a stable order (by class, then name), and its classes."""

    entries: list[ImageEntry]
    classes: list[str]
    ignored: list[str]
    uncompressed_bytes: int


def list_images(archive: zipfile.ZipFile, max_bytes: int, max_images: int,
                limits: IntakeLimits = IntakeLimits()) -> ImageListing:
    """The archive's images and classes, within the caps; a ``ValueError`` for a zip that is no dataset."""
    found: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    ignored: list[str] = []
    for info in zip_files(archive):
        parts = tuple(p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("/", ""))
        # macOS adds __MACOSX/ and ._ files; dotfiles and ".." are never data.
        if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(info.filename)
            continue
        found.append((parts, info))
    if not found:
        if ignored:
            raise ValueError(
                f"the zip holds no images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}): its "
                f"{len(ignored)} file(s) are of other kinds, e.g. {ignored[0]!r}"
            )
        raise ValueError("the zip holds no images: it is empty")
    if len(found) > max_images:
        raise ValueError(f"the zip holds {len(found)} images; the limit is {max_images} "
                         f"({limits.setting('dataset_max_images')})")
    total = sum(info.file_size for _, info in found)
    if total > max_bytes:
        raise ValueError(f"the images unpack to {megabytes(total)}, more than the {megabytes(max_bytes)} limit "
                         f"({limits.setting('dataset_max_uncompressed_bytes')})")

    # Look through folders that wrap everything (zipping "my-data/" gives
    # my-data/cat/1.png): classes are the first folders that differ.
    depth = 0
    while all(len(parts) > depth + 1 for parts, _ in found) and len({parts[depth] for parts, _ in found}) == 1:
        depth += 1
    in_folder = [len(parts) > depth + 1 for parts, _ in found]
    if all(in_folder):
        entries = [ImageEntry(info, parts[depth]) for parts, info in found]
    elif not any(in_folder):
        entries = [ImageEntry(info, None) for _, info in found]
    else:
        loose = next(info.filename for (_, info), inside in zip(found, in_folder) if not inside)
        raise ValueError(
            f"{sum(in_folder)} images are in class folders and {in_folder.count(False)} are not (e.g. {loose!r}): "
            "put every image in a folder named after its class for a labelled dataset, or none in folders "
            "for an unlabelled one"
        )
    entries.sort(key=lambda entry: (entry.class_name or "", entry.info.filename))
    classes = sorted({entry.class_name for entry in entries if entry.class_name is not None})
    return ImageListing(entries, classes, ignored, total)


def _identify(source, name: str):
    """The image in ``source`` opened from its header only (nothing decoded); a ValueError names it."""
    try:
        return Image.open(source, formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise ValueError(f"the image {name!r} cannot be read: it is not a png, jpeg, bmp, gif or webp image") from exc
    except RuntimeError as exc:  # zipfile: an encrypted member
        raise ValueError(f"the image {name!r} cannot be read ({exc}); upload a zip without a password") from exc
    except Exception as exc:  # decoders of untrusted bytes fail in many ways (struct.error, IndexError, ...)
        raise ValueError(f"the image {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc


def _check_pixels(name: str, width: int, height: int, limits: IntakeLimits) -> None:
    if width * height > limits.max_image_pixels:
        raise ValueError(
            f"the image {name!r} is {width} x {height} pixels; the limit is {limits.max_image_pixels:,} pixels "
            f"per image ({limits.setting('max_image_pixels')})"
        )


def check_image_headers(archive: zipfile.ZipFile, entries: list[ImageEntry],
                        limits: IntakeLimits = IntakeLimits()) -> int:
    """Read each image's size from its header (nothing decoded); return the pixels of all of them.

    Refuses (``ValueError``) an image over ``limits.max_image_pixels``, or
    images over ``limits.max_total_pixels`` in all, before any is decoded: a
    small zip of large, flat images costs little to send and much to decode.

    Example::

        >>> check_image_headers(archive, list_images(archive, 2**30, 50_000).entries)
        245760
    """
    total = 0
    for entry in entries:
        name = entry.info.filename
        try:
            with archive.open(entry.info) as member, _identify(member, name) as image:
                width, height = image.size
        except ValueError:
            raise
        except Exception as exc:  # the member itself (encrypted, damaged)
            raise ValueError(f"the image {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
        _check_pixels(name, width, height, limits)
        total += width * height
        if total > limits.max_total_pixels:
            raise ValueError(limits.over(f"the images hold (counting up to {name!r}) more than", total, "pixels",
                                         "max_total_pixels"))
    return total


def open_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: IntakeLimits = IntakeLimits(),
               budget: ByteBudget | None = None):
    """Decode one image fully (so truncated files fail here); a ValueError names it.

    Its bytes are inflated against ``budget`` (by default one of
    ``limits.dataset_max_uncompressed_bytes``), its size checked from the header first.
    """
    name = info.filename
    if budget is None:
        budget = ByteBudget(limits.dataset_max_uncompressed_bytes, limits, "dataset_max_uncompressed_bytes",
                            what="the images unpack to")
    image = _identify(io.BytesIO(read_member(archive, info, budget)), name)
    width, height = image.size
    try:
        _check_pixels(name, width, height, limits)
    except ValueError:
        image.close()
        raise
    try:
        image.load()
    except Exception as exc:  # as above, including Pillow's DecompressionBombError
        image.close()
        raise ValueError(f"the image {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    return image


def _image_channels(image) -> int:
    if image.mode in _GREY_MODES:
        return 1
    if image.mode == "P":  # a palette (GIFs) may hold only greys
        rgb = np.asarray(image.convert("RGB"))
        return 1 if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all() else 3
    return 3


def inspect_image_zip(path: Path, max_bytes: int, max_images: int,
                      limits: IntakeLimits = IntakeLimits()) -> dict[str, Any]:
    """The summary of :func:`~.source.inspect_dataset` for a zip of images (every image decoded once,
    after every header is within the pixel caps)."""
    limits = replace(limits, dataset_max_uncompressed_bytes=int(max_bytes), dataset_max_images=int(max_images))
    with open_zip(path, limits) as archive:
        listing = list_images(archive, max_bytes, max_images, limits)
        check_image_headers(archive, listing.entries, limits)
        budget = ByteBudget(max_bytes, limits, "dataset_max_uncompressed_bytes", what="the images unpack to")
        sizes: Counter = Counter()
        channels = 1
        for entry in listing.entries:
            with open_image(archive, entry.info, limits, budget) as image:
                sizes[(image.height, image.width)] += 1
                channels = max(channels, _image_channels(image))
    (height, width), _ = sizes.most_common(1)[0]
    labelled = bool(listing.classes)
    counts = Counter(entry.class_name for entry in listing.entries)
    return {
        "format": IMAGE_ZIP,
        "samples": len(listing.entries),
        "sample_shape": [channels, height, width],
        "labelled": labelled,
        "classes": [{"name": name, "count": counts[name]} for name in listing.classes],
        "num_classes": len(listing.classes),
        "image_sizes": {
            "distinct": len(sizes),
            "min": list(min(sizes, key=lambda hw: hw[0] * hw[1])),
            "max": list(max(sizes, key=lambda hw: hw[0] * hw[1])),
        },
        "ignored_files": len(listing.ignored),
        "uncompressed_bytes": listing.uncompressed_bytes,
    }


def image_to_array(image, channels: int, height: int, width: int) -> np.ndarray:
    """One decoded image as float32 C x H x W in [0, 1], resized and converted."""
    if image.mode in _HIGH_DEPTH_MODES:
        # 16-bit and float greys: Pillow's convert("L") would clip them.
        scale = 1.0 if image.mode == "F" else 1.0 / 65535.0
        if image.mode != "F":
            image = image.convert("I")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)[None] * scale
        if image.mode != "F":
            array = np.clip(array, 0.0, 1.0)
        return np.repeat(array, channels, axis=0)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
