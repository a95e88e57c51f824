"""Quantization config_list keys: parsing, per-layer settings, the limits of real int8."""

import pytest
import torch
import torch.nn as nn

from compression_core.quantization import PostTrainingQuantizer, TargetSpec, parse_quant_config_list, resolve_layers
from compression_core.quantization.qconfig import int8_qconfig
from compression_core.config.quantization import parse_entry


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


def test_defaults_are_8_bit_per_channel_weights_and_unsigned_activations():
    spec = parse_entry({"op_types": ["Conv2d"]})
    assert spec.quant_types == ("input", "weight", "output")
    assert spec.targets["weight"] == TargetSpec(8, "int", "per_channel_symmetric")
    assert spec.targets["input"] == spec.targets["output"] == TargetSpec(8, "uint", "per_tensor_affine")


def test_per_type_values_and_nni3_dtype_spelling():
    spec = parse_entry({"op_types": ["Linear"], "quant_types": ["weight", "output"],
                        "quant_bits": {"weight": 4, "output": 8}, "quant_dtype": {"output": "uint8"},
                        "quant_scheme": {"weight": "per_tensor_symmetric"}})
    assert spec.targets["weight"] == TargetSpec(4, "int", "per_tensor_symmetric")
    assert spec.targets["output"] == TargetSpec(8, "uint", "per_tensor_affine")
    assert parse_entry({"op_types": ["Linear"], "quant_dtype": "int4"}).targets["input"] == \
        TargetSpec(4, "int", "per_tensor_affine")


def test_granularity_out_channel_means_per_channel_weights():
    spec = parse_entry({"op_types": ["Conv2d"], "quant_scheme": {"input": "per_tensor_symmetric"},
                        "quant_types": ["input", "weight"], "granularity": "out_channel"})
    assert spec.targets["weight"].scheme == "per_channel_symmetric"
    assert spec.targets["input"].scheme == "per_tensor_symmetric"


@pytest.mark.parametrize("entry, message", [
    ({"op_types": ["Conv2d"], "quant_scheme": "per_layer"}, "quant_scheme' for 'input' must be one of"),
    ({"op_types": ["Conv2d"], "quant_types": ["weights"]}, "unknown entry 'weights'; choose from input, weight, "
                                                           "output (did you mean 'weight'?)"),
    ({"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": {"input": 8}}, "not in quant_types"),
    ({"op_types": ["Conv2d"], "quant_bits": 0}, "integer from 1 to 32"),
    ({"op_types": ["Conv2d"], "quant_dtype": "float"}, "must be one of int, uint"),
    ({"op_types": ["Conv2d"], "quant_scheme": "per_channel_affine"}, "applies to weights only"),
    ({"op_types": ["Conv2d"], "quant_dtype": "int8", "quant_bits": 4}, "disagree"),
    ({"op_types": ["Conv2d"], "sparsity": 0.5}, "'sparsity' is a pruning key"),
    ({"op_types": ["Conv2d"], "quant_bitz": 8}, "unknown key 'quant_bitz'"),
    ({"op_types": ["Conv2d"], "granularity": "in_channel"}, "'granularity' must be one of default, out_channel"),
    ({"op_types": ["Conv2d"], "granularity": "out_channel", "quant_scheme": {"weight": "per_tensor_affine"}},
     "contradicts"),
])
def test_config_errors_name_the_key(entry, message):
    with pytest.raises(ValueError) as info:
        parse_quant_config_list([entry])
    assert message in str(info.value)
    assert "config_list[0]" in str(info.value)


def test_resolve_layers_last_entry_wins_and_exclude():
    model = _model()
    layers = resolve_layers(model, [
        {"op_types": ["Conv2d", "Linear"], "quant_bits": 8},
        {"op_names": ["4"], "quant_scheme": {"weight": "per_tensor_affine"}},
        {"op_types": ["Conv2d"], "exclude": True},
    ])
    assert sorted(layers) == ["4"]
    assert layers["4"].targets["weight"].scheme == "per_tensor_affine" and layers["4"].entry == 1
    assert sorted(resolve_layers(model, None)) == ["0", "4"]  # default: every Conv / Linear


def test_fuse_names_must_name_layers():
    with pytest.raises(ValueError, match="'conv9' is not a layer of the model"):
        PostTrainingQuantizer(_model(), [{"op_types": ["Conv2d"], "fuse_names": [["conv9", "1"]]}],
                              calibration_data=torch.rand(2, 3, 6, 6))


@pytest.mark.parametrize("entry, message", [
    ({"op_types": ["Conv2d"], "quant_bits": 4}, "quant_bits 4 for 'input' of layer '0' (Conv2d): real int8 "
                                                "conversion (PyTorch's int8 kernels) supports 8 bits only"),
    ({"op_types": ["Conv2d"], "quant_bits": {"input": 8, "weight": 4, "output": 8}}, "NaiveQuantizer"),
    ({"op_types": ["Conv2d"], "quant_dtype": {"input": "int"}}, "unsigned 8-bit activations"),
    ({"op_types": ["Conv2d"], "quant_dtype": {"weight": "uint"}}, "signed 8-bit weights"),
    ({"op_types": ["Conv2d"], "quant_types": ["weight"]}, "add 'input', 'output' to quant_types"),
    ({"op_types": ["Conv2d"], "quant_scheme": {"input": "per_tensor_symmetric"}}, "observe input and output"),
])
def test_real_int8_refuses_what_its_kernels_cannot_run(entry, message):
    with pytest.raises(ValueError) as info:
        PostTrainingQuantizer(_model(), [entry], calibration_data=torch.rand(2, 3, 6, 6))
    assert message in str(info.value)


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode must be one of static, dynamic"):
        PostTrainingQuantizer(_model(), mode="weights-only")
    with pytest.raises(ValueError, match="unknown int8 backend 'arm'"):
        PostTrainingQuantizer(_model(), backend="arm", calibration_data=torch.rand(2, 3, 6, 6))
    with pytest.raises(ValueError, match="observer must be one of"):
        PostTrainingQuantizer(_model(), observer="kl", calibration_data=torch.rand(2, 3, 6, 6))
    with pytest.raises(ValueError, match="selects no layer"):
        PostTrainingQuantizer(_model(), [{"op_types": ["Conv3d"]}], calibration_data=torch.rand(2, 3, 6, 6))


def test_int8_qconfig_follows_the_scheme():
    qconfig = int8_qconfig(parse_entry({"op_types": ["Conv2d"], "quant_scheme": {"weight": "per_tensor_affine"}}))
    weight = qconfig.weight()
    assert weight.qscheme == torch.per_tensor_affine and weight.dtype == torch.qint8
    activation = qconfig.activation()
    assert activation.dtype == torch.quint8 and (activation.quant_min, activation.quant_max) == (0, 127)
