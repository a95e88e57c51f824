"""Hostile uploads refused from their structure, before anything large is built (issue 13).

Each measured attack is built here, small, and given to the engine's readers in one child process whose
peak memory is measured (``ru_maxrss``); the refusals are one sentence naming the figure, the limit and the
``CONDENSE_*`` setting. Real files of the same kinds still load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compression_core.data import IntakeLimits, inspect_dataset
from compression_core.data.archives import ByteBudget, declared_entries, read_member
from compression_core.io import ModelFormatError, consolidate_onnx, load_model, read_onnx
from compression_core.io.onnx.structure import onnx_structure_check
from compression_core.io.weights import safetensors_header_check
from tests.compression_core import hostile_files as hostile

REPO = Path(__file__).resolve().parents[2]
# What one check may allocate above the interpreter with torch imported; the attacks ask for 1.6 to 4,000 GB.
PEAK_BOUND_MB = 200

_PROBE = r"""
import json, resource, sys
from pathlib import Path
import numpy as np
from compression_core.data import inspect_dataset
from compression_core.io import consolidate_onnx
from compression_core.io.onnx.structure import onnx_structure_check
from compression_core.io.weights import read_safetensors

readers = {
    "onnx": onnx_structure_check,
    "model_zip": lambda path: consolidate_onnx(path, Path(path).with_suffix(".out.onnx")),
    "dataset": inspect_dataset,
    "safetensors": read_safetensors,
    "control": lambda size: float(np.ones(int(size) // 4, np.float32).sum()),  # what a real allocation shows
}


def status_mb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(field + ":"))


results, growth = {}, {}
for name, (kind, path) in json.loads(sys.argv[1]).items():
    with open("/proc/self/clear_refs", "w") as refs:  # the peak (VmHWM) starts again from the current size
        refs.write("5")
    base = status_mb("VmRSS")
    try:
        readers[kind](path)
        results[name] = None
    except ValueError as exc:
        results[name] = str(exc)
    growth[name] = status_mb("VmHWM") - base
print(json.dumps({"results": results, "peak_growth_mb": growth}))
"""


def _attacks(folder: Path) -> dict:
    small = hostile.small_model(folder / "small.onnx").read_bytes()
    big_png = hostile.png_bytes(4000, 4000)
    over_2gb = folder / "over2gb.onnx"
    with open(over_2gb, "wb") as handle:  # sparse: no disk used, nothing worth reading
        handle.write(small)
        handle.truncate(2**31 + 16)
    deep = b'{"__metadata__": ' + b'{"a": ' * 5000 + b'"b"' + b"}" * 5001
    return {
        "relu_chain": ("onnx", hostile.relu_chain(folder / "relu.onnx", 20_000)),
        "constant_of_shape": ("onnx", hostile.shape_builder(folder / "cos.onnx", "ConstantOfShape", [20000, 20000])),
        "expand": ("onnx", hostile.shape_builder(folder / "expand.onnx", "Expand", [20000, 20000])),
        "tile": ("onnx", hostile.shape_builder(folder / "tile.onnx", "Tile", [20000, 20000])),
        "range": ("onnx", hostile.range_builder(folder / "range.onnx", 10**10)),
        "huge_initializer": ("onnx", hostile.declared_initializer(folder / "huge.onnx", [10**15])),
        "thin_initializer": ("onnx", hostile.declared_initializer(folder / "thin.onnx", [8000, 8000], b"\0" * 16)),
        "declared_output": ("onnx", _declared_output(folder / "output.onnx")),
        "nested_ifs": ("onnx", hostile.nested_ifs(folder / "nested.onnx", 20)),
        "over_2gb": ("onnx", over_2gb),
        "model_zip_bomb": ("model_zip", hostile.zeros_member_zip(folder / "model_bomb.zip", {"m.onnx": small},
                                                                 "m.onnx.data", 300 * 1024**2)),
        "image_zip_bomb": ("dataset", hostile.zeros_member_zip(folder / "image_bomb.zip", {"c/a.png": big_png},
                                                               "c/huge.png", 300 * 1024**2)),
        "large_pngs": ("dataset", hostile.image_zip(folder / "pngs.zip",
                                                    {f"c/{i}.png": big_png for i in range(70)})),
        "one_huge_png": ("dataset", hostile.image_zip(folder / "huge_png.zip",
                                                      {"c/a.png": hostile.png_bytes(8, 8),
                                                       "c/b.png": hostile.png_bytes(6000, 6000)})),
        "npz_declared": ("dataset", hostile.image_zip(folder / "declared.npz",
                                                      {"x.npy": hostile.npy_member((10**12, 3))})),
        "npz_bomb": ("dataset", hostile.zeros_member_zip(folder / "bomb.npz",
                                                         {"x.npy": hostile.npy_member((4, 2), data=bytes(32))},
                                                         "y.npy", 300 * 1024**2)),
        "safetensors_length": ("safetensors", _write(folder / "length.safetensors",
                                                     hostile.safetensors_bytes({}, length=2**40))),
        "safetensors_nested": ("safetensors", _write(folder / "nested.safetensors",
                                                     hostile.safetensors_bytes(deep))),
        "safetensors_offsets": ("safetensors", _write(folder / "offsets.safetensors", hostile.safetensors_bytes(
            {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}, bytes(16)))),
        "safetensors_shape": ("safetensors", _write(folder / "shape.safetensors", hostile.safetensors_bytes(
            {"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 16]}}, bytes(16)))),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _declared_output(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100_000, 100_000])])
    return hostile.save(helper.make_model(graph, opset_imports=hostile.OPSET), path)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    attacks = _attacks(folder)
    for name, (_, path) in attacks.items():
        assert name == "over_2gb" or path.stat().st_size < 2_000_000, name  # cheap to send
    calls = {name: (kind, str(path)) for name, (kind, path) in attacks.items()}
    calls["control_300mb"] = ("control", 300 * 1024**2)
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(calls)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, message", [
    ("relu_chain", "relu.onnx has 20,000 ONNX nodes (subgraphs and functions included), more than the limit of "
                   "15,000 (CONDENSE_ONNX_MAX_NODES)"),
    ("constant_of_shape", "cos.onnx builds, in its ConstantOfShape node (output 'y'), a tensor of 400,000,000 "
                          "elements, more than the limit of 268,435,456 (CONDENSE_MAX_TENSOR_ELEMENTS)"),
    ("expand", "in its Expand node (output 'y'), a tensor of 400,000,000 elements"),
    ("tile", "in its Tile node (output 'y'), a tensor of 400,000,000 elements"),
    ("range", "in its Range node (output 'y'), a tensor of 10,000,000,000 elements"),
    ("huge_initializer", "huge.onnx declares initializer 'unused' of shape [1000000000000000], that is "
                         "1,000,000,000,000,000 elements, more than the limit of 268,435,456 "
                         "(CONDENSE_MAX_TENSOR_ELEMENTS)"),
    ("thin_initializer", "initializer 'unused' of shape [8000, 8000] declares 256,000,000 bytes but the file "
                         "holds 16 for it"),
    ("declared_output", "declares the tensor 'y' with static dims [100000, 100000], that is 10,000,000,000 "
                        "elements"),
    ("nested_ifs", "nests subgraphs (If / Loop / Scan bodies) 17 levels deep, more than the limit of 16 "
                   "(CONDENSE_ONNX_MAX_SUBGRAPH_DEPTH)"),
    ("over_2gb", "over2gb.onnx is 2.15 GB, above protobuf's 2 GB limit for one ONNX file"),
    ("model_zip_bomb", "the zip member 'm.onnx.data' inflates 314,572,800 bytes from"),
    ("image_zip_bomb", "the zip member 'c/huge.png' inflates 314,572,800 bytes from"),
    ("large_pngs", "more than the limit of 1,000,000,000 (CONDENSE_DATASET_MAX_TOTAL_PIXELS)"),
    ("one_huge_png", "the image 'c/b.png' is 6000 x 6000 pixels; the limit is 16,777,216 pixels per image "
                     "(CONDENSE_DATASET_MAX_IMAGE_PIXELS)"),
    ("npz_declared", "the array 'x' in the .npz declares 3,000,000,000,000 elements, more than the limit of "
                     "268,435,456 (CONDENSE_MAX_TENSOR_ELEMENTS)"),
    ("npz_bomb", "the zip member 'y.npy' inflates 314,572,800 bytes from"),
    ("safetensors_length", "length.safetensors is not a valid safetensors file: its header claims "
                           "1,099,511,627,776 bytes"),
    ("safetensors_nested", "its header is not JSON (it nests too deeply)"),
    ("safetensors_offsets", "tensor 'w''s data_offsets [0, 4000000] leave the file's 16 bytes of data"),
    ("safetensors_shape", "tensor 'w' declares 1,000,000,000,000,000,000 elements, more than the limit of "
                          "268,435,456 (CONDENSE_MAX_TENSOR_ELEMENTS)"),
])
def test_each_attack_is_refused_with_one_sentence(refusals, name, message):
    refusal = refusals["results"][name]
    assert refusal is not None, f"{name} was accepted"
    assert message in refusal
    assert "\n" not in refusal


def test_zip_ratio_refusal_names_its_setting(refusals):
    assert "more than the limit of 100.0 (CONDENSE_ZIP_MAX_RATIO)" in refusals["results"]["model_zip_bomb"]


def test_every_refusal_is_cheap(refusals):
    # 20 attacks asking for 1.6 GB to 4e18 bytes, each refused within this much new memory (peak resident size).
    growth = refusals["peak_growth_mb"]
    assert growth["control_300mb"] > 290  # the measure sees a real allocation
    assert {name: mb for name, mb in growth.items() if mb >= PEAK_BOUND_MB} == {"control_300mb": growth["control_300mb"]}


def test_files_are_small(tmp_path):
    assert hostile.relu_chain(tmp_path / "r.onnx", 20_000).stat().st_size < 500_000
    assert hostile.shape_builder(tmp_path / "c.onnx", "ConstantOfShape", [20000, 20000]).stat().st_size < 200


# ---------------------------------------------------------------------------
# Every load path checks the structure, with the operator's limits


def test_load_paths_check_the_structure_first(tmp_path):
    relu = hostile.relu_chain(tmp_path / "relu.onnx", 200)
    small = IntakeLimits(max_onnx_nodes=100)
    for load in (lambda: load_model(relu, limits=small), lambda: read_onnx(relu, check=False, limits=small),
                 lambda: consolidate_onnx(relu, tmp_path / "out.onnx", limits=small)):
        with pytest.raises(ModelFormatError, match=r"has 200 ONNX nodes .* limit of 100 \(CONDENSE_ONNX_MAX_NODES\)"):
            load()
    assert not (tmp_path / "out.onnx").exists()
    torch = pytest.importorskip("torch")
    assert load_model(relu)(torch.ones(1, 4)).shape == (1, 4)  # the default limits take it


def test_a_zip_upload_is_checked_with_its_data_folder(tmp_path):
    model = hostile.declared_initializer(tmp_path / "m.onnx", [64, 64], None)
    proto = onnx.load(str(model))
    tensor = proto.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "m.onnx.data"), ("offset", "0"), ("length", str(64 * 64 * 4))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("m.onnx", proto.SerializeToString())
        handle.writestr("m.onnx.data", bytes(100))
    with pytest.raises(ModelFormatError, match="reads bytes 0..16,384 of 'm.onnx.data', which holds only 100 bytes"):
        consolidate_onnx(archive, tmp_path / "out.onnx")


def test_subgraph_nodes_count_toward_the_total(tmp_path):
    path = hostile.nested_ifs(tmp_path / "ifs.onnx", 3, nodes_per_branch=40)
    structure = onnx_structure_check(path)
    assert structure.nodes == 3 + 4 * 40  # three Ifs, four leaf branches of 40 Identity nodes
    assert structure.max_subgraph_depth == 3 and structure.ops == {"Identity": 160, "If": 3}
    with pytest.raises(ModelFormatError, match="has 163 ONNX nodes"):
        onnx_structure_check(path, IntakeLimits(max_onnx_nodes=162))


def test_local_functions_count_as_often_as_they_are_called(tmp_path):
    body = [helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Relu", ["b"], ["c"])]
    twice = helper.make_function("local", "TwoRelu", ["a"], ["c"], body, hostile.OPSET)
    calls = [helper.make_node("TwoRelu", [f"t{i}"], [f"t{i + 1}"], domain="local") for i in range(30)]
    graph = helper.make_graph(calls, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("t30", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=hostile.OPSET + [helper.make_opsetid("local", 1)],
                              functions=[twice])
    path = hostile.save(model, tmp_path / "f.onnx")
    assert onnx_structure_check(path).nodes == 60
    with pytest.raises(ModelFormatError, match="has 60 ONNX nodes"):
        onnx_structure_check(path, IntakeLimits(max_onnx_nodes=59))


def test_reshape_and_small_builders_pass(tmp_path):
    structure = onnx_structure_check(hostile.small_model(tmp_path / "s.onnx"))
    assert structure.ops == {"Conv": 1, "Relu": 1, "Reshape": 1}
    assert structure.initializer_bytes == 4 * 36 + 8 * 2
    for op in ("ConstantOfShape", "Expand", "Tile"):
        assert onnx_structure_check(hostile.shape_builder(tmp_path / f"{op}.onnx", op, [64, 64])).nodes == 1
    assert onnx_structure_check(hostile.range_builder(tmp_path / "r.onnx", 1000)).ops["Range"] == 1


def test_a_real_export_passes_with_its_figures(tmp_path):
    torch = pytest.importorskip("torch")
    from compression_core.models import build_architecture  # only this test needs an architecture

    path = tmp_path / "digits.onnx"
    model = build_architecture("digits_cnn").eval()
    torch.onnx.export(model, torch.randn(1, 1, 8, 8), str(path), dynamo=False)
    structure = onnx_structure_check(path)
    params = sum(p.numel() for p in model.parameters())
    assert structure.initializer_bytes >= 4 * params * 0.9 and structure.nodes >= 3


# ---------------------------------------------------------------------------
# Zips: the central directory first, then the bytes actually inflated


def test_the_member_count_is_read_from_the_end_record(tmp_path):
    archive = hostile.image_zip(tmp_path / "many.zip", {f"c/{i}.txt": b"" for i in range(30)})
    assert declared_entries(archive) == (30, declared_entries(archive)[1])
    with pytest.raises(ValueError, match=r"the zip holds 30 files; the limit is 20 \(CONDENSE_MODEL_ZIP_MAX_ENTRIES\)"):
        consolidate_onnx(archive, tmp_path / "out.onnx", max_entries=20)
    assert declared_entries(tmp_path / "many.zip") is not None
    (tmp_path / "plain.bin").write_bytes(b"no zip here")
    assert declared_entries(tmp_path / "plain.bin") is None


def test_bytes_are_counted_while_inflating(tmp_path):
    archive = hostile.image_zip(tmp_path / "a.zip", {"a.bin": bytes(5000), "b.bin": bytes(5000)})
    limits = IntakeLimits()
    with zipfile.ZipFile(archive) as handle:
        budget = ByteBudget(8000, limits, "dataset_max_uncompressed_bytes")
        assert len(read_member(handle, handle.getinfo("a.bin"), budget)) == 5000
        with pytest.raises(ValueError, match=r"more than the 8,000 byte limit \(CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES\)"):
            read_member(handle, handle.getinfo("b.bin"), budget)


def test_dataset_limits_come_from_the_operator(tmp_path):
    archive = hostile.image_zip(tmp_path / "pets.zip", {f"{c}/{i}.png": hostile.png_bytes(40, 30)
                                                        for c in ("cat", "dog") for i in range(3)})
    assert inspect_dataset(archive)["samples"] == 6
    with pytest.raises(ValueError, match=r"more than the limit of 5,000 \(CONDENSE_DATASET_MAX_TOTAL_PIXELS\)"):
        inspect_dataset(archive, limits=IntakeLimits(max_total_pixels=5000))
    with pytest.raises(ValueError, match=r"limit is 1,000 pixels per image \(CONDENSE_DATASET_MAX_IMAGE_PIXELS\)"):
        inspect_dataset(archive, limits=IntakeLimits(max_image_pixels=1000))


def test_npz_arrays_are_checked_from_their_headers(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
    assert inspect_dataset(path)["samples"] == 10
    with pytest.raises(ValueError, match=r"'x' in the .npz declares 640 elements, more than the limit of 600"):
        inspect_dataset(path, limits=IntakeLimits(max_tensor_elements=600))


def test_safetensors_headers_are_checked_before_reading(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file  # the real writer, for a valid file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(10, 10)}, str(path), metadata={"format": "pt"})
    assert safetensors_header_check(path)["w"]["shape"] == [10, 10]
    with pytest.raises(ModelFormatError, match="declares 100 elements, more than the limit of 99"):
        safetensors_header_check(path, IntakeLimits(max_tensor_elements=99))
    bad = tmp_path / "meta.safetensors"
    bad.write_bytes(hostile.safetensors_bytes({"__metadata__": {"a": {"b": "c"}}}))
    with pytest.raises(ModelFormatError, match="nested JSON is refused"):
        safetensors_header_check(bad)


def test_limits_are_positive_numbers():
    with pytest.raises(ValueError, match="max_onnx_nodes must be a positive number"):
        IntakeLimits(max_onnx_nodes=0)
    assert IntakeLimits().dataset_max_zip_entries == 101_000


def test_state_dict_zips_are_checked_from_their_central_directory(tmp_path):
    torch = pytest.importorskip("torch")
    from compression_core.models import build_architecture  # only this test needs an architecture

    path = tmp_path / "sd.pt"
    torch.save(build_architecture("digits_cnn").state_dict(), path)
    assert load_model(path, architecture="digits_cnn") is not None
    with pytest.raises(ModelFormatError, match=r"more than the 0.0 MB limit \(CONDENSE_MODEL_MAX_UNPACKED_BYTES; "
                                               r"the byte limit is 1,000\)"):
        load_model(path, architecture="digits_cnn", limits=IntakeLimits(max_unpacked_bytes=1000))
