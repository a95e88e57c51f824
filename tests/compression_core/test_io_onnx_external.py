"""ONNX with external data: torch.onnx.export's m.onnx + m.onnx.data, read only from inside the upload."""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto
from torch import nn

from compression_core.io import ModelFormatError, consolidate_onnx, detect_format, load_model, read_onnx
from compression_core.io.onnx import external as external_module
from compression_core.io.onnx import external_locations, unpack_onnx_zip


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)  # 10 KB of weights: the exporter moves it to the data file

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _Small().eval()


def _export_dynamo(folder: Path) -> Path:
    """torch.onnx.export with today's defaults (dynamo exporter): m.onnx plus m.onnx.data."""
    pytest.importorskip("onnxscript")
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_model(), (torch.randn(1, 1, 8, 8),), str(folder / "m.onnx"))
    return folder / "m.onnx"


def _export_torchscript_external(folder: Path) -> Path:
    """The TorchScript exporter's file, re-saved by onnx with its tensors in m.onnx.data."""
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_model(), (torch.randn(1, 1, 8, 8),), str(folder / "single.onnx"), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    proto = onnx.load(str(folder / "single.onnx"))
    onnx.save(proto, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=1024)
    (folder / "single.onnx").unlink()
    return folder / "m.onnx"


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def exported(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    path = _export_dynamo(folder) if request.param == "dynamo" else _export_torchscript_external(folder)
    assert (folder / "m.onnx.data").is_file()
    assert external_locations(onnx.load(str(path), load_external_data=False)) == ["m.onnx.data"]
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def _with_location(source: Path, target: Path, location: str) -> Path:
    """A copy of ``source`` whose external tensors point at ``location``."""
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(proto.SerializeToString())
    return target


def test_a_lone_external_data_file_is_refused_with_both_fixes(exported):
    with pytest.raises(ModelFormatError) as info:
        read_onnx(exported)
    message = str(info.value)
    assert "'m.onnx.data'" in message and ".zip" in message
    assert "external_data=False" in message and "save_as_external_data=False" in message
    with pytest.raises(ModelFormatError, match="external_data=False"):
        load_model(exported)


def test_folder_zip_and_data_dir_load_the_same_model(exported, tmp_path):
    x = torch.randn(1, 1, 8, 8)
    expected = _ort(exported, x.numpy())  # onnxruntime reads m.onnx.data beside the file itself
    archive = _zip(tmp_path / "export.zip", {"m.onnx": exported.read_bytes(),
                                             "m.onnx.data": (exported.parent / "m.onnx.data").read_bytes()})
    assert detect_format(archive) == "onnx_zip"
    for module in (load_model(exported.parent), load_model(archive),
                   load_model(exported, external_data_dir=exported.parent)):
        with torch.no_grad():
            assert np.allclose(module(x).numpy(), expected, atol=1e-5)
            assert torch.allclose(module(x), _model()(x), atol=1e-5)


def test_consolidated_file_is_self_contained_and_matches_onnxruntime(exported, tmp_path):
    single = consolidate_onnx(exported, tmp_path / "stored" / "m.onnx", external_data_dir=exported.parent)
    proto = onnx.load(str(single), load_external_data=False)
    assert not external_locations(proto)
    assert list((tmp_path / "stored").iterdir()) == [single]
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert np.allclose(_ort(single, x), _ort(exported, x), atol=1e-6)
    assert read_onnx(single).graph.initializer  # no external data left: reads alone


def test_a_zip_in_a_folder_of_its_own_works(exported, tmp_path):
    archive = _zip(tmp_path / "nested.zip", {"export/m.onnx": exported.read_bytes(),
                                             "export/m.onnx.data": (exported.parent / "m.onnx.data").read_bytes(),
                                             "__MACOSX/export/._m.onnx": b"resource fork"})
    single = consolidate_onnx(archive, tmp_path / "out" / "model.onnx")
    assert not external_locations(onnx.load(str(single), load_external_data=False))


def test_dot_dot_location_is_refused(exported, tmp_path):
    model = _with_location(exported, tmp_path / "upload" / "m.onnx", "../m.onnx.data")
    shutil.copy(exported.parent / "m.onnx.data", tmp_path / "m.onnx.data")  # it exists, outside the upload
    with pytest.raises(ModelFormatError, match=r"leaves the upload's folder \('\.\.'\)"):
        read_onnx(model, external_data_dir=model.parent)
    with pytest.raises(ModelFormatError, match=r"'\.\.'"):
        read_onnx(model, external_data=True)


def test_absolute_location_is_refused(exported, tmp_path):
    data = (exported.parent / "m.onnx.data").resolve()
    model = _with_location(exported, tmp_path / "upload" / "m.onnx", str(data))
    with pytest.raises(ModelFormatError, match="absolute path"):
        read_onnx(model, external_data_dir=model.parent)


def test_symlink_out_of_the_upload_is_refused(exported, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(exported, upload / "m.onnx")
    os.symlink((exported.parent / "m.onnx.data").resolve(), upload / "m.onnx.data")
    with pytest.raises(ModelFormatError, match="resolves outside the upload's folder"):
        read_onnx(upload / "m.onnx", external_data_dir=upload)


def test_missing_data_file_names_the_expected_location(exported, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(exported, upload / "m.onnx")
    with pytest.raises(ModelFormatError, match="expects its external data in 'm.onnx.data'"):
        load_model(upload)
    archive = _zip(tmp_path / "only-model.zip", {"m.onnx": exported.read_bytes()})
    with pytest.raises(ModelFormatError, match="expects its external data in 'm.onnx.data'"):
        load_model(archive)


def test_zip_without_exactly_one_onnx_is_refused(exported, tmp_path):
    data = (exported.parent / "m.onnx.data").read_bytes()
    two = _zip(tmp_path / "two.zip", {"a.onnx": exported.read_bytes(), "b.onnx": exported.read_bytes(),
                                      "m.onnx.data": data})
    with pytest.raises(ModelFormatError, match=r"2 \.onnx files \(a\.onnx, b\.onnx\)"):
        load_model(two)
    none = _zip(tmp_path / "none.zip", {"m.onnx.data": data})
    with pytest.raises(ModelFormatError, match=r"no \.onnx file"):
        consolidate_onnx(none, tmp_path / "out.onnx")


def test_zip_slip_entries_are_refused_and_nothing_lands_outside(exported, tmp_path):
    archive = _zip(tmp_path / "slip.zip", {"m.onnx": exported.read_bytes(), "../../evil.txt": b"owned"})
    target = tmp_path / "a" / "b" / "unpack"
    target.mkdir(parents=True)
    with pytest.raises(ModelFormatError, match="points outside the archive's folder"):
        unpack_onnx_zip(archive, target)
    assert not list(tmp_path.rglob("evil.txt"))
    absolute = _zip(tmp_path / "abs.zip", {"m.onnx": exported.read_bytes(), "/tmp/evil.txt": b"owned"})
    with pytest.raises(ModelFormatError, match="points outside"):
        unpack_onnx_zip(absolute, target)


def test_zip_symlink_entries_are_refused(exported, tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("m.onnx", exported.read_bytes())
        link = zipfile.ZipInfo("m.onnx.data")
        link.external_attr = (0o120777 << 16)
        handle.writestr(link, "/etc/passwd")
    with pytest.raises(ModelFormatError, match="symbolic link"):
        unpack_onnx_zip(archive, tmp_path / "out")


def test_zip_bombs_are_capped(exported, tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"m.onnx": exported.read_bytes(), "m.onnx.data": bytes(8 * 1024 * 1024)})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ModelFormatError, match="byte limit"):
        consolidate_onnx(bomb, tmp_path / "out.onnx", max_bytes=1024 * 1024)
    many = _zip(tmp_path / "many.zip", {"m.onnx": exported.read_bytes(), **{f"x{i}.bin": b"" for i in range(20)}})
    with pytest.raises(ModelFormatError, match="holds 21 files; the limit is 10"):
        consolidate_onnx(many, tmp_path / "out.onnx", max_entries=10)


def test_zip_bomb_with_lying_headers_is_capped_while_unpacking(exported, tmp_path):
    bomb = _zip(tmp_path / "liar.zip", {"m.onnx": exported.read_bytes(), "m.onnx.data": bytes(4 * 1024 * 1024)})
    raw = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as archive:
        info = archive.getinfo("m.onnx.data")
    # Rewrite the declared size (central directory and local header) to 1 byte.
    declared = info.file_size.to_bytes(4, "little")
    assert raw.count(declared) >= 2
    raw = raw.replace(declared, (1).to_bytes(4, "little"))
    bomb.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError):
        consolidate_onnx(bomb, tmp_path / "out.onnx", max_bytes=1024 * 1024)
    assert not (tmp_path / "out.onnx").exists()


def test_models_above_protobufs_limit_are_refused(exported, tmp_path, monkeypatch):
    # 2 GB of test data is out of reach; the limit is a number, lowered here to this model's size.
    monkeypatch.setattr(external_module, "PROTOBUF_LIMIT_BYTES", 4096)
    with pytest.raises(ModelFormatError, match="above protobuf's 2 GB limit"):
        consolidate_onnx(exported, tmp_path / "out.onnx", external_data_dir=exported.parent)


def test_a_truncated_data_file_is_refused(exported, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(exported, upload / "m.onnx")
    (upload / "m.onnx.data").write_bytes((exported.parent / "m.onnx.data").read_bytes()[:100])
    with pytest.raises(ModelFormatError, match="which holds only 100 bytes"):
        read_onnx(upload / "m.onnx", external_data_dir=upload)


def test_a_file_and_a_folder_of_one_name_in_the_zip_is_refused(exported, tmp_path):
    archive = _zip(tmp_path / "clash.zip", {"m.onnx": exported.read_bytes(), "w": b"file", "w/m.onnx.data": b"x"})
    with pytest.raises(ModelFormatError, match="a file and a folder of that name"):
        unpack_onnx_zip(archive, tmp_path / "out")
