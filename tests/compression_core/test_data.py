"""Uploaded datasets: .npz and zipped image folders, inspection, splits and fitting to the model."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from compression_core.data import (
    DatasetSource,
    check_input_fit,
    detect_dataset_format,
    fit_inputs,
    inspect_dataset,
    split_indices,
)
from compression_core.data import load_builtin_dataset


def _png(color, size=(10, 12), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def _zip(path, files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


@pytest.fixture
def pets_zip(tmp_path):
    """Labelled: 6 white cats (RGB png / jpg), 4 black dogs (grey, other sizes), in a wrapping folder, with junk."""
    files = {f"pets/cat/{i}.png": _png((255, 255, 255)) for i in range(4)}
    files.update({f"pets/cat/{i}.JPG": _png((255, 255, 255), fmt="JPEG") for i in range(4, 6)})
    files.update({f"pets/dog/{i}.bmp": _png(0, size=(20 + i, 16), mode="L", fmt="BMP") for i in range(4)})
    files.update({"__MACOSX/pets/cat/._0.png": b"resource fork", "pets/.DS_Store": b"\0\0", "pets/README.txt": b"hi"})
    return _zip(tmp_path / "pets.zip", files)


@pytest.fixture
def labelled_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8), y=np.arange(50) % 5)
    return path


# -- inspection ----------------------------------------------------------------------------


def test_npz_summary_reads_layout_and_classes(labelled_npz):
    summary = inspect_dataset(labelled_npz)
    assert summary["format"] == "npz" and summary["samples"] == 50
    assert summary["sample_shape"] == [3, 8, 8] and summary["layout"] == "NHWC" and summary["dtype"] == "uint8"
    assert summary["labelled"] is True and summary["num_classes"] == 5
    assert summary["classes"] == [{"name": str(c), "count": 10} for c in range(5)]
    assert (summary["input_array"], summary["label_array"]) == ("x", "y")


@pytest.mark.parametrize(
    "arrays, sample_shape, labelled",
    [
        ({"inputs": np.zeros((7, 64), np.float32), "labels": np.zeros(7, np.int32)}, [64], True),
        ({"images": np.zeros((7, 28, 28), np.uint8)}, [1, 28, 28], False),
        ({"X": np.zeros((7, 1, 8, 8), np.float64), "targets": np.ones((7, 1))}, [1, 8, 8], True),
        ({"data": np.zeros((7, 3, 4, 4), np.float16), "Y": np.array([True, False] * 3 + [True])}, [3, 4, 4], True),
    ],
)
def test_npz_accepts_common_array_names_and_layouts(tmp_path, arrays, sample_shape, labelled):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    summary = inspect_dataset(path)
    assert summary["samples"] == 7 and summary["sample_shape"] == sample_shape and summary["labelled"] is labelled


def test_image_zip_summary_looks_through_the_wrapping_folder(pets_zip):
    assert detect_dataset_format(pets_zip) == "image_zip"
    summary = inspect_dataset(pets_zip)
    assert summary["format"] == "image_zip" and summary["samples"] == 10
    assert summary["labelled"] is True and summary["num_classes"] == 2
    assert summary["classes"] == [{"name": "cat", "count": 6}, {"name": "dog", "count": 4}]
    assert summary["sample_shape"] == [3, 12, 10]  # any colour image makes it RGB; the most common size
    assert summary["image_sizes"]["distinct"] == 5
    assert summary["ignored_files"] == 1  # README.txt; __MACOSX and dotfiles are not even counted


def test_image_zip_without_folders_is_unlabelled(tmp_path):
    path = _zip(tmp_path / "u.zip", {f"img{i}.gif": _png(128, mode="L", fmt="GIF") for i in range(3)})
    summary = inspect_dataset(path)
    assert summary["labelled"] is False and summary["classes"] == [] and summary["sample_shape"] == [1, 12, 10]
    x, y = DatasetSource(path=str(path)).load([1, 6, 6], split="all")
    assert x.shape == (3, 1, 6, 6) and y is None


def test_webp_and_palette_images_are_read(tmp_path):
    palette = Image.new("P", (8, 8))
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    path = _zip(tmp_path / "w.zip", {"a/1.webp": _png((0, 255, 0), fmt="WEBP"), "b/2.png": buffer.getvalue()})
    assert inspect_dataset(path)["samples"] == 2


# -- bad files: one clear ValueError each -------------------------------------------------------


def _pickled_npz(path):
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))


def _truncated_png(path):
    _zip(path, {"cat/ok.png": _png(255), "cat/cut.png": _png(255)[:40], "dog/ok.png": _png(0)})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _zip(p, {}), "the zip holds no images: it is empty"),
        (lambda p: _zip(p, {"notes/a.txt": b"hello", "b.csv": b"1,2"}), "holds no images"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4), "not a readable zip archive"),
        (lambda p: p.write_bytes(b"just some text, not a dataset"), "neither a .npz archive nor a .zip"),
        (lambda p: np.save(p, np.zeros(3)), "single .npy array"),
        (lambda p: np.savez(p, z=np.zeros((3, 2))), "no input array: it holds 'z'"),
        (lambda p: np.savez(p, x=np.zeros((3, 2)), y=np.zeros(4, np.int64)), "3 inputs but 4 labels"),
        (lambda p: np.savez(p, x=np.zeros((3, 2)), y=np.array([0.0, 1.5, 2.0])), "whole class numbers"),
        (lambda p: np.savez(p, x=np.zeros((3, 2)), y=np.array([0, -1, 2])), "from 0 up"),
        (lambda p: np.savez(p, x=np.zeros((3, 2), np.int64)), "save them as float32"),
        (lambda p: np.savez(p, x=np.zeros(3)), "need a sample dimension"),
        (_pickled_npz, "does not unpickle"),
        (lambda p: _zip(p, {"cat/a.png": _png(1), "cat/b.png": b"not an image at all"}), "'cat/b.png' cannot be read"),
        (_truncated_png, "'cat/cut.png' cannot be read"),
        (lambda p: _zip(p, {"cat/a.png": _png(1), "loose.png": _png(2)}), "'loose.png'"),
    ],
)
def test_bad_dataset_files_are_refused_with_a_message(tmp_path, make, message):
    path = tmp_path / "upload.bin"
    make(path)
    if not path.exists():  # np.save / np.savez add a suffix
        path = next(tmp_path.glob("upload.bin.*"))
    with pytest.raises(ValueError) as error:
        inspect_dataset(path)
    assert message in str(error.value)


def test_corrupt_npz_member_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(400, dtype=np.float32).reshape(100, 4))
    data = bytearray(path.read_bytes())
    data[300] ^= 0xFF  # inside the stored array: the checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        inspect_dataset(path)


def test_zip_bombs_are_stopped_by_the_caps(tmp_path):
    images = _zip(tmp_path / "many.zip", {f"c/{i}.png": _png(i, mode="L") for i in range(5)})
    with pytest.raises(ValueError, match="holds 5 images; the limit is 3"):
        inspect_dataset(images, max_images=3)
    # 50 MB of zeros compress to ~50 kB: refused from the archive's directory, before anything is unpacked.
    bomb = _zip(tmp_path / "bomb.zip", {"c/huge.png": bytes(50_000_000)})
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"unpack to 50.0 MB, more than the 10.0 MB limit"):
        inspect_dataset(bomb, max_uncompressed_bytes=10_000_000)
    npz = tmp_path / "big.npz"
    np.savez_compressed(npz, x=np.zeros((1000, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="unpack to 49.2 MB, more than the 10.0 MB limit"):
        inspect_dataset(npz, max_uncompressed_bytes=10_000_000)
    with pytest.raises(ValueError, match="unpack to"):
        DatasetSource(path=str(npz), max_uncompressed_bytes=10_000_000).load([3, 64, 64])


def test_huge_image_dimensions_are_refused_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, "PNG")
    path = _zip(tmp_path / "wide.zip", {"c/wide.png": buffer.getvalue()})
    with pytest.raises(ValueError, match="'c/wide.png' is 5000 x 4000 pixels"):
        inspect_dataset(path)


# -- loading: splits, resizing, channels ----------------------------------------------------


def test_npz_split_is_seeded_disjoint_and_complete(labelled_npz):
    source = DatasetSource(path=str(labelled_npz), val_fraction=0.2, seed=3)
    x_test, y_test = source.load([3, 8, 8], split="test")
    x_train, y_train = source.load([3, 8, 8], split="train")
    x_all, y_all = source.load([3, 8, 8], split="all")
    assert x_test.shape == (10, 3, 8, 8) and x_train.shape == (40, 3, 8, 8) and x_all.shape == (50, 3, 8, 8)
    assert x_all.dtype == torch.float32 and y_all.dtype == torch.int64
    assert 0.0 <= float(x_all.min()) and float(x_all.max()) <= 1.0  # uint8 scaled
    raw = np.load(labelled_npz)["x"].transpose(0, 3, 1, 2) / 255.0
    test_rows = split_indices(50, "test", 0.2, seed=3)
    assert torch.allclose(x_test, torch.tensor(raw[test_rows], dtype=torch.float32))
    assert set(test_rows) | set(split_indices(50, "train", 0.2, seed=3)) == set(range(50))
    assert torch.equal(source.load([3, 8, 8], split="test")[1], y_test)  # same split every time
    other_seed, _ = DatasetSource(path=str(labelled_npz), seed=4).load([3, 8, 8])
    assert not torch.equal(other_seed, x_test)


def test_images_are_resized_and_converted_to_the_models_channels(pets_zip):
    source = DatasetSource(path=str(pets_zip))
    grey, labels = source.load([1, 8, 8], split="all")
    assert grey.shape == (10, 1, 8, 8) and labels.tolist() == [0] * 6 + [1] * 4
    # cats are white, dogs black: the labels follow the class folders
    assert torch.allclose(grey[labels == 0], torch.ones(1), atol=0.02)
    assert torch.allclose(grey[labels == 1], torch.zeros(1), atol=0.02)
    rgb, _ = source.load([3, 32, 24], split="all")
    assert rgb.shape == (10, 3, 32, 24)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])


def test_rgb_to_grey_uses_luma_and_grey_to_rgb_repeats():
    red = torch.zeros(2, 3, 4, 4)
    red[:, 0] = 1.0
    assert torch.allclose(fit_inputs(red, [1, 4, 4]), torch.full((2, 1, 4, 4), 0.299))
    grey = torch.rand(2, 1, 4, 4)
    rgb = fit_inputs(grey, [3, 8, 8])
    assert rgb.shape == (2, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 2])
    rgba = torch.rand(2, 4, 4, 4)
    assert torch.equal(fit_inputs(rgba, [3, 4, 4]), rgba[:, :3])
    assert fit_inputs(torch.rand(2, 64), [1, 8, 8]).shape == (2, 1, 8, 8)  # same number of values: reshaped


def test_float_npz_values_are_kept_and_features_reshaped(tmp_path):
    path = tmp_path / "f.npz"
    x = np.random.default_rng(1).normal(size=(10, 64)).astype(np.float32) * 5
    np.savez(path, x=x, y=np.zeros(10, np.int64))
    inputs, labels = DatasetSource(path=str(path)).load([1, 8, 8], split="all")
    assert torch.allclose(inputs.reshape(10, 64), torch.from_numpy(x))
    assert labels.tolist() == [0] * 10


def test_shapes_that_cannot_be_adapted_name_both(tmp_path):
    with pytest.raises(ValueError, match=r"samples have shape \[10\], but the model takes \[1, 8, 8\]"):
        check_input_fit([10], [1, 8, 8])
    with pytest.raises(ValueError, match=r"\[5, 8, 8\], but the model takes \[3, 8, 8\]"):
        check_input_fit([5, 8, 8], [3, 8, 8])
    check_input_fit([3, 32, 32], [1, 8, 8])  # images: resized and made grey
    path = tmp_path / "f.npz"
    np.savez(path, x=np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match=r"\[10\], but the model takes \[1, 8, 8\]"):
        DatasetSource(path=str(path)).load([1, 8, 8])


def test_images_need_an_image_model(pets_zip):
    with pytest.raises(ValueError, match=r"holds images, but the model takes \[64\]"):
        DatasetSource(path=str(pets_zip)).check_fits([64])


# -- the source object in recipes --------------------------------------------------------------


def test_source_from_a_recipe_value(labelled_npz):
    assert DatasetSource.from_recipe(None) is None and DatasetSource.from_recipe("") is None
    builtin = DatasetSource.from_recipe("digits")
    x, y = builtin.load([1, 8, 8], split="test")
    expected_x, expected_y = load_builtin_dataset("digits", "test")
    assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    with pytest.raises(ValueError, match=r"dataset 'digits' gives inputs of shape \[1, 8, 8\]"):
        builtin.check_fits([3, 32, 32])
    source = DatasetSource.from_recipe({"path": str(labelled_npz), "val_fraction": 0.5})
    assert source.load([3, 8, 8])[0].shape[0] == 25
    for bad, message in [
        ("imagenet", "unknown dataset 'imagenet'"),
        ({"path": str(labelled_npz), "shuffle": True}, "unknown key 'shuffle'"),
        ({"path": str(labelled_npz), "val_fraction": 1.0}, "val_fraction"),
        ({"path": str(labelled_npz), "format": "csv"}, "format"),
        ({"val_fraction": 0.3}, "needs either a built-in dataset name or a file path"),
        (3, "built-in name or an object"),
    ]:
        with pytest.raises(ValueError, match=message):
            DatasetSource.from_recipe(bad)
    with pytest.raises(ValueError, match="split"):
        source.load([3, 8, 8], split="validation")
    with pytest.raises(ValueError, match="does not exist"):
        DatasetSource(path=str(labelled_npz.with_name("gone.npz"))).load([3, 8, 8])


def test_pipeline_and_command_line_run_on_an_uploaded_npz(tmp_path):
    from compression_core.__main__ import main
    from compression_core.jobs import ModelSource, Recipe, run_job

    x, y = load_builtin_dataset("digits", "all")
    path = tmp_path / "digits.npz"
    # N x H x W x 1 uint8: another layout and scale than the model's, adapted on load
    np.savez(path, x=(x[:200].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), y=y[:200].numpy())
    recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                    params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
                    dataset={"path": str(path), "val_fraction": 0.25}, output_dir=str(tmp_path / "out"),
                    latency_runs=2)
    result = run_job(recipe)
    for stage in ("before", "after"):
        assert 0.0 <= result.metrics[stage]["accuracy"] <= 1.0
    assert json.loads(json.dumps(recipe.to_dict()))["dataset"]["path"] == str(path)

    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps({**recipe.to_dict(), "output_dir": str(tmp_path / "cli")}))
    assert main(["run", str(recipe_file)]) == 0
    assert (tmp_path / "cli" / "model.onnx").exists()
