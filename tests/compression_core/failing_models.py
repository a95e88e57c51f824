"""ONNX models that fail the way real exports do: written for batch 1, run on a batch."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def reshape_onnx(batch_shape: list[int]) -> onnx.ModelProto:
    """Conv -> Reshape to a constant ``batch_shape`` -> Gemm, as an export at batch 1 writes it."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(np.array(batch_shape, dtype=np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((10, 144)).astype(np.float32), "fc.weight"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="/conv/Conv"),
        helper.make_node("Reshape", ["c", "shape"], ["r"], name="/Reshape"),
        helper.make_node("Gemm", ["r", "fc.weight"], ["output"], name="/fc/Gemm", transB=1),
    ]
    # Every input dimension named, as converters that write symbolic shapes do: shape inference cannot
    # follow the batch through the Reshape, so the importer must keep the literal and the model stays at batch 1.
    graph = helper.make_graph(nodes, "fixed_batch", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                     ["n", "c", "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def resize_onnx() -> onnx.ModelProto:
    """A Resize of a dynamic batch to constant sizes [1, 1, 16, 16]: the export's batch is written into the graph."""
    sizes = numpy_helper.from_array(np.array([1, 1, 16, 16], dtype=np.int64), "sizes")
    node = helper.make_node("Resize", ["input", "", "", "sizes"], ["output"], name="/up/Resize", mode="nearest")
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 16, 16])], [sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
