"""ONNX models whose weights live in external-data files: read them only from inside the upload.

``torch.onnx.export`` (dynamo exporter, its default) writes ``m.onnx`` plus
``m.onnx.data``; ``onnx.save(..., save_as_external_data=True)`` does the same.
Each external tensor names a *location*; here a location is resolved only
inside one base folder: ``..``, absolute paths and anything that resolves
outside the folder (a symbolic link included) are refused, so a model cannot
make Condense read other files on disk.

- :func:`external_locations`: the data files a model refers to.
- :func:`inline_external_data`: read them (confined to a folder) into the model.
- :func:`unpack_onnx_zip`: a ``.zip`` holding one ``.onnx`` and its data files, unpacked safely.

:func:`~.read.consolidate_onnx` puts them together: one self-contained
``.onnx`` from a file, a folder or a zip.

Example::

    >>> proto = onnx.load("up/m.onnx", load_external_data=False)
    >>> external_locations(proto)
    ['m.onnx.data']
    >>> inline_external_data(proto, "up/", "m.onnx")   # reads up/m.onnx.data, never outside up/
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import List, Optional, Union

from onnx import ModelProto, TensorProto

from ...data.archives import ByteBudget, open_checked_zip
from ...data.limits import IntakeLimits
from ..errors import ModelFormatError

__all__ = [
    "MAX_ZIP_ENTRIES",
    "MAX_UNPACKED_BYTES",
    "PROTOBUF_LIMIT_BYTES",
    "all_graph_tensors",
    "external_locations",
    "external_tensors",
    "inline_external_data",
    "lone_external_data_message",
    "resolve_location",
    "unpack_onnx_zip",
]

PathLike = Union[str, os.PathLike]

#: Default caps on an uploaded zip (zip bombs): entries, and bytes once unpacked (see :class:`IntakeLimits`).
MAX_ZIP_ENTRIES = IntakeLimits().max_zip_entries
MAX_UNPACKED_BYTES = IntakeLimits().max_unpacked_bytes
#: Protobuf cannot serialise a message of 2 GiB or more: the most one self-contained .onnx can hold.
PROTOBUF_LIMIT_BYTES = 2**31 - 1
_COPY_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# What macOS's archiver adds next to the files a user zipped.
_ZIP_NOISE = ("__MACOSX/",)


def external_tensors(model: ModelProto) -> List[TensorProto]:
    """The tensors of ``model`` (initializers and node attributes, subgraphs included) stored in external files."""
    return [t for t in all_graph_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]


def all_graph_tensors(graph):
    """Every tensor of ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from all_graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from all_graph_tensors(sub)


def _external_info(tensor: TensorProto) -> dict:
    return {entry.key: entry.value for entry in tensor.external_data}


def external_locations(model: ModelProto) -> List[str]:
    """The external-data locations ``model`` refers to, in order of first use.

    Example::

        >>> external_locations(onnx.load("m.onnx", load_external_data=False))
        ['m.onnx.data']
    """
    seen: dict = {}
    for tensor in external_tensors(model):
        seen.setdefault(_external_info(tensor).get("location", ""), None)
    return list(seen)


def lone_external_data_message(name: str, locations: List[str]) -> str:
    """What to do about a lone ``.onnx`` whose weights are in files that were not uploaded with it."""
    files = ", ".join(repr(loc) for loc in locations) or "a separate file"
    return (
        f"{name} keeps its weights in a separate external-data file ({files}); upload a .zip holding the .onnx "
        "and that file (or, in the API, send the file as the 'data' part), or re-export the model as one file: "
        "torch.onnx.export(..., external_data=False) or onnx.save(model, path, save_as_external_data=False)."
    )


def resolve_location(base: Path, location: str, name: str) -> Path:
    """The file ``location`` names inside ``base``; :class:`ModelFormatError` if it would leave ``base``.

    Example::

        >>> resolve_location(Path("up/"), "m.onnx.data", "m.onnx")
        PosixPath('/abs/up/m.onnx.data')
    """
    if not location or "\x00" in location:
        raise ModelFormatError(
            f"{name} has an external tensor without a usable location ({location!r}); re-export the model as one file."
        )
    if location.startswith(("/", "\\")) or _DRIVE.match(location) or Path(location).is_absolute():
        raise ModelFormatError(
            f"{name} points its external data at the absolute path {location!r}; Condense reads external data "
            "only from the upload itself: save the model with a relative location (the data file's name) or as one file."
        )
    if ".." in re.split(r"[/\\]", location):
        raise ModelFormatError(
            f"{name} points its external data at {location!r}, which leaves the upload's folder ('..'); "
            "external-data locations must name files inside the upload, next to the .onnx."
        )
    root = base.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise ModelFormatError(
            f"{name}: the external-data file {location!r} resolves outside the upload's folder (a symbolic link); "
            "upload the data file itself."
        )
    if not target.is_file():
        raise ModelFormatError(
            f"{name} expects its external data in {location!r}, which is not in the upload; put that file next to "
            "the .onnx (in the same .zip, or as the API's 'data' part)."
        )
    return target


