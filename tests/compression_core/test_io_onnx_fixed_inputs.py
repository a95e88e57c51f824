"""load_model(..., fixed_inputs=...): an input's value fixed at import folds the If nodes it decides."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from onnx import GraphProto, TensorProto, helper, numpy_helper

from compression_core.io import ModelFormatError, load_model, onnx_session, save_model, verify_onnx_conversion
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

CHANNELS, LENGTH, CLASSES = 8, 16, 3


def _branch(tag: str, seed: int) -> GraphProto:
    """Conv1d(1 -> 8, k3) -> Relu -> flatten -> Gemm(8*16 -> 3), its own weights."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((CHANNELS, 1, 3)).astype(np.float32), f"{tag}_conv_w"),
        numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32), f"{tag}_conv_b"),
        numpy_helper.from_array(rng.standard_normal((CLASSES, CHANNELS * LENGTH)).astype(np.float32) * 0.1,
                                f"{tag}_fc_w"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32), f"{tag}_fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["audio", f"{tag}_conv_w", f"{tag}_conv_b"], [f"{tag}_conv"], name=f"{tag}_conv",
                         pads=[1, 1]),
        helper.make_node("Relu", [f"{tag}_conv"], [f"{tag}_relu"], name=f"{tag}_relu"),
        helper.make_node("Flatten", [f"{tag}_relu"], [f"{tag}_flat"], name=f"{tag}_flat"),
        helper.make_node("Gemm", [f"{tag}_flat", f"{tag}_fc_w", f"{tag}_fc_b"], [f"{tag}_out"], name=f"{tag}_fc",
                         transB=1),
    ]
    out = helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, ["N", CLASSES])
    return helper.make_graph(nodes, tag, [], [out], weights)


@pytest.fixture(scope="module")
def sample_rate_model(tmp_path_factory):
    """audio (N, 1, 16) float and a scalar int64 ``sr``; ``If(Equal(sr, 16000))`` picks one of two networks."""
    nodes = [
        helper.make_node("Equal", ["sr", "sixteen_k"], ["is_16k"], name="is_16k"),
        helper.make_node("If", ["is_16k"], ["logits"], name="sample_rate_check",
                         then_branch=_branch("k16", 1), else_branch=_branch("k8", 2)),
    ]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 1, LENGTH]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("fixed-inputs") / "vad.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _audio(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 1, LENGTH)).astype(np.float32)


