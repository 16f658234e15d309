"""The recurrent families, ``gru`` and ``lstm``: sequences (steps, features) -> recurrent layer(s) ->
[dense -> ReLU]* -> dense -> output.

Brevitas has no quantized GRU, and its LSTM exports a custom op nothing downstream runs, so
:class:`QuantGRU` and :class:`QuantLSTM` are built here from Brevitas quantizers (edgeann's presets) and train
with exactly the arithmetic of the firmware, :class:`edgeann.ir.GRU` / :class:`edgeann.ir.LSTM`:

* the two weight matrices ``<name>_ih`` (GH x F) and ``<name>_hh`` (GH x H), G gates stacked in rows as in
  ``torch.nn.GRU`` / ``torch.nn.LSTM``, are :class:`brevitas.nn.QuantLinear` layers: fixed-point weights,
  biases on the accumulator grid, and pruned like every dense layer (:meth:`EdgeModel.prunable` finds them);
* each gate pre-activation (and the LSTM's cell) passes a truncating, saturating quantizer with a learned
  power-of-two scale (``gate_bits`` wide): its integer code indexes an activation table;
* sigmoid and tanh are the firmware's lookup tables (:func:`edgeann.ir.activation_table`, outputs
  ``table_bits`` wide): the forward pass returns the table's value, the backward pass the gradient of
  the smooth function at the quantized input (straight-through);
* the hidden state passes a truncating, saturating quantizer with a learned power-of-two scale (the
  layer's activation bits).

The tables are the integer arrays the firmware holds, so the model in float64 equals the graph's golden
model bit for bit (checked at every export), and training computes the firmware's activations too. Only in
the first steps of training, while Brevitas collects statistics and a scale is not yet a power of two, the
table's rounding is applied element by element instead.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor
from torch import nn

from edgeann import fused, ir
from edgeann.config import GRUConfig, LSTMConfig
from edgeann.errors import EdgeannError
from edgeann.models import register_model
from edgeann.models.mlp import dense_head


class _TableSTE(torch.autograd.Function):
    """Forward: the table's value ``y``; backward: the derivative of the smooth ``fn`` at the input ``x``."""

    @staticmethod
    def forward(ctx, x, y, fn: str):
        ctx.save_for_backward(x)
        ctx.fn = fn
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.fn == "sigmoid":
            s = torch.sigmoid(x)
            slope = s * (1 - s)
        else:
            slope = 1 - torch.tanh(x) ** 2
        return grad * slope, None, None


_SMOOTH = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


def _scale(q) -> float:
    return float(q.scale.detach().reshape(-1)[0])


def code_type(q: IntQuantTensor) -> ir.FixedType:
    """The fixed-point type of a quantized tensor whose scale is a power of two."""
    scale = _scale(q)
    mantissa, exponent = math.frexp(scale)
    if mantissa != 0.5:
        raise EdgeannError(f"scale {scale!r} is not a power of two, so it has no activation table")
    return ir.FixedType(int(q.bit_width), 1 - exponent, bool(q.signed))


class HardwareActivation(nn.Module):
    """``sigmoid`` or ``tanh`` as the firmware computes it: a table over the input's integer codes, rounded
    to the nearest code of ``out_type``; straight-through gradient of the smooth function."""

    def __init__(self, fn: str, out_type: ir.FixedType):
        super().__init__()
        self.fn, self.out_type = fn, out_type
        self._tables: dict = {}

    def table(self, in_type: ir.FixedType) -> np.ndarray:
        """The integer table for inputs of ``in_type``: what the graph and the firmware hold."""
        return ir.activation_table(self.fn, in_type, self.out_type)

    def _values(self, in_type: ir.FixedType, like: torch.Tensor) -> torch.Tensor:
        key = (in_type, like.dtype, like.device)
        if key not in self._tables:
            codes = self.table(in_type).astype(np.float64) * self.out_type.scale
            self._tables[key] = torch.as_tensor(codes, dtype=like.dtype, device=like.device)
        return self._tables[key]

    def forward(self, q: IntQuantTensor) -> torch.Tensor:
        x = q.value
        if self.training and math.frexp(_scale(q))[0] != 0.5:
            # Brevitas still collecting statistics (a scale that is no power of two yet): the table's rounding,
            # element by element
            t = self.out_type
            y = torch.clamp(torch.floor(_SMOOTH[self.fn](x.detach()) * 2.0**t.frac + 0.5), t.int_min, t.int_max) * t.scale
        else:  # the table itself, read at the input's integer code
            in_type = code_type(q)
            index = torch.round(x.detach() / _scale(q)).long() - in_type.int_min
            y = self._values(in_type, x)[index]
        return _TableSTE.apply(x, y, self.fn)