def _external_span(tensor: TensorProto, info: dict, path: Path, name: str) -> tuple:
    """``(offset, length)`` of the tensor's bytes in ``path``, checked against the file's size."""
    size = path.stat().st_size
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else size - offset
    except ValueError:
        raise ModelFormatError(f"{name}: tensor {tensor.name!r} has an unreadable external-data offset or length") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelFormatError(
            f"{name}: tensor {tensor.name!r} reads bytes {offset}..{offset + length} of {info.get('location')!r}, "
            f"which holds only {size} bytes; the data file does not belong to this model (or is truncated)."
        )
    return offset, length


def inline_external_data(model: ModelProto, base_dir: PathLike, name: str = "model") -> ModelProto:
    """Read every external tensor of ``model`` from files inside ``base_dir`` into the model (in place).

    Locations are resolved inside ``base_dir`` only (see the module's notes);
    a model that would not fit one protobuf (2 GB) once inlined is refused.
    Raises :class:`ModelFormatError` with a sentence for the uploader.

    Example::

        >>> proto = onnx.load("up/m.onnx", load_external_data=False)
        >>> inline_external_data(proto, "up/", "m.onnx").graph.initializer[0].HasField("raw_data")
        True
    """
    base = Path(base_dir)
    tensors = external_tensors(model)
    planned = []
    total = model.ByteSize()
    for tensor in tensors:
        info = _external_info(tensor)
        path = resolve_location(base, info.get("location", ""), name)
        offset, length = _external_span(tensor, info, path, name)
        planned.append((tensor, path, offset, length))
        total += length
    if total > PROTOBUF_LIMIT_BYTES:
        raise ModelFormatError(
            f"{name} holds {total / 1e9:.2f} GB of weights, above protobuf's 2 GB limit for one ONNX file; "
            "Condense stores every model as one self-contained .onnx, so it cannot take a model this large."
        )
    for tensor, path, offset, length in planned:
        with open(path, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(length)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
    return model


# ---------------------------------------------------------------------------
# Zip uploads


def _zip_member_path(info: zipfile.ZipInfo) -> Optional[PurePosixPath]:
    """Where a member goes inside the unpack folder; ``None`` for members to skip; refuses any that would escape."""
    raw = info.filename.replace("\\", "/")
    if raw.startswith(_ZIP_NOISE) or PurePosixPath(raw).name.startswith("._"):
        return None
    if raw.startswith("/") or _DRIVE.match(raw) or ".." in raw.split("/"):
        raise ModelFormatError(
            f"the zip entry {info.filename!r} points outside the archive's folder; zip the model's files themselves."
        )
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise ModelFormatError(
            f"the zip entry {info.filename!r} is a symbolic link; put the file itself in the zip."
        )
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def unpack_onnx_zip(
    zip_path: PathLike,
    target_dir: PathLike,
    *,
    max_entries: Optional[int] = None,
    max_bytes: Optional[int] = None,
    limits: IntakeLimits = IntakeLimits(),
) -> Path:
    """Unpack a zip holding exactly one ``.onnx`` (and its external-data files) into ``target_dir``; return the .onnx.

    Hostile input is expected: the archive is refused from its central
    directory before anything is inflated (more than ``limits.max_zip_entries``
    members, more than ``limits.max_unpacked_bytes`` declared, a member whose
    compression ratio is over ``limits.max_zip_ratio``; see
    :func:`~compression_core.data.archives.open_checked_zip`), and the bytes
    are counted again while unpacking, since headers can lie. Members that would
    land outside ``target_dir`` (``..``, absolute names) or are symbolic links
    are refused. ``max_entries`` / ``max_bytes``, when given, replace the two caps.

    Example::

        >>> unpack_onnx_zip("upload.zip", "tmp/")
        PosixPath('tmp/model.onnx')
    """
    max_entries = limits.max_zip_entries if max_entries is None else int(max_entries)
    max_bytes = limits.max_unpacked_bytes if max_bytes is None else int(max_bytes)
    zip_path, target = Path(zip_path), Path(target_dir)
    archive = open_checked_zip(
        zip_path, max_entries=max_entries, max_bytes=max_bytes, limits=limits, entries_field="max_zip_entries",
        bytes_field="max_unpacked_bytes", error=ModelFormatError, not_a_zip=f"{zip_path.name} is not a readable zip archive",
    )
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        placed = [(info, _zip_member_path(info)) for info in members]
        placed = [(info, rel) for info, rel in placed if rel is not None]
        models = [rel for _, rel in placed if rel.suffix.lower() == ".onnx"]
        if len(models) != 1:
            found = f"{len(models)} .onnx files ({', '.join(str(m) for m in models)})" if models else "no .onnx file"
            raise ModelFormatError(
                f"the zip holds {found}; put exactly one .onnx model in it, with its external-data files."
            )
        budget = ByteBudget(max_bytes, limits, "max_unpacked_bytes", error=ModelFormatError)
        for info, rel in placed:
            destination = target.joinpath(*rel.parts)
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "xb") as sink:
                    while chunk := source.read(_COPY_CHUNK):
                        budget.take(len(chunk))
                        sink.write(chunk)
            except OSError:  # the same name twice, or a file and a folder of one name
                raise ModelFormatError(
                    f"the zip holds {str(rel)!r} twice (or a file and a folder of that name); zip each file once."
                ) from None
            except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ModelFormatError(  # encrypted, damaged, an unsupported compression method
                    f"the zip entry {info.filename!r} cannot be read ({exc}); upload a zip without a password."
                ) from exc
    return target.joinpath(*models[0].parts)
