"""Weights in and out: safetensors, weights-only state_dicts, refusal of pickles, pruning plans."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compression_core.models import DigitsCNN, build_architecture
from compression_core.io import (
    PICKLE_REFUSED_MESSAGE,
    ModelFormatError,
    detect_format,
    load_model,
    save_model,
    state_dict_bytes,
)


def _seeded(name: str, num_classes=None, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_architecture(name, num_classes)
        with torch.no_grad():  # non-default BN statistics, so they must be loaded too
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_outputs(a: nn.Module, b: nn.Module, shape) -> None:
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


@pytest.mark.parametrize("name, shape", [("digits_cnn", (1, 8, 8)), ("resnet18", (3, 64, 64))])
def test_safetensors_round_trip(tmp_path, name, shape):
    model = _seeded(name)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert detect_format(path) == "safetensors"
    loaded = load_model(path, architecture=name)
    assert type(loaded) is type(model) and not loaded.training
    _same_outputs(model, loaded, shape)


@pytest.mark.parametrize("name, shape", [("digits_cnn", (1, 8, 8)), ("resnet18", (3, 64, 64))])
def test_weights_only_state_dict_round_trip(tmp_path, name, shape):
    model = _seeded(name)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    assert detect_format(path) == "torch_zip"
    loaded = load_model(path, architecture=name)
    _same_outputs(model, loaded, shape)


def test_checkpoint_dict_and_dataparallel_prefix(tmp_path):
    model = _seeded("digits_cnn")
    path = tmp_path / "checkpoint.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 7, "state_dict": state, "best_acc": 0.98}, path)
    _same_outputs(model, load_model(path, architecture="digits_cnn"), (1, 8, 8))


def test_legacy_torch_save_state_dict(tmp_path):
    model = _seeded("digits_cnn")
    path = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "pickle"
    _same_outputs(model, load_model(path, architecture="digits_cnn"), (1, 8, 8))


def test_num_classes_inferred_and_explicit(tmp_path):
    model = _seeded("resnet18", num_classes=10)
    path = tmp_path / "r18_10.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert load_model(path, architecture="resnet18").fc.out_features == 10
    assert load_model(path, architecture="resnet18", num_classes=10).fc.out_features == 10
    with pytest.raises(ModelFormatError, match=r"fc.weight \(file \[10, 512\] vs model \[1000, 512\]\)"):
        load_model(path, architecture="resnet18", num_classes=1000)


def test_wrong_architecture_lists_keys(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(_seeded("resnet18").state_dict(), path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path, architecture="digits_cnn")
    message = str(info.value)
    assert "do not match architecture 'digits_cnn'" in message
    assert "missing keys (12): conv1.bias, conv2.weight" in message
    assert "unexpected keys (116): layer1.0.conv1.weight" in message
    assert "(+111 more)" in message
    assert "conv1.weight (file [64, 3, 7, 7] vs model [16, 1, 3, 3])" in message

    digits = tmp_path / "digits.safetensors"
    save_model(_seeded("digits_cnn"), digits)
    with pytest.raises(ModelFormatError, match=r"shape mismatches \(15\): conv1.weight \(file \[16, 1, 3, 3\]"):
        load_model(digits, architecture="mnist_cnn")


def test_state_dict_needs_an_architecture(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_seeded("digits_cnn").state_dict(), path)
    with pytest.raises(ModelFormatError, match=r"holds only weights.*digits_cnn.*resnet18"):
        load_model(path)
    with pytest.raises(ModelFormatError, match="Unknown architecture 'lenet'"):
        load_model(path, architecture="lenet")


def test_non_state_dict_content(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(ModelFormatError, match="holds a Tensor, not a state_dict"):
        load_model(path, architecture="digits_cnn")


def test_whole_model_pickle_is_refused(tmp_path):
    model = _seeded("digits_cnn")
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path, architecture="digits_cnn")
    assert str(info.value) == PICKLE_REFUSED_MESSAGE
    assert str(info.value).startswith("This file is a Python pickle (torch.save of a whole model); pickles can run")
    legacy = tmp_path / "model_legacy.pt"
    torch.save(model, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFormatError, match=r"This file is a Python pickle \(torch.save of a whole model\)"):
        load_model(legacy)
    # trusted mode (operators only) does load it
    trusted = load_model(path, trusted=True)
    assert isinstance(trusted, DigitsCNN)
    _same_outputs(model, trusted, (1, 8, 8))


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


def test_malicious_pickle_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(1), "payload": _Evil()}, path)
    with pytest.raises(ModelFormatError, match="pickles can run arbitrary code"):
        load_model(path, architecture="digits_cnn")


def test_torchscript_is_refused(tmp_path):
    model = _seeded("digits_cnn")
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.randn(1, 1, 8, 8)), str(path))
    assert detect_format(path) == "torchscript"
    with pytest.raises(ModelFormatError, match=r"TorchScript.*pickles can run arbitrary code, so Condense does not"):
        load_model(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trusted = load_model(path, trusted=True)
    _same_outputs(model, trusted, (1, 8, 8))


def test_torch_export_archive_is_refused(tmp_path):
    model = _seeded("digits_cnn")
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 8, 8),)), str(path))
    assert detect_format(path) == "torch_export"
    with pytest.raises(ModelFormatError, match="torch.export archive"):
        load_model(path)


def test_corrupt_weight_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_model(_seeded("digits_cnn"), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFormatError, match="cut.safetensors is not a valid safetensors file"):
        load_model(cut, architecture="digits_cnn")

    zipped = tmp_path / "weights.pt"
    torch.save(_seeded("digits_cnn").state_dict(), zipped)
    raw = zipped.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFormatError, match="broken.pt is not a valid PyTorch file"):
        load_model(broken, architecture="digits_cnn")


def test_save_safetensors_with_plan_and_metadata(tmp_path):
    model = _seeded("digits_cnn")
    plan = {"architecture": "digits_cnn", "modules": {"conv1": {"out_channels": 16}}}
    result = save_model(model, tmp_path / "out" / "digits.safetensors", plan=plan)
    path = tmp_path / "out" / "digits.safetensors"
    assert result["format"] == "safetensors" and result["path"] == str(path)
    assert result["bytes"] == path.stat().st_size
    assert result["plan_path"] == str(tmp_path / "out" / "digits.plan.json")
    assert json.loads((tmp_path / "out" / "digits.plan.json").read_text()) == plan
    assert set(load_file(str(path))) == set(model.state_dict())
    # the architecture travels in the safetensors metadata
    _same_outputs(model, load_model(path), (1, 8, 8))


def test_pruned_weights_load_with_plan(tmp_path):
    model = _seeded("digits_cnn")
    keep = torch.arange(0, 16, 2)  # channel-prune conv1 to 8 output channels
    pruned = _seeded("digits_cnn")
    with torch.no_grad():
        pruned.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        pruned.conv1.weight.copy_(model.conv1.weight[keep])
        pruned.conv1.bias.copy_(model.conv1.bias[keep])
        pruned.bn1 = nn.BatchNorm2d(8).eval()
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(pruned.bn1, attr).copy_(getattr(model.bn1, attr)[keep])
        pruned.conv2 = nn.Conv2d(8, 32, 3, padding=1)
        pruned.conv2.weight.copy_(model.conv2.weight[:, keep])
        pruned.conv2.bias.copy_(model.conv2.bias)
    pruned.eval()
    path = tmp_path / "pruned.safetensors"
    save_model(pruned, path, plan={"modules": {"conv1": {}, "bn1": {}, "conv2": {}}})
    with pytest.raises(ModelFormatError, match="shape mismatches"):
        load_model(path, architecture="digits_cnn", plan=False)
    loaded = load_model(path, architecture="digits_cnn")  # finds pruned.plan.json
    assert loaded.conv1.out_channels == 8 and loaded.conv2.in_channels == 8 and loaded.bn1.num_features == 8
    _same_outputs(pruned, loaded, (1, 8, 8))
    # layers the plan does not name keep their shapes
    with pytest.raises(ModelFormatError, match="conv2.weight"):
        load_model(path, architecture="digits_cnn", plan={"modules": ["conv1", "bn1"]})


def test_save_tied_and_non_contiguous_weights(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight  # tied
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(16.0).reshape(4, 4).t())  # values from a transposed view
    result = save_model(model, tmp_path / "tied.safetensors")
    tensors = load_file(str(tmp_path / "tied.safetensors"))
    torch.testing.assert_close(tensors["0.weight"], tensors["1.weight"])
    assert result["bytes"] == state_dict_bytes(model)


def test_state_dict_bytes_matches_file(tmp_path):
    model = _seeded("resnet18")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "r.safetensors"),
              metadata={"format": "pt"})
    assert state_dict_bytes(model) == (tmp_path / "r.safetensors").stat().st_size


def test_save_model_rejects_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx, \.safetensors or \.pt"):
        save_model(_seeded("digits_cnn"), tmp_path / "model.pth")
    with pytest.raises(ValueError, match="give example_inputs"):
        save_model(_seeded("digits_cnn"), tmp_path / "model.pt")


def test_save_model_pt_writes_a_torchscript_archive_that_runs_alone(tmp_path):
    model = _seeded("digits_cnn").eval()
    x = torch.randn(2, 1, 8, 8)
    info = save_model(model, tmp_path / "model.pt", example_inputs=x)
    assert info["format"] == "torchscript" and info["max_abs_diff"] < 1e-5
    assert torch.allclose(torch.jit.load(str(tmp_path / "model.pt"))(x), model(x), atol=1e-5)
    # Being code, it loads back only in trusted mode.
    with pytest.raises(ModelFormatError):
        load_model(tmp_path / "model.pt")
    assert torch.allclose(load_model(tmp_path / "model.pt", trusted=True)(x), model(x), atol=1e-5)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_speedup_plan_round_trip(tmp_path):
    speedup = pytest.importorskip("compression_core.speedup")
    model = _seeded("digits_cnn")
    keep = (torch.arange(16) % 2 == 0).float()
    masks = {"conv1": {"weight": keep.view(-1, 1, 1, 1).repeat(1, 1, 3, 3), "bias": keep.clone()}}
    runner = speedup.ModelSpeedup(model, torch.rand(2, 1, 8, 8), masks)
    runner.speedup_model()
    assert model.conv1.out_channels == 8 and runner.plan
    path = tmp_path / "pruned.safetensors"
    result = save_model(model, path, plan=runner.plan)
    assert result["plan_path"].endswith("pruned.plan.json")
    loaded = load_model(path)  # architecture from the metadata, shapes from the plan
    assert loaded.conv1.out_channels == 8 and loaded.conv2.in_channels == 8
    _same_outputs(model, loaded, (1, 8, 8))