def _load(path, **fixed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = load_model(path, fixed_inputs=fixed)
    return module, [str(w.message) for w in caught]


@pytest.mark.parametrize("sr", [16000, 8000])
def test_fixed_sample_rate_folds_the_if_and_matches_onnxruntime(sample_rate_model, sr):
    module, messages = _load(sample_rate_model, sr=sr)
    assert module.condense_fixed_inputs["sr"].dtype == np.int64
    assert int(module.condense_fixed_inputs["sr"]) == sr
    assert any("'sr'" in m and "no longer takes it" in m for m in messages)
    assert any("sample_rate_check" in m and ("then_branch" if sr == 16000 else "else_branch") in m for m in messages)
    assert module.condense_input_shapes == [[None, 1, LENGTH]]
    audio = _audio()
    expected = onnx_session(sample_rate_model).run(None, {"audio": audio, "sr": np.array(sr, np.int64)})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert verify_onnx_conversion(sample_rate_model, module, atol=1e-4, inputs=[audio]) < 1e-4
    assert verify_onnx_conversion(sample_rate_model, module, atol=1e-4, batch_size=3) < 1e-4  # random feeds


def test_fixed_input_model_prunes_and_exports(sample_rate_model, tmp_path):
    module, _ = _load(sample_rate_model, sr=16000)
    args = (torch.from_numpy(_audio(1)),)
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [CHANNELS]  # the 8 kHz network is gone
    config = auto_set_dependency_group_ids(module, [{"op_types": ["Conv1d"], "sparse_ratio": 0.5}], args)
    pruner = L1NormPruner(module, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(module, args, masks).speedup_model()
    assert [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv1d)] == [CHANNELS // 2]
    target = tmp_path / "pruned.onnx"
    save_model(module, target, example_inputs=args)
    session = onnx_session(target)
    assert len(session.get_inputs()) == 1  # audio only: sr stayed fixed
    assert session.run(None, {session.get_inputs()[0].name: _audio(2)})[0].shape == (2, CLASSES)


def test_without_the_option_the_if_is_refused_naming_sr(sample_rate_model):
    with pytest.raises(ModelFormatError) as caught:
        load_model(sample_rate_model)
    message = str(caught.value)
    assert "'sr'" in message and "fixed_inputs={'sr': <value>}" in message
    assert "Traceback" not in message and "\n" not in message


def test_unknown_input_name_is_refused(sample_rate_model):
    with pytest.raises(ValueError, match=r"fixed_inputs names 'rate', which vad.onnx does not take as an input "
                                         r"\(its inputs: 'audio', 'sr'\)"):
        load_model(sample_rate_model, fixed_inputs={"rate": 16000})


@pytest.mark.parametrize("value, why", [
    (16000.5, "is not a value of the int64 input 'sr'"),
    ("16k", "is not a value of the int64 input 'sr'"),
    ([16000], r"has shape \[1\] but input 'sr' of vad.onnx is declared with shape \[\]"),
])
def test_value_that_does_not_fit_the_input_is_refused(sample_rate_model, value, why):
    with pytest.raises(ValueError, match=why):
        load_model(sample_rate_model, fixed_inputs={"sr": value})


def test_data_dependent_if_stays_refused_without_suggesting_the_option(tmp_path):
    """An If on a float input's values is decided by the data: no option can fold it."""
    branch = lambda tag, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x"], [f"{tag}_y"])], tag, [],
        [helper.make_tensor_value_info(f"{tag}_y", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
         helper.make_node("Greater", ["total", "zero"], ["positive"]),
         helper.make_node("If", ["positive"], ["y"], then_branch=branch("a", "Relu"), else_branch=branch("b", "Neg"))],
        "data_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    path = tmp_path / "data_if.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFormatError, match="from the data of input 'x', which is decided only at run") as caught:
        load_model(path)
    assert "fixed_inputs" not in str(caught.value)


@pytest.fixture(scope="module")
def length_check_model(tmp_path_factory):
    """audio (N, L): ``If(Shape(audio)[-1] == 4)`` picks a Gemm (4 -> 3) or a mean over time."""
    weight = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("Gemm", ["audio", "gemm_w"], ["projected"], name="project", transB=1)], "window", [],
        [helper.make_tensor_value_info("projected", TensorProto.FLOAT, ["N", 3])])
    else_branch = helper.make_graph(
        [helper.make_node("ReduceMean", ["audio"], ["mean"], name="mean", axes=[1], keepdims=1)], "other", [],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 1])])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["audio"], ["audio_shape"], name="shape"),
         helper.make_node("Gather", ["audio_shape", "last"], ["length"], name="length", axis=0),
         helper.make_node("Equal", ["length", "four"], ["is_window"], name="is_window"),
         helper.make_node("If", ["is_window"], ["y"], name="window_check", then_branch=then_branch,
                          else_branch=else_branch)],
        "length_check", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])],
        [numpy_helper.from_array(np.array(-1, np.int64), "last"),
         numpy_helper.from_array(np.array(4, np.int64), "four"), numpy_helper.from_array(weight, "gemm_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("input-shapes") / "window.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_an_if_on_a_sequence_length_folds_once_the_shape_is_fixed(length_check_model):
    refusal = r"the shape of input 'audio', whose dynamic sizes you can fix at import with load_model\(\.\.\., "
    with pytest.raises(ModelFormatError, match=refusal + r"input_shapes=\{'audio': \[None, <size>\]\}\)"):
        load_model(length_check_model)
    with pytest.warns(UserWarning, match="'window_check' always takes its then_branch"):
        module = load_model(length_check_model, input_shapes={"audio": [None, 4]})
    assert module.condense_input_shapes == [[None, 4]]
    audio = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    assert verify_onnx_conversion(length_check_model, module, atol=1e-4, inputs=[audio]) < 1e-4


@pytest.mark.parametrize("shape", [[None, 4, 1], [None, 0]])
def test_input_shape_that_does_not_fit_is_refused(length_check_model, shape):
    with pytest.raises(ValueError, match=r"input_shapes\['audio'\] = .* does not fit input 'audio' of window.onnx, "
                                         r"declared with shape \[\?, \?\]"):
        load_model(length_check_model, input_shapes={"audio": shape})
    with pytest.raises(ValueError, match="input_shapes names 'x', which window.onnx does not take as an input"):
        load_model(length_check_model, input_shapes={"x": [None, 4]})


def test_a_state_input_keeps_its_batch_axis_through_export(tmp_path):
    """A recurrent state ``[2, N, 4]`` beside ``x [N, 4]`` (silero-vad's ``state``): the export takes any N."""
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "zero_axis"], ["x_1"], name="lift"),
         helper.make_node("Add", ["state", "x_1"], ["state_out"], name="update"),
         helper.make_node("Gemm", ["x", "w"], ["y"], name="head", transB=1)],
        "stateful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "N", 4])],
        [numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
         numpy_helper.from_array(np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "stateful.onnx"
    path.write_bytes(model.SerializeToString())
    module = load_model(path)
    target = tmp_path / "again.onnx"
    save_model(module, target, example_inputs=(torch.randn(1, 4), torch.zeros(2, 1, 4)))
    x, state = np.ones((3, 4), np.float32), np.zeros((2, 3, 4), np.float32)
    y, state_out = onnx_session(target).run(None, {"input_0": x, "input_1": state})
    assert y.shape == (3, 3) and state_out.shape == (2, 3, 4)
