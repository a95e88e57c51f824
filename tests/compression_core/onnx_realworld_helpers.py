"""The import -> check -> prune -> speedup -> export -> onnxruntime path that test_io_onnx_realworld.py runs."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from compression_core.io import load_model, save_model, verify_onnx_conversion
from compression_core.pruning import L1NormPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids


def export(model: nn.Module, path, sample, dynamo: bool, **kwargs):
    """``torch.onnx.export`` at the sample's (fixed) batch, one file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (sample,), str(path), dynamo=True, external_data=False, verbose=False, **kwargs)
        else:
            torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=17, **kwargs)
    return path


def run_ort(path, *arrays):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {meta.name: np.asarray(a) for meta, a in zip(session.get_inputs(), arrays)}
    return session.run(None, feed)


def round_trip(path, sample, bigger, op_types=("Conv2d", "Linear"), sparse_ratio=0.3, tmp_path=None):
    """Import ``path``, check it, prune ``op_types`` by L1 with dependency groups, speed up, export, run.

    ``sample`` is the batch the file was exported at, ``bigger`` a larger batch. Returns
    ``(graph module, parameters before, parameters after, onnxruntime output of the pruned file on bigger)``.
    """
    gm = load_model(path)
    assert verify_onnx_conversion(path, gm, atol=1e-4, inputs=[sample]) < 1e-4
    with torch.no_grad():
        expected_big = gm(bigger)  # another batch than the exported one
    assert expected_big.shape[0] == bigger.shape[0]
    before = sum(p.numel() for p in gm.parameters())
    config = auto_set_dependency_group_ids(gm, [{"op_types": list(op_types), "sparse_ratio": sparse_ratio}], sample)
    pruner = L1NormPruner(gm, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(gm, sample, masks).speedup_model()
    after = sum(p.numel() for p in gm.parameters())
    gm.eval()
    with torch.no_grad():
        pruned_big = gm(bigger)
    assert pruned_big.shape == expected_big.shape
    target = tmp_path / "pruned.onnx"
    save_model(gm, target, example_inputs=(sample,))
    (got,) = run_ort(target, bigger.numpy())[:1]
    assert got.shape == tuple(expected_big.shape)
    np.testing.assert_allclose(got, pruned_big.numpy(), atol=1e-4, rtol=1e-3)
    return gm, before, after, got
