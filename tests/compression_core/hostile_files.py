"""Hostile upload files, built small: the measured attacks of issue 13 and their neighbours.

Each builder writes one file and returns its path. Used by test_intake_structure.py (each attack refused
cheaply) and test_fuzz_readers.py (valid small files to mutate).

Example::

    >>> path = relu_chain(tmp_path / "relu.onnx", 20_000)
    >>> path.stat().st_size < 600_000
    True
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

OPSET = [helper.make_opsetid("", 17)]


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def relu_chain(path: Path, count: int) -> Path:
    """``count`` Relu nodes in a row: small on disk, slow to convert."""
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(count)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"t{count}", TensorProto.FLOAT, [1, 4])])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def shape_builder(path: Path, op: str, target: Sequence[int]) -> Path:
    """One ``op`` (ConstantOfShape, Expand or Tile) whose constant operand asks for ``target``."""
    shape = helper.make_tensor("target", TensorProto.INT64, [len(target)], list(target))
    if op == "ConstantOfShape":
        node = helper.make_node("ConstantOfShape", ["target"], ["y"],
                                value=helper.make_tensor("v", TensorProto.DOUBLE, [1], [1.0]))
        inputs = []
    else:
        node = helper.make_node(op, ["x", "target"], ["y"])
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] * len(target))]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[shape])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def range_builder(path: Path, limit: float) -> Path:
    """A Range from 0 to ``limit`` by 1, its bounds Constant nodes."""
    nodes = [
        helper.make_node("Constant", [], ["start"], value=helper.make_tensor("s", TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], ["limit"], value=helper.make_tensor("l", TensorProto.INT64, [], [int(limit)])),
        helper.make_node("Constant", [], ["delta"], value_int=1),
        helper.make_node("Range", ["start", "limit", "delta"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def declared_initializer(path: Path, dims: Sequence[int], raw: bytes | None = b"") -> Path:
    """A model whose unused initializer declares ``dims`` but holds ``raw`` (``None``: no data field at all)."""
    tensor = TensorProto(name="unused", data_type=TensorProto.FLOAT, dims=list(dims))
    if raw is not None:
        tensor.raw_data = raw
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[tensor])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def small_model(path: Path) -> Path:
    """A valid little Conv + Relu + Reshape model (weights 4 x 1 x 3 x 3), the seed for mutations."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], np.linspace(-1, 1, 36, dtype=np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                              initializer=[weight, shape])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def nested_ifs(path: Path, depth: int, nodes_per_branch: int = 1) -> Path:
    """``If`` nodes nested ``depth`` deep (in their then-branches), each leaf holding ``nodes_per_branch`` Identity nodes."""

    def branch(level: int, tag: str) -> onnx.GraphProto:
        out = f"{tag}{level}_out"
        if level >= depth or tag == "e":
            nodes = [helper.make_node("Identity", ["x"] if i == 0 else [f"{tag}{level}_{i}"],
                                      [f"{tag}{level}_{i + 1}"] if i < nodes_per_branch - 1 else [out])
                     for i in range(nodes_per_branch)]
        else:
            nodes = [helper.make_node("If", ["cond"], [out], then_branch=branch(level + 1, "t"),
                                      else_branch=branch(level + 1, "e"))]
        return helper.make_graph(nodes, f"{tag}{level}", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])

    top = helper.make_node("If", ["cond"], ["y"], then_branch=branch(1, "t"), else_branch=branch(1, "e"))
    graph = helper.make_graph([top], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def zeros_member_zip(path: Path, members: dict, zeros_name: str, zeros_bytes: int) -> Path:
    """A deflated zip of ``members`` plus ``zeros_name`` holding ``zeros_bytes`` zeros, written in chunks."""
    chunk = bytes(1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with archive.open(zeros_name, "w", force_zip64=zeros_bytes > 2**31) as sink:
            left = zeros_bytes
            while left > 0:
                sink.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return path


def png_bytes(width: int, height: int) -> bytes:
    """A flat grey PNG: a few kilobytes, ``width * height`` pixels once decoded."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def image_zip(path: Path, images: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in images.items():
            archive.writestr(name, data)
    return path


def npy_member(shape: Sequence[int], dtype: str = "<f4", data: bytes = b"") -> bytes:
    """An .npy whose header declares ``shape`` and ``dtype`` followed by ``data`` (as much as the caller gives)."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def safetensors_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: its 8-byte length (``length`` to lie), the JSON header, then ``data``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data