class _Recurrent(nn.Module):
    """The weight matrices as two named dense layers, ``<name>_ih`` and ``<name>_hh`` (unique in the network,
    so pruning and the sparsity report tell the layers of stacked networks apart), and the loop over steps."""

    gates = ""  # one letter per gate, in row order

    def _matrices(self, name: str, ih: nn.Module, hh: nn.Module) -> None:
        self._names = (f"{name}_ih", f"{name}_hh")
        self.add_module(self._names[0], ih)
        self.add_module(self._names[1], hh)

    @property
    def ih(self) -> nn.Module:
        return self._modules[self._names[0]]

    @property
    def hh(self) -> nn.Module:
        return self._modules[self._names[1]]

    def split(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gate -> its rows of an accumulator."""
        n_h = self.hidden_size
        return {g: a[:, k * n_h : (k + 1) * n_h] for k, g in enumerate(self.gates)}


class _QuantRecurrent(_Recurrent):
    exports_qonnx = False  # Brevitas' QONNX exporter knows no such layer (see edgeann.export)

    def __init__(self, name: str, n_in: int, hidden: int, *, weight_quant, bias_quant, gate_quant, state_quant,
                 table_bits: int, return_sequences: bool):
        super().__init__()
        self.hidden_size, self.return_sequences = hidden, return_sequences

        def linear(fan_in: int) -> nn.Module:
            return fused.QuantLinear(fan_in, len(self.gates) * hidden, bias=True, weight_quant=weight_quant,
                                   bias_quant=bias_quant, return_quant_tensor=False)

        self._matrices(name, linear(n_in), linear(hidden))
        for g in self.gates:
            self.add_module(f"gate_{g}", fused.QuantIdentity(act_quant=gate_quant, return_quant_tensor=True))
        self.state = fused.QuantIdentity(act_quant=state_quant, return_quant_tensor=True)
        self.sigmoid = HardwareActivation("sigmoid", ir.sigmoid_type(table_bits))
        self.tanh = HardwareActivation("tanh", ir.tanh_type(table_bits))

    def pre(self, gate: str, value: torch.Tensor) -> IntQuantTensor:
        """A gate's pre-activation, quantized: its code indexes the gate's table."""
        return getattr(self, f"gate_{gate}")(value)

    def quantizers(self) -> dict[str, nn.Module]:
        """Graph field stem -> the quantizer defining that type (``gate_r`` -> ``gate_r_type``, ...)."""
        return {**{f"gate_{g}": getattr(self, f"gate_{g}") for g in self.gates}, "state": self.state}

    def graph_tables(self, types: dict[str, ir.FixedType]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """The graph node's table fields, for the learned ``types`` (keys as :meth:`quantizers`)."""
        raise NotImplementedError

    def step(self, g: dict, gh: dict, h: IntQuantTensor, carry):  # pragma: no cover - abstract
        raise NotImplementedError

    def recurrent_product(self, h: IntQuantTensor, weight: IntQuantTensor) -> torch.Tensor:
        """``hh(h)`` with ``hh``'s weight quantized already: the bias, on the grid of h's scale x the weight
        scale, is quantized here."""
        bias = self.hh.quant_bias(h, weight)
        return torch.nn.functional.linear(h.value, weight.value, bias.value)

    def forward(self, x):
        gi = self.ih(x)
        weight = self.hh.quant_weight()  # once per sequence, not once per step: the weights do not change
        with fused.scales_computed_once(self):  # the gate and state scales, likewise
            h, carry, states = self.state(gi.new_zeros(gi.shape[0], self.hidden_size)), None, []
            for t in range(gi.shape[1]):
                h, carry = self.step(self.split(gi[:, t]), self.split(self.recurrent_product(h, weight)), h, carry)
                states.append(h.value)
        if not self.return_sequences:
            return h
        return IntQuantTensor(torch.stack(states, dim=1), h.scale, h.zero_point, h.bit_width, h.signed, self.training)


class QuantGRU(_QuantRecurrent):
    """A quantization-aware GRU (see the module docstring and :class:`edgeann.ir.GRU`): input an
    ``IntQuantTensor`` (N, T, F); output the last state (N, H), or every state (N, T, H) with
    ``return_sequences``, as an ``IntQuantTensor``."""

    gates = "rzn"
    node_type = ir.GRU

    def step(self, g, gh, h, carry):
        r = self.sigmoid(self.pre("r", g["r"] + gh["r"]))
        z = self.sigmoid(self.pre("z", g["z"] + gh["z"]))
        n = self.tanh(self.pre("n", g["n"] + r * gh["n"]))
        return self.state(n + z * (h.value - n)), None

    def graph_tables(self, types):
        return {"sigmoid_r_table": self.sigmoid.table(types["gate_r"]), "sigmoid_z_table": self.sigmoid.table(types["gate_z"]),
                "tanh_table": self.tanh.table(types["gate_n"])}


class QuantLSTM(_QuantRecurrent):
    """A quantization-aware LSTM (see the module docstring and :class:`edgeann.ir.LSTM`); the cell passes its
    own truncating, saturating quantizer (``cell_quant``), whose code indexes the tanh table of the output."""

    gates = "ifgo"
    node_type = ir.LSTM

    def __init__(self, name: str, n_in: int, hidden: int, *, cell_quant, **kw):
        super().__init__(name, n_in, hidden, **kw)
        self.cell = fused.QuantIdentity(act_quant=cell_quant, return_quant_tensor=True)

    def step(self, g, gh, h, c):
        i, f, o = (self.sigmoid(self.pre(k, g[k] + gh[k])) for k in "ifo")
        cell = i * self.tanh(self.pre("g", g["g"] + gh["g"]))
        c = self.cell(cell if c is None else f * c.value + cell)
        return self.state(o * self.tanh(c)), c

    def quantizers(self):
        return {**super().quantizers(), "cell": self.cell}

    def graph_tables(self, types):
        tables = {f"sigmoid_{k}_table": self.sigmoid.table(types[f"gate_{k}"]) for k in "ifo"}
        return {**tables, "tanh_g_table": self.tanh.table(types["gate_g"]), "tanh_c_table": self.tanh.table(types["cell"])}


class FloatGRU(_Recurrent):
    """The float twin of :class:`QuantGRU`: the same equations and matrices, smooth sigmoid and tanh."""

    gates = "rzn"

    def __init__(self, name: str, n_in: int, hidden: int, *, return_sequences: bool = False):
        super().__init__()
        self.hidden_size, self.return_sequences = hidden, return_sequences
        self._matrices(name, nn.Linear(n_in, 3 * hidden), nn.Linear(hidden, 3 * hidden))

    def forward(self, x):
        gi = self.ih(x)
        h, states = gi.new_zeros(gi.shape[0], self.hidden_size), []
        for t in range(gi.shape[1]):
            g, gh = self.split(gi[:, t]), self.split(self.hh(h))
            r, z = torch.sigmoid(g["r"] + gh["r"]), torch.sigmoid(g["z"] + gh["z"])
            n = torch.tanh(g["n"] + r * gh["n"])
            h = n + z * (h - n)
            states.append(h)
        return torch.stack(states, dim=1) if self.return_sequences else h


class FloatLSTM(_Recurrent):
    """The float twin of :class:`QuantLSTM`."""

    gates = "ifgo"

    def __init__(self, name: str, n_in: int, hidden: int, *, return_sequences: bool = False):
        super().__init__()
        self.hidden_size, self.return_sequences = hidden, return_sequences
        self._matrices(name, nn.Linear(n_in, 4 * hidden), nn.Linear(hidden, 4 * hidden))

    def forward(self, x):
        gi = self.ih(x)
        h = c = gi.new_zeros(gi.shape[0], self.hidden_size)
        states = []
        for t in range(gi.shape[1]):
            g, gh = self.split(gi[:, t]), self.split(self.hh(h))
            i, f, o = (torch.sigmoid(g[k] + gh[k]) for k in "ifo")
            c = f * c + i * torch.tanh(g["g"] + gh["g"])
            h = o * torch.tanh(c)
            states.append(h)
        return torch.stack(states, dim=1) if self.return_sequences else h


@register_model("gru")
@register_model("lstm")
def build_recurrent(cfg: GRUConfig | LSTMConfig, layers, input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if len(input_shape) != 2:
        raise EdgeannError(f"the {cfg.family} family takes sequences (steps, features), but the data has per-sample shape "
                           f"{input_shape}; use data.representation: sequences")
    mods: OrderedDict[str, nn.Module] = OrderedDict(input=layers.input())
    width = input_shape[1]
    for i, hidden in enumerate(cfg.hidden, start=1):
        name = f"{cfg.family}{i}"
        mods[name] = layers.recurrent(cfg.family, name, width, hidden, gate_bits=cfg.gate_bits, table_bits=cfg.table_bits,
                                      return_sequences=i < len(cfg.hidden))
        width = hidden
    mods.update(dense_head(layers, width, cfg.dense, n_classes))
    return nn.Sequential(mods)
