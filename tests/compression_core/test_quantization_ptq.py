"""PostTrainingQuantizer: real int8 models (static and dynamic), float fallback, calibration export."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compression_core import TorchEvaluator
from compression_core.quantization import (
    PostTrainingConfig,
    PostTrainingQuantizer,
    export_calibration,
    serialized_bytes,
)
from compression_core.quantization.calibration import is_int8_module


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)))
        y = y + F.relu(self.conv3(y))  # a residual add
        return self.fc(torch.flatten(self.pool(y), 1))


def _mlp():
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def _cosine(a, b):
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1)).mean())


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_static_cnn_becomes_real_int8_close_to_float_and_4x_smaller(cnn, images):
    quantizer = PostTrainingQuantizer(cnn, calibration_data=images, calibration_batch_size=16)
    int8_model, calibration = quantizer.compress()
    modules = dict(int8_model.named_modules())
    assert isinstance(modules["conv1"], torch.ao.nn.intrinsic.quantized.ConvReLU2d)  # conv+bn+relu fused
    assert isinstance(modules["conv3"], torch.ao.nn.intrinsic.quantized.ConvReLU2d)
    assert isinstance(modules["fc"], torch.ao.nn.quantized.Linear)
    assert "bn1" not in modules  # folded into conv1
    report = quantizer.report
    assert sorted(report.quantized) == ["conv1", "conv2", "conv3", "fc"]
    assert not report.kept_float and report.calibration_batches == 2
    with torch.no_grad():
        assert _cosine(cnn(images), int8_model(images)) > 0.99
    assert report.float_bytes == serialized_bytes(cnn)
    assert report.compression_ratio > 3.4  # 4x on the weights, less the scales and names
    assert calibration["conv1"]["weight"]["quant_scheme"] == "per_channel_symmetric"
    assert len(calibration["conv1"]["weight"]["scale"]) == 32
    assert not any(p.is_quantized for p in cnn.state_dict().values())  # the input model is untouched


def test_static_linear_model_and_per_tensor_weights():
    torch.manual_seed(0)
    model = _mlp().eval()
    x = torch.randn(64, 256)
    quantizer = PostTrainingQuantizer(model, [{"op_types": ["Linear"],
                                               "quant_scheme": {"weight": "per_tensor_symmetric"}}],
                                      calibration_data=x, observer="minmax")
    int8_model, calibration = quantizer.compress()
    kinds = {name: type(m).__name__ for name, m in int8_model.named_modules() if is_int8_module(m)}
    assert kinds["0"] == "LinearReLU" and kinds["4"] == "Linear"
    assert isinstance(calibration["0"]["weight"]["scale"], float)  # one scale per tensor
    with torch.no_grad():
        assert _cosine(model(x), int8_model(x)) > 0.99
    assert quantizer.report.compression_ratio > 3.8


def test_dynamic_int8_for_linear_and_lstm_needs_no_data():
    torch.manual_seed(0)

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(32, 64, batch_first=True)
            self.head = nn.Linear(64, 5)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    model = Tagger().eval()
    quantizer = PostTrainingQuantizer(model, [{"op_types": ["Linear", "LSTM"]}], mode="dynamic")
    int8_model, calibration = quantizer.compress()
    assert isinstance(int8_model.head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(int8_model.lstm, torch.ao.nn.quantized.dynamic.LSTM)
    assert calibration["head"]["weight"]["quant_dtype"] == "int8"
    x = torch.randn(4, 7, 32)
    with torch.no_grad():
        assert _cosine(model(x), int8_model(x)) > 0.99


def test_dynamic_refuses_conv_unless_float_allowed(cnn):
    # Without a config list, dynamic mode selects the layers it covers.
    assert list(PostTrainingQuantizer(cnn, mode="dynamic").layers) == ["fc"]
    everything = [{"op_types": ["Conv2d", "Linear"]}]
    with pytest.raises(ValueError, match=r"'conv1' \(Conv2d\): dynamic int8 covers Linear"):
        PostTrainingQuantizer(cnn, everything, mode="dynamic")
    quantizer = PostTrainingQuantizer(cnn, everything, mode="dynamic", allow_float=True)
    int8_model, _ = quantizer.compress()
    assert list(quantizer.report.quantized) == ["fc"]
    assert set(quantizer.report.kept_float) == {"conv1", "conv2", "conv3"}


class WithCircularConv(nn.Module):
    """A circular-padding conv: PyTorch's int8 convolution supports zero padding only (fails in convert)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.wrap = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.wrap(F.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_layer_without_int8_kernel_is_named_or_kept_float(images):
    model = WithCircularConv().eval()
    with pytest.raises(ValueError) as info:
        PostTrainingQuantizer(model, calibration_data=images).compress()
    message = str(info.value)
    assert "'wrap' (Conv2d)" in message and "circular is not supported by quantized convolution" in message
    assert "allow_float=True" in message and "exclude_op_names" in message

    quantizer = PostTrainingQuantizer(model, calibration_data=images, allow_float=True)
    int8_model, _ = quantizer.compress()
    assert type(int8_model.wrap) is nn.Conv2d
    assert is_int8_module(int8_model.stem) and is_int8_module(int8_model.head)
    assert "circular" in quantizer.report.kept_float["wrap"]
    with torch.no_grad():
        assert _cosine(model(images), int8_model(images)) > 0.99


