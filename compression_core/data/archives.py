"""Zip uploads refused from their central directory before anything is inflated, then read with a byte count.

A zip bomb is cheap to send and dear to open: :func:`open_checked_zip` reads
the end-of-central-directory record itself (a few bytes at the end of the
file) and refuses an archive whose member count or central directory is over
the cap before :mod:`zipfile` builds one object per member; then it checks
every member's declared size, the total, and the compression ratio. The sizes
are the archive's word, so :class:`ByteBudget` also counts the bytes actually
inflated and stops at the limit (:func:`read_member`).

Both the model readers (:mod:`compression_core.io.onnx.external`) and the
dataset readers (:mod:`.npz`, :mod:`.images`) use it, each with its own error
class (``ModelFormatError`` / ``ValueError``).

Example::

    >>> limits = IntakeLimits()
    >>> with open_checked_zip(Path("pets.zip"), max_entries=1000, max_bytes=2**30, limits=limits,
    ...                       entries_field="dataset_max_images", bytes_field="dataset_max_uncompressed_bytes") as z:
    ...     budget = ByteBudget(2**30, limits, "dataset_max_uncompressed_bytes")
    ...     data = read_member(z, z.infolist()[0], budget)
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import Type

from .limits import IntakeLimits

__all__ = ["ByteBudget", "RATIO_MIN_BYTES", "declared_entries", "open_checked_zip", "read_member"]

#: Members smaller than this are not held to the compression ratio (tiny files of zeros are harmless).
RATIO_MIN_BYTES = 1024 * 1024
_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 65535
# Central-directory bytes allowed per member (46 fixed + a name, extra field and comment of normal length).
_DIRECTORY_BYTES_PER_ENTRY = 2048
_CHUNK = 1024 * 1024
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError)


def declared_entries(path: Path) -> tuple[int, int] | None:
    """``(member count, central directory bytes)`` from the end-of-central-directory record, or ``None``.

    Reads at most 64 KiB at the end of the file (and one zip64 record), never
    the directory itself; ``None`` when there is no such record (not a zip).

    Example::

        >>> declared_entries(Path("pets.zip"))
        (243, 19876)
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        tail_length = min(size, _EOCD.size + _MAX_COMMENT)
        handle.seek(size - tail_length)
        tail = handle.read(tail_length)
        at = tail.rfind(_EOCD_SIGNATURE)
        if at < 0 or len(tail) - at < _EOCD.size:
            return None
        _, _, _, _, count, directory_size, _, _ = _EOCD.unpack_from(tail, at)
        locator_at = at - _ZIP64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at:locator_at + 4] == _ZIP64_LOCATOR_SIGNATURE:
            _, _, record_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
            if 0 <= record_offset <= size - _ZIP64_EOCD.size:
                handle.seek(record_offset)
                record = handle.read(_ZIP64_EOCD.size)
                if record[:4] == _ZIP64_EOCD_SIGNATURE:
                    fields = _ZIP64_EOCD.unpack(record)
                    count, directory_size = max(count, fields[7]), max(directory_size, fields[8])
    return int(count), int(directory_size)


class ByteBudget:
    """Bytes still allowed to be inflated from an archive; :meth:`take` raises past the limit.

    Example::

        >>> budget = ByteBudget(10, IntakeLimits(), "max_unpacked_bytes", error=ValueError)
        >>> budget.take(8); budget.take(8)
        Traceback (most recent call last):
        ValueError: the zip unpacks to more than the 10 byte limit (CONDENSE_MODEL_MAX_UNPACKED_BYTES), ...
    """

    def __init__(self, limit: int, limits: IntakeLimits, field_name: str, *, error: Type[ValueError] = ValueError,
                 what: str = "the zip unpacks to"):
        self.limit, self.limits, self.field_name, self.error, self.what = int(limit), limits, field_name, error, what
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise self.error(
                f"{self.what} more than the {self.limit:,} byte limit ({self.limits.setting(self.field_name)}), "
                "counted while inflating (its headers declared less)"
            )


