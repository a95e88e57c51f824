"""ONNX ``LSTM`` and ``GRU`` nodes as ``nn.LSTM`` / ``nn.GRU`` (onnx2torch has no converter for them).

ONNX keeps the gates of an LSTM in the order input, output, forget, cell (``iofc``)
and of a GRU update, reset, hidden (``zrh``); torch keeps ``ifgo`` and ``rzn``, so
the weight blocks are reordered. ONNX ``B`` is ``[Wb, Rb]`` (torch's ``bias_ih``,
``bias_hh``). ``Y`` is ``[seq, directions, batch, hidden]`` (``layout=1``:
``[batch, seq, directions, hidden]``), torch's output ``[seq, batch, directions *
hidden]``. A ``reverse`` layer runs forward on the time-reversed sequence.

Not converted (an unsupported-operator error names the reason): peepholes (``P``),
``sequence_lens``, ``clip``, ``input_forget``, activations other than the defaults,
and a GRU with ``linear_before_reset=0`` (torch's GRU applies the reset gate after the
recurrent product).

Pruning keeps a recurrent layer's input and hidden sizes (see the channel rule in
:mod:`compression_core.dependency.builtin_rules`).

Example::

    >>> module = load_onnx("silero_vad_v6.onnx")
    >>> [type(m).__name__ for m in module.modules() if isinstance(m, nn.LSTM)]
    ['LSTM']
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from .layers import UnsupportedOperator

__all__ = ["OnnxRecurrent", "register_recurrent"]

# torch gate block k comes from ONNX gate block _GATE_ORDER[op][k]
_GATE_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}
_GATES = {"LSTM": 4, "GRU": 3}
_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


class OnnxRecurrent(nn.Module):
    """An ONNX ``LSTM`` or ``GRU`` node: ``rnn`` is the torch layer; returns ONNX's outputs.

    ``forward(x, initial_h=None, initial_c=None)`` returns ``(Y, Y_h[, Y_c])`` (only ``Y``
    when the node has one output).
    """

    def __init__(self, rnn: nn.RNNBase, reverse: bool, layout: int, n_outputs: int):
        super().__init__()
        self.rnn = rnn
        self.reverse = reverse
        self.layout = layout
        self.n_outputs = n_outputs

    def forward(self, x: torch.Tensor, initial_h: Optional[torch.Tensor] = None,
                initial_c: Optional[torch.Tensor] = None):
        if self.layout == 1:  # [batch, seq, ...] -> [seq, batch, ...]
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        if self.reverse:
            x = torch.flip(x, [0])
        directions = 2 if self.rnn.bidirectional else 1
        # No shape is read at run time: a size read from a tensor can be exported as a literal (the traced batch).
        if isinstance(self.rnn, nn.LSTM):
            state = None
            if initial_h is not None:
                initial_c = torch.zeros_like(initial_h) if initial_c is None else initial_c
                state = (initial_h.contiguous(), initial_c.contiguous())
            y, (h, c) = self.rnn(x, state)
            states = [h, c]
        else:
            y, h = self.rnn(x, None if initial_h is None else initial_h.contiguous())
            states = [h]
        if self.reverse:
            y = torch.flip(y, [0])
        # [seq, batch, dirs * hidden] -> [seq, dirs, batch, hidden]
        y = torch.stack(y.chunk(directions, dim=2), dim=1) if directions > 1 else y.unsqueeze(1)
        if self.layout == 1:
            y = y.permute(2, 0, 1, 3)
            states = [s.transpose(0, 1) for s in states]
        if self.n_outputs == 1:
            return y
        return tuple([y, *states][: self.n_outputs])


def _reordered(tensor: torch.Tensor, op: str) -> torch.Tensor:
    blocks = tensor.chunk(_GATES[op], dim=0)
    return torch.cat([blocks[k] for k in _GATE_ORDER[op]], dim=0)


def _unsupported(op: str, what: str) -> UnsupportedOperator:
    return UnsupportedOperator(f"{op} with {what} is not supported")


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unless_zero(name: str, graph) -> str:
    """``name``, or ``""`` for a constant all-zero state (exporters write one at the traced batch)."""
    if name and name in graph.initializers and not graph.initializers[name].to_torch().any():
        return ""
    return name


def _convert(node, graph):
    op = node.operation_type
    attrs = node.attributes
    inputs: List[str] = list(node.input_values) + [""] * 8
    x_name, w_name, r_name, b_name, lens_name, h_name = inputs[:6]
    c_name, p_name = (inputs[6], inputs[7]) if op == "LSTM" else ("", "")
    if w_name not in graph.initializers or r_name not in graph.initializers or \
            (b_name and b_name not in graph.initializers):
        raise _unsupported(op, "weights computed at run time")
    if lens_name:
        raise _unsupported(op, "sequence_lens")
    if p_name:
        raise _unsupported(op, "peepholes (P)")
    if attrs.get("clip") is not None or int(attrs.get("input_forget", 0)):
        raise _unsupported(op, "clip or input_forget")
    activations = [_as_str(a).lower() for a in attrs.get("activations", [])]
    if activations and activations != _DEFAULT_ACTIVATIONS[op] * (len(activations) // len(_DEFAULT_ACTIVATIONS[op])):
        raise _unsupported(op, f"activations {activations}")
    if op == "GRU" and int(attrs.get("linear_before_reset", 0)) != 1:
        raise _unsupported(op, "linear_before_reset=0")
    direction = _as_str(attrs.get("direction", "forward"))
    weight = graph.initializers[w_name].to_torch()  # [dirs, gates*hidden, input]
    recurrent = graph.initializers[r_name].to_torch()  # [dirs, gates*hidden, hidden]
    directions, rows, input_size = weight.shape
    hidden = int(attrs.get("hidden_size", recurrent.shape[-1]))
    bias = graph.initializers[b_name].to_torch() if b_name else torch.zeros(directions, 2 * rows, dtype=weight.dtype)
    layer = (nn.LSTM if op == "LSTM" else nn.GRU)(
        input_size, hidden, bidirectional=direction == "bidirectional", dtype=weight.dtype
    )
    with torch.no_grad():
        for d in range(directions):
            suffix = "_l0_reverse" if d == 1 else "_l0"
            getattr(layer, "weight_ih" + suffix).copy_(_reordered(weight[d], op))
            getattr(layer, "weight_hh" + suffix).copy_(_reordered(recurrent[d], op))
            getattr(layer, "bias_ih" + suffix).copy_(_reordered(bias[d, :rows], op))
            getattr(layer, "bias_hh" + suffix).copy_(_reordered(bias[d, rows:], op))
    states = [_unless_zero(name, graph) for name in (h_name, c_name)]
    if states[1] and not states[0]:
        states[0] = h_name
    if states[1] and not states[0]:
        raise _unsupported(op, "an initial cell state but no initial hidden state")
    mapped = [x_name] + [name for name in states if name]
    module = OnnxRecurrent(layer, direction == "reverse", int(attrs.get("layout", 0)), len(node.output_values))
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=tuple(mapped), outputs=node.output_values)
    )


def register_recurrent(register: Callable[[str, int, Callable], None]) -> None:
    """Register the LSTM and GRU converters with ``register(op_type, since_version, converter)``."""
    for op in ("LSTM", "GRU"):
        for version in (7, 14):
            register(op, version, _convert)
