"""Recognise a model file from its content (never from its name)."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Union

import onnx

from ..data.archives import declared_entries

__all__ = ["detect_format", "FORMATS"]

PathLike = Union[str, os.PathLike]

#: Every value :func:`detect_format` can return.
FORMATS = ("onnx", "onnx_zip", "safetensors", "torch_zip", "pickle", "torchscript", "torch_export", "unknown")

_ZIP_MAGIC = b"PK\x03\x04"
_HEAD_BYTES = 64
# Wire-format tags of length-delimited ModelProto fields that follow ir_version
# (producer_name=2, producer_version=3, domain=4, doc_string=6, graph=7,
#  opset_import=8, metadata_props=14, training_info=20, functions=25).
_ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}
# Parse files up to this size fully to be sure they are ONNX; bigger ones are
# recognised from their header (the loader still parses them completely).
_ONNX_PARSE_LIMIT = 256 * 1024 * 1024
# Zips with more members than this are recognised from their first local headers, not listed.
_MAX_LISTED_ENTRIES = 100_000
_MAX_LISTED_DIRECTORY = 64 * 1024 * 1024


def detect_format(path: PathLike) -> str:
    """Return the format of the model file at ``path``, judged from its bytes.

    One of:

    - ``"onnx"``: an ONNX ``ModelProto`` with a graph. A file whose header is
      that of an ONNX model but which does not parse (truncated, corrupted) is
      also reported as ``"onnx"``, so that loading it says what is wrong.
    - ``"onnx_zip"``: a zip holding ``.onnx`` files (a model and its external-data files).
    - ``"safetensors"``: 8-byte header length followed by a JSON header.
    - ``"torchscript"``: a ``torch.jit.save`` zip (``constants.pkl`` / ``code/``).
    - ``"torch_export"``: a ``torch.export.save`` (``.pt2``) zip.
    - ``"torch_zip"``: a ``torch.save`` zip archive (``*/data.pkl``), either a
      state_dict or a whole pickled model.
    - ``"pickle"``: a raw pickle stream (legacy ``torch.save`` or ``pickle.dump``).
    - ``"unknown"``: anything else.

    Example::

        >>> detect_format("resnet18.onnx")
        'onnx'
        >>> detect_format("weights.bin")        # a safetensors file, whatever its name
        'safetensors'
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if not head:
        return "unknown"

    if head.startswith(_ZIP_MAGIC):
        return _detect_zip(path)
    if _looks_like_safetensors(path, head, size):
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5:
        return "pickle"
    if _looks_like_onnx(path, head, size):
        return "onnx"
    return "unknown"


def _detect_zip(path: Path) -> str:
    try:
        declared = declared_entries(path)
        if declared is not None and (declared[0] > _MAX_LISTED_ENTRIES or declared[1] > _MAX_LISTED_DIRECTORY):
            raise ValueError("a central directory too large to list")  # the loader refuses it; no ZipInfo objects
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        # Damaged (e.g. truncated) archive, or a zip version zipfile cannot read: judge from the local file headers.
        with open(path, "rb") as handle:
            start = handle.read(4 * 1024 * 1024)
        if b"constants.pkl" in start or b"/code/__torch__" in start:
            return "torchscript"
        if b"archive_format" in start or b"/models/model.json" in start:
            return "torch_export"
        if b"data.pkl" in start:
            return "torch_zip"
        return "unknown"
    parts = [name.split("/") for name in names]
    # Records are stored under one top-level folder ("<archive name>/...").
    inner = {"/".join(p[1:]) for p in parts if len(p) > 1}
    top = set(names)
    if any(n == "constants.pkl" or n.startswith("code/") for n in inner) or "constants.pkl" in top:
        return "torchscript"
    if any(n in ("archive_format", "models/model.json") or n.startswith("models/") for n in inner):
        return "torch_export"
    if "data.pkl" in inner or "data.pkl" in top:
        return "torch_zip"
    if any(name.lower().endswith(".onnx") for name in names):
        return "onnx_zip"
    return "unknown"


def _looks_like_safetensors(path: Path, head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len < 2 or 8 + header_len > size or header_len > 100 * 1024 * 1024:
        return False
    if head[8:9] != b"{":
        return False
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    except RecursionError:  # a deeply nested header: a safetensors file, one that loading refuses
        return True
    return isinstance(header, dict)


def _onnx_header(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint): tag 0x08, a small
    # version, then one of the length-delimited fields.
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_SECOND_TAGS


def _looks_like_onnx(path: Path, head: bytes, size: int) -> bool:
    header_ok = _onnx_header(head)
    if size > _ONNX_PARSE_LIMIT:
        return header_ok
    try:
        with open(path, "rb") as handle:
            model = onnx.load_model_from_string(handle.read())
    except Exception:  # noqa: BLE001 - any parse failure means "not a well-formed ONNX"
        return header_ok
    if model.HasField("graph") and (len(model.graph.node) > 0 or len(model.graph.output) > 0):
        return True
    return header_ok
