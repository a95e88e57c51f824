"""NaiveQuantizer: weights rounded onto the int8 grid, no data, scales exported."""

import json

import pytest
import torch
import torch.nn as nn

from compression_core.quantization import NaiveQuantizer, export_calibration


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.ConvTranspose2d(16, 8, 2), nn.Flatten(),
                         nn.Linear(8 * 7 * 7, 10))


def _grid_indices(weight, scale, axis):
    shape = [1] * weight.dim()
    shape[axis] = -1
    return weight / torch.tensor(scale).reshape(shape)


def test_weights_land_on_the_int8_grid_per_channel_and_the_json_holds_the_scales(tmp_path):
    model = _model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = NaiveQuantizer(model, [{"op_types": ["Conv2d", "ConvTranspose2d", "Linear"],
                                        "quant_types": ["weight"], "quant_bits": 8}])
    same_model, calibration = quantizer.compress()
    assert same_model is model and type(model[0]) is nn.Conv2d  # structure and dtype kept
    for name, axis in (("0", 0), ("2", 1), ("4", 0)):
        weight = model.get_submodule(name).weight.detach()
        record = calibration[name]["weight"]
        assert record["quant_bits"] == 8 and record["quant_scheme"] == "per_channel_symmetric"
        assert record["axis"] == axis and len(record["scale"]) == weight.shape[axis]
        q = _grid_indices(weight, record["scale"], axis)
        assert torch.allclose(q, q.round(), atol=1e-3) and q.abs().max() <= 127 + 1e-3
        for channel in weight.transpose(0, axis).reshape(weight.shape[axis], -1):
            assert channel.unique().numel() <= 256
        before = original[f"{name}.weight"]
        step = torch.tensor(record["scale"]).max()
        assert (weight - before).abs().max() <= step / 2 + 1e-6  # round to nearest
    assert torch.equal(model[0].bias, original["0.bias"])  # biases untouched
    export_calibration(quantizer, tmp_path / "naive.json")
    data = json.loads((tmp_path / "naive.json").read_text())
    assert data["0"]["weight"]["scale"] == pytest.approx(calibration["0"]["weight"]["scale"])


def test_nni_per_tensor_scheme_and_other_widths_are_simulated():
    model = _model()
    _, calibration = NaiveQuantizer(model, [{"op_types": ["Linear"], "quant_bits": 4,
                                             "quant_scheme": "per_tensor_symmetric"}]).compress()
    record = calibration["4"]["weight"]
    assert isinstance(record["scale"], float) and (record["quant_min"], record["quant_max"]) == (-7, 7)
    assert model[4].weight.unique().numel() <= 15
    assert record["scale"] == pytest.approx(float(model[4].weight.detach().abs().max()) / 7, rel=1e-5)


@pytest.mark.parametrize("entry, message", [
    ({"op_types": ["Conv2d"], "quant_types": ["weight", "output"]}, "quantizes weights only"),
    ({"op_types": ["Conv2d"], "quant_bits": 16}, "quant_bits from 2 to 8"),
    ({"op_types": ["ReLU"]}, "has no float weight"),
])
def test_naive_errors(entry, message):
    with pytest.raises(ValueError, match=message):
        NaiveQuantizer(_model(), [entry])
