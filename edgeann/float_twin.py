"""The float twin of a fixed-point graph: the same (dequantized) weights in plain float64 PyTorch layers
(``torch.nn.Linear``, convolutions, pooling, ``torch.nn.GRU`` and ``LSTM``, ReLU), without quantizers and with the
smooth sigmoid and tanh. Comparing the firmware with it shows what the fixed-point activations, states and tables
cost.

Each node type registers its twin in :data:`TWINS`: a module taking the node's inputs as float64 tensors in the
graph's layout (channels-last). Every node but the requantizing ones (Input, Relu, Quantize) and the recurrent
tables is exact in the graph, so its twin computes the same values. A graph with a node without a twin has none,
and :func:`distance_to_float` says so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
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


class _ChannelsLast(nn.Module):
    """Runs ``fn`` (a channels-first torch op on (n, c, *spatial)) on a channels-last (n, *spatial, c) tensor."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x.movedim(-1, 1)).movedim(1, -1)


class _Conv(nn.Module):
    def __init__(self, node: ir.Conv):
        super().__init__()
        d = len(node.kernel)
        w = _values(node.weight, node.weight_type)  # (*kernel, c_in, c_out) -> (c_out, c_in, *kernel)
        self.weight = nn.Parameter(w.permute(d + 1, d, *range(d)).contiguous(), requires_grad=False)
        self.bias = nn.Parameter(_values(node.bias, node.bias_type), requires_grad=False)
        self.pad = [p for before, after in reversed(list(zip(node.pads[::2], node.pads[1::2]))) for p in (before, after)]
        self.stride, self.conv = node.stride, (F.conv1d, F.conv2d)[d - 1]

    def forward(self, x):
        x = F.pad(x.movedim(-1, 1), self.pad)  # F.pad takes the last axis first
        return self.conv(x, self.weight, self.bias, stride=self.stride).movedim(1, -1)


@TWINS.register(ir.Conv)
def _conv(node: ir.Conv) -> nn.Module:
    return _Conv(node)


@TWINS.register(ir.MaxPool)
@TWINS.register(ir.AvgPool)
def _pool(node) -> nn.Module:
    """The graph's average pooling is the exact mean (its sum sits on a grid 2**log2(area) finer)."""
    pools = {ir.MaxPool: (F.max_pool1d, F.max_pool2d), ir.AvgPool: (F.avg_pool1d, F.avg_pool2d)}[type(node)]
    pool = pools[len(node.pool) - 1]
    return _ChannelsLast(lambda x: pool(x, node.pool, node.stride))


class _Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(len(x), -1)  # channels-last, row-major: the graph's order


@TWINS.register(ir.Flatten)
def _flatten(node) -> nn.Module:
    return _Flatten()


class _Add(nn.Module):
    def forward(self, a, b):
        return a + b


@TWINS.register(ir.Add)
def _add(node) -> nn.Module:
    return _Add()


class _BatchNorm(nn.Module):
    def __init__(self, node: ir.BatchNorm):
        super().__init__()
        self.scale = nn.Parameter(_values(node.scale, node.scale_type), requires_grad=False)
        self.bias = nn.Parameter(_values(node.bias, node.bias_type), requires_grad=False)

    def forward(self, x):
        return x * self.scale + self.bias


@TWINS.register(ir.BatchNorm)
def _batchnorm(node: ir.BatchNorm) -> nn.Module:
    return _BatchNorm(node)


class FloatTwin(nn.Module):
    """The graph's nodes as float64 torch modules (``layers[k]`` for ``graph.nodes[k]``), run in the graph's order."""

    def __init__(self, graph: ir.Graph):
        super().__init__()
        self.names = [n.name for n in graph.nodes]
        self.inputs = [list(n.inputs) for n in graph.nodes]
        self.output = graph.outputs[0]
        layers = []
        for node in graph.nodes:
            twin = TWINS.get(type(node))
            if twin is None:
                raise ValueError(f"{type(node).__name__} node {node.name} has no float twin")
            layers.append(twin(node))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        values = {}
        for name, inputs, layer in zip(self.names, self.inputs, self.layers):
            values[name] = layer(*[values[i] for i in inputs]) if inputs else layer(x)
        return values[self.output]


def float_twin(graph: ir.Graph) -> FloatTwin:
    """The graph in float64 PyTorch; raises ``ValueError`` naming a node that has no twin."""
    return FloatTwin(graph).double().eval()


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
        "reference": "float64 PyTorch with the same weights (torch.nn.Linear, convolutions, pooling, GRU / LSTM, "
                     "ReLU): no quantizers, smooth sigmoid and tanh",
        "n_samples": len(x),
        "max_abs_diff": float(diff.max(initial=0.0)),
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "argmax_agreement": float(np.mean(fixed.argmax(axis=1) == ref.argmax(axis=1))) if len(x) else float("nan"),
    }
    if y is not None and len(y):
        out["accuracy_fixed_point"] = float(np.mean(fixed.argmax(axis=1) == y))
        out["accuracy_float"] = float(np.mean(ref.argmax(axis=1) == y))
    return out
