"""Fuzzing the readers of uploads: whatever the bytes, only the documented validation error comes out.

Model readers raise ``ModelFormatError``, dataset readers and config-list parsers ``ValueError`` (which the
web side turns into a 400 naming the problem); anything else would be a 500. Inputs are random bytes,
byte-level mutations of small valid files, and structured but wrong ONNX graphs, safetensors headers, .npy
headers and config lists. Bounded example counts keep the whole file well under a minute on two cores.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pinned in requirements.txt)")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the skip above
from hypothesis import strategies as st  # noqa: E402

from compression_core.config.quantization import parse_quant_config_list
from compression_core.config.selection import canonicalize_config_list
from compression_core.data import IntakeLimits, inspect_dataset
from compression_core.io import ModelFormatError, consolidate_onnx, detect_format, load_model, read_onnx
from compression_core.io.onnx.structure import onnx_structure_check
from compression_core.io.weights import read_safetensors
from tests.compression_core import hostile_files as hostile

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Small caps so that a mutation that happens to declare something large is refused, not built.
LIMITS = IntakeLimits(max_onnx_nodes=500, max_tensor_elements=1_000_000, max_unpacked_bytes=50_000_000,
                      max_total_pixels=10_000_000, dataset_max_uncompressed_bytes=50_000_000)


@contextmanager
def _file(name: str, data: bytes):
    with tempfile.TemporaryDirectory(prefix="condense-fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def _mutate(data: bytes, edits: list, cut: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value, insert in edits:
        at = position % (len(buffer) + 1)
        if insert or at == len(buffer):
            buffer.insert(at, value)
        else:
            buffer[at] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


EDITS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255), st.booleans()), min_size=1, max_size=8)
CUT = st.none() | st.integers(0, 4096)


def _seed_files() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        small = hostile.small_model(folder / "m.onnx").read_bytes()
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((6, 4, 4), np.uint8), y=np.arange(6) % 2)
    images = io.BytesIO()
    with zipfile.ZipFile(images, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(4):
            archive.writestr(f"{'cat' if index % 2 else 'dog'}/{index}.png", hostile.png_bytes(6, 5))
    model_zip = io.BytesIO()
    with zipfile.ZipFile(model_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m.onnx", small)
    safetensors = hostile.safetensors_bytes(
        {"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
        bytes(16))
    return {"onnx": small, "npz": npz.getvalue(), "images": images.getvalue(), "model_zip": model_zip.getvalue(),
            "safetensors": safetensors}


SEEDS = _seed_files()


def _model_reader_refuses_only_cleanly(path: Path) -> None:
    try:
        onnx_structure_check(path, LIMITS)
        read_onnx(path, limits=LIMITS)
    except ModelFormatError:
        pass


# ---------------------------------------------------------------------------
# ONNX


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_onnx(data):
    with _file("m.onnx", data) as path:
        _model_reader_refuses_only_cleanly(path)


@FUZZ
@given(EDITS, CUT)
def test_mutated_onnx(edits, cut):
    with _file("m.onnx", _mutate(SEEDS["onnx"], edits, cut)) as path:
        _model_reader_refuses_only_cleanly(path)


OPS = ["Relu", "Conv", "Reshape", "ConstantOfShape", "Expand", "Tile", "Range", "Constant", "Add", "If", "Identity",
       "Concat", "Cast", "NoSuchOp"]
DTYPES = [TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.UINT8, TensorProto.BOOL,
          TensorProto.FLOAT16, TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.INT4, 0, 99]
DIMS = st.lists(st.integers(-3, 2**40) | st.integers(0, 8), max_size=4)
NAMES = st.sampled_from(["x", "w", "s", "a", "b", ""])


@st.composite
def initializers(draw):
    tensor = TensorProto(name=draw(NAMES), data_type=draw(st.sampled_from(DTYPES)), dims=draw(DIMS))
    kind = draw(st.sampled_from(["raw", "int64", "float", "none", "external"]))
    if kind == "raw":
        tensor.raw_data = draw(st.binary(max_size=64))
    elif kind == "int64":
        tensor.int64_data.extend(draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=8)))
    elif kind == "float":
        tensor.float_data.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "external":
        tensor.data_location = TensorProto.EXTERNAL
        for key in draw(st.lists(st.sampled_from(["location", "offset", "length"]), max_size=3)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, draw(st.sampled_from(["0", "-1", "x", "../etc/passwd", "/abs", "9" * 30]))
    return tensor


@st.composite
def graphs(draw, depth=0):
    nodes = []
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(OPS))
        inputs = draw(st.lists(NAMES, max_size=3))
        kwargs = {}
        if op == "Constant":
            kwargs["value"] = draw(initializers())
        if op == "If" and depth < 2:
            kwargs["then_branch"] = draw(graphs(depth + 1))
            kwargs["else_branch"] = draw(graphs(depth + 1))
        nodes.append(helper.make_node(op, inputs, [draw(NAMES) or "out"], **kwargs))
    value = helper.make_tensor_value_info(draw(NAMES), draw(st.sampled_from(DTYPES[:6])),
                                          draw(st.lists(st.integers(0, 2**40) | st.text(max_size=2), max_size=4)))
    return helper.make_graph(nodes, "g", [value], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                             initializer=draw(st.lists(initializers(), max_size=3)))


@FUZZ
@given(graphs(), st.integers(1, 21))
def test_structured_but_wrong_onnx(graph, opset):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    with _file("m.onnx", model.SerializeToString()) as path:
        _model_reader_refuses_only_cleanly(path)


# ---------------------------------------------------------------------------
# Zips of models, safetensors, anything given to load_model


@FUZZ
@given(EDITS, CUT)
def test_mutated_model_zip(edits, cut):
    with _file("m.zip", _mutate(SEEDS["model_zip"], edits, cut)) as path:
        try:
            consolidate_onnx(path, path.with_name("out.onnx"), limits=LIMITS)
        except ModelFormatError:
            pass


HEADER_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=6) | st.sampled_from(["F32", "I64", "U8"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@FUZZ
@given(st.dictionaries(st.sampled_from(["__metadata__", "w", "b"]),
                       HEADER_VALUES | st.fixed_dictionaries({"dtype": HEADER_VALUES, "shape": HEADER_VALUES,
                                                              "data_offsets": HEADER_VALUES}), max_size=3),
       st.binary(max_size=64), st.none() | st.integers(0, 2**64 - 1))
def test_safetensors_headers(header, data, length):
    with _file("w.safetensors", hostile.safetensors_bytes(header, data, length)) as path:
        try:
            read_safetensors(path, LIMITS)
        except ModelFormatError:
            pass


@FUZZ
@given(EDITS, CUT)
def test_mutated_safetensors(edits, cut):
    with _file("w.safetensors", _mutate(SEEDS["safetensors"], edits, cut)) as path:
        try:
            read_safetensors(path, LIMITS)
        except ModelFormatError:
            pass


@settings(FUZZ, max_examples=100)
@given(st.sampled_from(["onnx", "safetensors", "model_zip"]), EDITS, CUT,
       st.sampled_from([b"", b"\x80\x02", b"PK\x03\x04", b"\x08\x07\x12"]))
def test_load_model_on_anything(seed, edits, cut, prefix):
    data = prefix + _mutate(SEEDS[seed], edits, cut)
    with _file("upload.bin", data) as path:
        assert detect_format(path) in ("onnx", "onnx_zip", "safetensors", "torch_zip", "pickle", "torchscript",
                                        "torch_export", "unknown")
        try:
            load_model(path, architecture="digits_cnn", limits=LIMITS)
        except ModelFormatError:
            pass


# ---------------------------------------------------------------------------
# Datasets


def _dataset_reader_refuses_only_cleanly(path: Path) -> None:
    try:
        inspect_dataset(path, limits=LIMITS)
    except ValueError:
        pass


@FUZZ
@given(st.sampled_from(["npz", "images"]), EDITS, CUT)
def test_mutated_datasets(seed, edits, cut):
    with _file("d.zip", _mutate(SEEDS[seed], edits, cut)) as path:
        _dataset_reader_refuses_only_cleanly(path)


NPY_SHAPES = st.lists(st.integers(-3, 2**62), max_size=4).map(tuple) | st.sampled_from([(), (3, 2), (6, 4, 4)])


@FUZZ
@given(st.dictionaries(st.sampled_from(["x", "y", "labels", "other"]),
                       st.tuples(NPY_SHAPES, st.sampled_from(["<f4", "|u1", "<i8", "|O", "|b1", "<U3", "V8", "zz"]),
                                 st.binary(max_size=200)), min_size=1, max_size=3))
def test_npy_headers(arrays):
    with _file("d.npz", b"") as path:
        with zipfile.ZipFile(path, "w") as archive:
            for key, (shape, dtype, data) in arrays.items():
                archive.writestr(f"{key}.npy", hostile.npy_member(shape, dtype, data))
        _dataset_reader_refuses_only_cleanly(path)


@FUZZ
@given(st.binary(max_size=1024))
def test_random_bytes_as_dataset(data):
    with _file("d.zip", b"PK\x03\x04" + data) as path:
        _dataset_reader_refuses_only_cleanly(path)


# ---------------------------------------------------------------------------
# Config lists (JSON from the job form and the API)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from(["Conv2d", "Linear", "default", "out_channel", "weight", "int8", "(", "a{99999999999}"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)
CONFIG_KEYS = st.sampled_from(["op_types", "op_names", "op_names_re", "exclude_op_names", "sparse_ratio", "sparsity",
                               "total_sparsity", "granularity", "exclude", "quant_types", "quant_bits", "quant_dtype",
                               "quant_scheme", "fuse_names", "dependency_group_id", "nonsense"])
CONFIG_LISTS = st.lists(st.dictionaries(CONFIG_KEYS, JSON_VALUES, max_size=5), max_size=3) | JSON_VALUES


@pytest.mark.parametrize("parse", [canonicalize_config_list, parse_quant_config_list], ids=["pruning", "quantization"])
def test_config_lists(parse):
    @settings(FUZZ, max_examples=300)
    @given(CONFIG_LISTS)
    def check(config_list):
        try:
            parse(config_list)
        except ValueError:
            pass

    check()


def test_the_seeds_are_valid():
    # The mutations start from files every reader accepts.
    with _file("m.onnx", SEEDS["onnx"]) as path:
        assert onnx_structure_check(path, LIMITS).nodes == 3
    with _file("d.npz", SEEDS["npz"]) as path:
        assert inspect_dataset(path, limits=LIMITS)["samples"] == 6
    with _file("d.zip", SEEDS["images"]) as path:
        assert inspect_dataset(path, limits=LIMITS)["classes"] == [{"name": "cat", "count": 2},
                                                                   {"name": "dog", "count": 2}]
    with _file("w.safetensors", SEEDS["safetensors"]) as path:
        assert read_safetensors(path, LIMITS)[0]["w"].shape == (2, 2)
    with _file("m.zip", SEEDS["model_zip"]) as path:
        assert consolidate_onnx(path, path.with_name("out.onnx"), limits=LIMITS).stat().st_size == len(SEEDS["onnx"])
    assert json.dumps(canonicalize_config_list([{"op_types": ["Conv2d"], "sparsity": 0.5}]))
