"""The float twin of a fixed-point graph: the same (dequantized) weights in plain float64 PyTorch layers,
``torch.nn.GRU``, ``torch.nn.LSTM``, ``torch.nn.Linear``, ``torch.nn.ReLU``, without quantizers and with the smooth sigmoid and
tanh. Comparing the firmware with it shows what the fixed-point activations, states and tables cost.

Each node type registers its twin in :data:`TWINS`; a graph with a node without one (or that is not a chain)
has no twin, and :func:`distance_to_float` says so.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeann import ir
from edgeann.registry import Registry

TWINS = Registry("float twin")  # node type (exact) -> (node) -> float64 torch module


def _values(codes: np.ndarray, t: ir.FixedType) -> torch.Tensor:
    return torch.as_tensor(np.asarray(codes, np.int64).astype(np.float64) * t.scale)


@TWINS.register(ir.Input)
@TWINS.register(ir.Quantize)
def _identity(node) -> nn.Module:
    return nn.Identity()


@TWINS.register(ir.Relu)
def _relu(node) -> nn.Module:
    return nn.ReLU()


@TWINS.register(ir.Dense)
def _dense(node: ir.Dense) -> nn.Module:
    lin = nn.Linear(node.n_in, node.n_out).double()
    with torch.no_grad():
        lin.weight.copy_(_values(node.weight, node.weight_type))
        lin.bias.copy_(_values(node.bias, node.bias_type))
    return lin


class _Sequence(nn.Module):
    """``torch.nn.GRU`` or ``LSTM`` (batch first) returning the last state, or every state with ``return_sequences``."""

    def __init__(self, rnn: nn.Module, return_sequences: bool):
        super().__init__()
        self.rnn, self.return_sequences = rnn, return_sequences

    def forward(self, x):
        states, _ = self.rnn(x)
        return states if self.return_sequences else states[:, -1]


@TWINS.register(ir.GRU)
def _gru(node: ir.GRU) -> nn.Module:
    gru = nn.GRU(node.n_in, node.hidden, batch_first=True).double()
    with torch.no_grad():  # torch.nn.GRU's rows are r, z, n, as in the graph
        gru.weight_ih_l0.copy_(_values(node.w_ih, node.w_ih_type))
        gru.bias_ih_l0.copy_(_values(node.b_ih, node.b_ih_type))
        gru.weight_hh_l0.copy_(_values(node.w_hh, node.w_hh_type))
        gru.bias_hh_l0.copy_(_values(node.b_hh, node.b_hh_type))
    return _Sequence(gru, node.return_sequences)


@TWINS.register(ir.LSTM)
def _lstm(node: ir.LSTM) -> nn.Module:
    lstm = nn.LSTM(node.n_in, node.hidden, batch_first=True).double()
    with torch.no_grad():  # torch.nn.LSTM's rows are i, f, g, o, as in the graph
        lstm.weight_ih_l0.copy_(_values(node.w_ih, node.w_ih_type))
        lstm.bias_ih_l0.copy_(_values(node.b_ih, node.b_ih_type))
        lstm.weight_hh_l0.copy_(_values(node.w_hh, node.w_hh_type))
        lstm.bias_hh_l0.copy_(_values(node.b_hh, node.b_hh_type))
    return _Sequence(lstm, node.return_sequences)


def float_twin(graph: ir.Graph) -> nn.Module:
    """The graph as a float64 ``nn.Sequential``; raises ``ValueError`` naming what has no twin."""
    layers = []
    for k, node in enumerate(graph.nodes):
        if k and node.inputs != [graph.nodes[k - 1].name]:
            raise ValueError(f"node {node.name} does not read the node before it; only chains have a float twin")
        twin = TWINS.get(type(node))
        if twin is None:
            raise ValueError(f"{type(node).__name__} node {node.name} has no float twin")
        layers.append(twin(node))
    return nn.Sequential(*layers).eval()


@torch.no_grad()
def distance_to_float(graph: ir.Graph, x: np.ndarray, fixed: np.ndarray, y: np.ndarray | None = None) -> dict:
    """How far the fixed-point outputs ``fixed`` (firmware) on inputs ``x`` are from the float twin's; with labels
    ``y`` also the accuracy of both. ``{"available": False, "reason": ...}`` when the graph has no twin."""
    try:
        twin = float_twin(graph)
    except ValueError as e:
        return {"available": False, "reason": str(e)}
    ref = twin(torch.as_tensor(np.asarray(x, np.float64))).numpy().reshape(len(x), -1)
    fixed = np.asarray(fixed, np.float64).reshape(len(x), -1)
    diff = np.abs(fixed - ref)
    out = {
        "available": True,
        "reference": "float64 PyTorch with the same weights (torch.nn.GRU / LSTM / Linear / ReLU): no quantizers, "
                     "smooth sigmoid and tanh",
        "n_samples": len(x),
        "max_abs_diff": float(diff.max(initial=0.0)),
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "argmax_agreement": float(np.mean(fixed.argmax(axis=1) == ref.argmax(axis=1))) if len(x) else float("nan"),
    }
    if y is not None and len(y):
        out["accuracy_fixed_point"] = float(np.mean(fixed.argmax(axis=1) == y))
        out["accuracy_float"] = float(np.mean(ref.argmax(axis=1) == y))
    return out
