"""onnxruntime sessions: the one way Condense opens an ONNX file to run it (CPU, quiet, no spinning threads).

Example::

    >>> session = onnx_session("model.onnx", threads=2)
    >>> [meta.name for meta in session.get_inputs()]
    ['input']
"""

from __future__ import annotations

import os

__all__ = ["onnx_session"]


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads, quiet logging).

    Example::

        >>> onnx_session("model.int8.onnx", threads=1).run(None, {"input": images})[0].shape
        (8, 10)
    """
    import onnxruntime as ort  # heavy native library: loaded when a model is run, not with compression_core.io

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # No busy-waiting after a run: spinning threads would steal the CPU from whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