def test_layer_type_without_static_kernel_fails_before_calibration(images):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 14 * 14, 4)).eval()
    config = [{"op_types": ["Conv2d", "GroupNorm", "Linear"]}]
    with pytest.raises(ValueError, match=r"'1' \(GroupNorm\): the x86 backend has no static int8 kernel for GroupNorm"):
        PostTrainingQuantizer(model, config, calibration_data=images)
    quantizer = PostTrainingQuantizer(model, config, calibration_data=images, allow_float=True)
    quantizer.compress()
    assert sorted(quantizer.report.quantized) == ["0", "3"] and list(quantizer.report.kept_float) == ["1"]


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(16, 16)

    def forward(self, x):
        x = self.inner(x)
        return x if x.sum() > 0 else -x  # control flow on a tensor: torch.fx cannot trace it


def test_untraceable_module_is_named_or_run_in_float():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), Gate(), nn.Linear(16, 4)).eval()
    x = torch.randn(32, 16)
    with pytest.raises(ValueError, match=r"torch.fx cannot trace 1 module\(s\).*'2': TraceError"):
        PostTrainingQuantizer(model, calibration_data=x).compress()
    quantizer = PostTrainingQuantizer(model, calibration_data=x, allow_float=True)
    int8_model, calibration = quantizer.compress()
    assert sorted(quantizer.report.quantized) == ["0", "2.inner", "3"]  # the Linear inside the gate too
    assert list(quantizer.report.untraceable) == ["2"]
    assert "2.inner" in calibration and "_input_0" in calibration["2.inner"]
    with torch.no_grad():
        assert _cosine(model(x), int8_model(x)) > 0.99


def test_calibration_without_data_is_a_clear_error(cnn):
    with pytest.raises(ValueError, match="static int8 quantization measures activation ranges on data.*"
                                         "calibration_data=.*mode='dynamic'"):
        PostTrainingQuantizer(cnn)
    with pytest.raises(ValueError, match="yielded no batches"):
        PostTrainingQuantizer(cnn, calibration_data=iter([])).compress()


def test_calibration_from_dataloader_batches_and_from_an_evaluator(cnn, images):
    labels = torch.zeros(len(images), dtype=torch.long)
    batches = [(images[i:i + 8], labels[i:i + 8]) for i in range(0, 32, 8)]
    quantizer = PostTrainingQuantizer(cnn, calibration_data=batches, max_calibration_batches=3)
    quantizer.compress()
    assert quantizer.report.calibration_batches == 3

    seen = []

    def evaluating_func(model):
        seen.append(len(images))
        return float(model(images).argmax(1).eq(0).float().mean())

    evaluator = TorchEvaluator(lambda *a, **k: None, lambda p: torch.optim.SGD(p, lr=0.1),
                               lambda batch, model: model(batch[0]).sum(), dummy_input=images[:2],
                               evaluating_func=evaluating_func)
    config = PostTrainingConfig(observer="minmax")
    int8_model, _ = PostTrainingQuantizer.from_config(cnn, None, config, evaluator=evaluator).compress()
    assert seen == [32] and is_int8_module(int8_model.conv1)


def test_fuse_names_fuses_the_named_group(images):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    quantizer = PostTrainingQuantizer(model, [{"op_types": ["Conv2d"], "fuse_names": [["0", "1", "2"]]}],
                                      calibration_data=images)
    int8_model, _ = quantizer.compress()
    assert type(int8_model.get_submodule("0")).__name__ == "ConvReLU2d"
    with pytest.raises(ValueError, match="cannot be fused"):
        PostTrainingQuantizer(model, [{"op_types": ["Conv2d"], "fuse_names": [["2", "3"]]}],
                              calibration_data=images).compress()


def test_export_calibration_writes_scales_zero_points_and_bits(cnn, images, tmp_path):
    quantizer = PostTrainingQuantizer(cnn, calibration_data=images)
    int8_model, calibration = quantizer.compress()
    result = export_calibration(quantizer, tmp_path / "calibration.json")
    data = json.loads((tmp_path / "calibration.json").read_text())
    assert result["layers"] == len(data) == 4
    conv1 = data["conv1"]
    assert conv1["module_type"] == "ConvReLU2d"
    assert conv1["weight"]["quant_bits"] == 8 and conv1["weight"]["axis"] == 0
    assert all(z == 0 for z in conv1["weight"]["zero_point"])
    for key in ("_input_0", "_output_0"):
        record = conv1[key]
        assert record["quant_dtype"] == "uint8" and record["scale"] > 0
        assert record["tracked_min"] <= record["tracked_max"]
        assert (record["quant_min"], record["quant_max"]) == (0, 127)  # reduce_range on x86
    assert conv1["_input_0"]["tracked_max"] <= 1.0 + 1e-6  # the images are in [0, 1)
    assert conv1["_output_0"]["scale"] == pytest.approx(int8_model.conv1.scale)
    # A bare converted model exports its weights and output scales.
    bare = export_calibration(int8_model, tmp_path / "bare.json")
    assert bare["layers"] == 4 and "weight" in json.loads((tmp_path / "bare.json").read_text())["fc"]


def test_converted_state_dict_loads_weights_only(cnn, images, tmp_path):
    int8_model, _ = PostTrainingQuantizer(cnn, calibration_data=images).compress()
    torch.save(int8_model.state_dict(), tmp_path / "int8.pt")
    state = torch.load(tmp_path / "int8.pt", weights_only=True)
    assert state["conv1.weight"].dtype == torch.qint8