def _too_many(limits: IntakeLimits, count: int, field_name: str, limit: int) -> str:
    return f"the zip holds {count:,} files; the limit is {limit:,} ({limits.setting(field_name)})"


def open_checked_zip(
    path: Path,
    *,
    max_entries: int,
    max_bytes: int,
    limits: IntakeLimits,
    entries_field: str,
    bytes_field: str,
    error: Type[ValueError] = ValueError,
    not_a_zip: str = "the file is not a readable zip archive",
) -> zipfile.ZipFile:
    """The archive at ``path``, opened only if its central directory is within the caps.

    Refused with ``error`` (one sentence with the figure, the limit and the
    ``CONDENSE_*`` setting): more than ``max_entries`` members (from the end
    record, before :mod:`zipfile` reads the directory, and again after), a
    central directory too large for that many members, members declaring more
    than ``max_bytes`` in all, and a member over 1 MiB whose declared size is
    more than ``limits.max_zip_ratio`` times its compressed size.

    Example::

        >>> archive = open_checked_zip(Path("bomb.zip"), max_entries=1000, max_bytes=2**31, limits=IntakeLimits(),
        ...                            entries_field="max_zip_entries", bytes_field="max_unpacked_bytes")
        Traceback (most recent call last):
        ValueError: the zip member 'zeros.bin' inflates 2,000,000,000 bytes from 1,941,000, a ratio of 1,030.4, ...
    """
    path = Path(path)
    try:
        declared = declared_entries(path)
    except OSError as exc:
        raise error(f"{not_a_zip} ({exc})") from exc
    if declared is not None:
        count, directory_size = declared
        if count > max_entries:
            raise error(_too_many(limits, count, entries_field, max_entries))
        directory_cap = (max_entries + 1) * _DIRECTORY_BYTES_PER_ENTRY
        if directory_size > directory_cap:
            raise error(
                f"the zip's central directory is {directory_size:,} bytes, more than {directory_cap:,} for at most "
                f"{max_entries:,} members ({limits.setting(entries_field)})"
            )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, NotImplementedError) as exc:
        raise error(f"{not_a_zip} ({exc})") from exc  # NotImplementedError: a zip version zipfile cannot read
    try:
        _check_members(archive, max_entries, max_bytes, limits, entries_field, bytes_field, error)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_members(archive, max_entries, max_bytes, limits, entries_field, bytes_field, error) -> None:
    members = archive.infolist()
    if len(members) > max_entries:
        raise error(_too_many(limits, len(members), entries_field, max_entries))
    if any(not info.filename for info in members):
        raise error("the zip holds a member without a name; the archive is damaged")
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        raise error(f"the zip's files unpack to {total / 1e6:.1f} MB, more than the {max_bytes / 1e6:.1f} MB limit "
                    f"({limits.setting(bytes_field)}; the byte limit is {max_bytes:,})")
    for info in members:
        if info.file_size >= RATIO_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_zip_ratio:
                raise error(
                    f"the zip member {info.filename[:200]!r} inflates {info.file_size:,} bytes from "
                    f"{info.compress_size:,}, a ratio of {ratio:,.1f}, more than the limit of "
                    f"{limits.max_zip_ratio:,.1f} ({limits.setting('max_zip_ratio')})"
                )


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: ByteBudget,
                error: Type[ValueError] = ValueError) -> bytes:
    """The inflated bytes of one member, each chunk counted against ``budget`` as it comes out.

    Example::

        >>> read_member(archive, archive.getinfo("cat/1.png"), budget)[:4]
        b'\\x89PNG'
    """
    chunks = []
    try:
        with archive.open(info) as source:
            while chunk := source.read(_CHUNK):
                budget.take(len(chunk))
                chunks.append(chunk)
    except _READ_ERRORS as exc:
        if isinstance(exc, budget.error) and budget.used > budget.limit:
            raise
        raise error(f"the zip member {info.filename[:200]!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    return b"".join(chunks)
