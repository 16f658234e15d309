"""Write the fixed-point graph as standard ONNX (QuantizeLinear / Clip / DequantizeLinear).

The result is the onnxruntime reference for the firmware, so it must compute exactly what
:meth:`edgeann.ir.Graph.execute` computes:

* every quantizer truncates: ``Mul(2^f) -> Floor -> Mul(2^-f)`` puts the value on the grid
  (exact in binary floating point), then ``QuantizeLinear -> Clip -> DequantizeLinear``
  saturates it (``QuantizeLinear`` alone would round half to even); foreign models that ask
  for round-half-to-even get ``Round`` in place of ``Floor``;
* 9-16-bit quantizers clip in float before an int16/uint16 ``QuantizeLinear``
  (onnxruntime has no int16 ``Clip``); 17-24-bit ones saturate with a float ``Clip`` alone;
* a dense layer sums in float32 only when every partial sum is provably below 2^24 in units
  of its least significant bit (then float32 is exact); wider layers sum in float64, exact
  below 2^53, so no accumulator is ever rounded. The same rule holds for convolutions (every
  window gathered at once, channels-last, then a MatMul), average pooling, residual additions
  and batch normalization.

Brevitas' own QCDQ exporter rounds half to even and stops at 8 bits, so edgeann writes this
file itself; the QONNX file (Quant nodes) comes from Brevitas (:mod:`edgeann.export`).
"""

from __future__ import annotations

import copy

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeann import ir
from edgeann.registry import Registry

OPSET = 21
IR_VERSION = 10
FLOAT32_EXACT = 2**24
MAX_QUANTIZER_BITS = 24


class _Builder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.dtype: dict[str, int] = {}  # float tensors: FLOAT or DOUBLE
        self._n = 0

    def const(self, hint: str, value: np.ndarray) -> str:
        name = f"{hint}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, hint: str = "", **attrs) -> str:
        self._n += 1
        out = out or f"{hint}/{op_type}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{hint}/{op_type}_{self._n}", **attrs))
        return out


def _storage(t: ir.FixedType) -> tuple[type, int]:
    if t.width <= 8:
        return (np.int8, 8) if t.signed else (np.uint8, 8)
    return (np.int16, 16) if t.signed else (np.uint16, 16)


def _weight_storage(w: np.ndarray) -> type:
    """The narrowest of int8 / int16 / int32 that holds every weight code (post-training precisions and foreign
    models give weights wider than 8 bits)."""
    lo, hi = int(w.min(initial=0)), int(w.max(initial=0))
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    raise ValueError(f"weight codes up to {max(-lo, hi)} do not fit in int32")


def emit_quantizer(b: _Builder, x: str, t: ir.FixedType, out: str, hint: str, rounding: str = "floor") -> str:
    """Round onto ``t``'s grid (floor, or half to even) and saturate, in QCDQ form.

    ``x`` may be float32 or float64.
    """
    wide = b.dtype.get(x, TensorProto.FLOAT) == TensorProto.DOUBLE
    fdt = np.float64 if wide else np.float32
    up = b.const(f"{hint}/grid", fdt(2.0**t.frac))
    down = b.const(f"{hint}/lsb", fdt(2.0**-t.frac))
    if rounding == "floor" and t.frac < 0:
        # floor(x * 2^f) == floor(floor(x) * 2^f) for f < 0; flooring first keeps a tiny negative
        # x from underflowing to -0.0 (whose floor would be 0, not -1)
        x = b.op("Floor", [x], hint=hint)
    to_grid = {"floor": "Floor", "half_even": "Round"}[rounding]  # ONNX Round is half to even
    y = b.op("Mul", [b.op(to_grid, [b.op("Mul", [x, up], hint=hint)], hint=hint), down], hint=hint)
    if wide:  # exact after saturation: in-range values have at most 16 significant bits
        y = b.op("Cast", [y], hint=hint, to=TensorProto.FLOAT)
    if t.width > MAX_QUANTIZER_BITS:
        raise ValueError(f"{hint}: a {t.width}-bit quantizer is wider than the {MAX_QUANTIZER_BITS} bits float32 holds exactly")
    if t.width > 16:  # no 32-bit QuantizeLinear: saturate in float32, exact up to 24 bits
        lo = b.const(f"{hint}/min", np.float32(t.int_min * t.scale))
        hi = b.const(f"{hint}/max", np.float32(t.int_max * t.scale))
        out = b.op("Clip", [y, lo, hi], out=out, hint=hint)
        b.dtype[out] = TensorProto.FLOAT
        return out
    storage, bits = _storage(t)
    scale = b.const(f"{hint}/scale", np.float32(t.scale))
    zero = b.const(f"{hint}/zero_point", storage(0))
    info = np.iinfo(storage)
    if bits == 16:
        lo = b.const(f"{hint}/min", np.float32(t.int_min * t.scale))
        hi = b.const(f"{hint}/max", np.float32(t.int_max * t.scale))
        y = b.op("Clip", [y, lo, hi], hint=hint)
    q = b.op("QuantizeLinear", [y, scale, zero], hint=hint)
    if bits == 8 and (t.int_min, t.int_max) != (info.min, info.max):
        q = b.op("Clip", [q, b.const(f"{hint}/qmin", storage(t.int_min)), b.const(f"{hint}/qmax", storage(t.int_max))], hint=hint)
    out = b.op("DequantizeLinear", [q, scale, zero], out=out, hint=hint)
    b.dtype[out] = TensorProto.FLOAT
    return out


Emitter = Callable[["_Builder", ir.Node, dict, str], str]  # (builder, node, tensor infos, graph input) -> output
EMITTERS = Registry("ONNX emitter")  # node type (exact) -> the function writing it as ONNX nodes
emitter = EMITTERS.register


@emitter(ir.Input)
def _emit_input(b, node: ir.Input, infos, graph_input: str):
    return emit_quantizer(b, graph_input, node.type, node.name, node.name, node.rounding)


def dense_is_float32_exact(node: ir.Dense, x: ir.TensorInfo) -> bool:
    """True when every partial sum of the layer is an integer below 2^24 LSBs (float32 exact)."""
    frac = node.acc_frac(x)
    w = np.abs(node.weight.astype(np.int64)) << (frac - x.type.frac - node.weight_type.frac)
    b = np.abs(node.bias.astype(np.int64)) << (frac - node.bias_type.frac)
    bound = b + w.sum(axis=1) * max(abs(x.lo), abs(x.hi))
    return int(bound.max(initial=0)) < FLOAT32_EXACT


@emitter(ir.Dense)
def _emit_dense(b, node: ir.Dense, infos, graph_input):
    (src,) = node.inputs
    x = infos[src]
    h = node.name
    if dense_is_float32_exact(node, x) and b.dtype.get(src, TensorProto.FLOAT) == TensorProto.FLOAT:
        wq = b.const(f"{h}/weight_int", node.weight.astype(_weight_storage(node.weight)))
        w = b.op("DequantizeLinear", [wq, b.const(f"{h}/weight_scale", np.float32(node.weight_type.scale))], hint=h)
        bq = b.const(f"{h}/bias_int", node.bias.astype(np.int32))
        bias = b.op("DequantizeLinear", [bq, b.const(f"{h}/bias_scale", np.float32(node.bias_type.scale))], hint=h)
        out = b.op("Gemm", [src, w, bias], out=h, hint=h, transB=1)
        b.dtype[out] = TensorProto.FLOAT
    else:  # float64 accumulation: exact below 2^53
        xd = b.op("Cast", [src], hint=h, to=TensorProto.DOUBLE)
        w = b.const(f"{h}/weight", (node.weight.T.astype(np.float64) * node.weight_type.scale))
        bias = b.const(f"{h}/bias", node.bias.astype(np.float64) * node.bias_type.scale)
        out = b.op("Add", [b.op("MatMul", [xd, w], hint=h), bias], out=h, hint=h)
        b.dtype[out] = TensorProto.DOUBLE
    return out


@emitter(ir.Relu)
def _emit_relu(b, node: ir.Relu, infos, graph_input):
    (src,) = node.inputs
    r = b.op("Relu", [src], hint=node.name)
    b.dtype[r] = b.dtype.get(src, TensorProto.FLOAT)
    return emit_quantizer(b, r, node.type, node.name, node.name, node.rounding)


@emitter(ir.Quantize)
def _emit_quantize(b, node: ir.Quantize, infos, graph_input):
    return emit_quantizer(b, node.inputs[0], node.type, node.name, node.name, node.rounding)


# -- convolutional networks: the graph and model.onnx are channels-last, (N, *spatial, C)


def _dtype(b: _Builder, x: str) -> int:
    return b.dtype.get(x, TensorProto.FLOAT)


def _magnitude(x: ir.TensorInfo) -> int:
    return max(abs(x.lo), abs(x.hi))


def _windows(b: _Builder, x: str, shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...],
             pads: tuple[int, ...], hint: str, merge: bool) -> str:
    """Every window of channels-last ``x`` (N, *spatial, C) after zero padding, gathered in one step:
    (N, *out, K * C) with ``merge`` (im2col, row-major kernel offset then channel, like the weights), else
    (N, *out, K, C). Only moves values, so it is exact in any dtype.

    Flatten + Gather, not Transpose or Slice: onnxruntime (1.22 - 1.23 at least) propagates an int8
    DequantizeLinear of opset 21 across Transpose, Slice, Reshape and MaxPool and then fails to load the model.
    """
    d, channels = len(window), shape[-1]
    if any(pads):
        begin, end = [0] * (d + 2), [0] * (d + 2)
        begin[1 : d + 1], end[1 : d + 1] = pads[::2], pads[1::2]
        x = b.op("Pad", [x, b.const(f"{hint}/pads", np.array(begin + end, np.int64))], hint=hint)
    padded = tuple(n + before + after for n, before, after in zip(shape[:-1], pads[::2], pads[1::2]))
    out = tuple((n - k) // s + 1 for n, k, s in zip(padded, window, stride))
    at = np.indices(out + window)  # (2d, *out, *window): output position, then offset in the window
    rows = np.ravel_multi_index(tuple(at[a] * stride[a] + at[d + a] for a in range(d)), padded)
    index = (rows[..., None] * channels + np.arange(channels)).reshape(*out, -1 if merge else int(np.prod(window)),
                                                                       *(() if merge else (channels,)))
    flat = b.op("Flatten", [x], hint=hint, axis=1)
    return b.op("Gather", [flat, b.const(f"{hint}/window_index", index.astype(np.int64))], hint=hint, axis=1)


def conv_is_float32_exact(node: ir.Conv, x: ir.TensorInfo) -> bool:
    """True when every partial sum of the convolution is an integer below 2^24 LSBs (float32 exact)."""
    frac = node.acc_frac(x)
    w = np.abs(node.weight.astype(np.int64).reshape(-1, node.n_out)) << (frac - x.type.frac - node.weight_type.frac)
    bias = np.abs(node.bias.astype(np.int64)) << (frac - node.bias_type.frac)
    return int((bias + w.sum(axis=0) * _magnitude(x)).max(initial=0)) < FLOAT32_EXACT


@emitter(ir.Conv)
def _emit_conv(b, node: ir.Conv, infos, graph_input):
    """im2col (channels-last, any dtype) and a MatMul: float32 where every partial sum is provably below 2^24 LSBs,
    float64 otherwise. (onnxruntime's own Conv is float32 only and channels-first.)"""
    (src,) = node.inputs
    x, h = infos[src], node.name
    cols = _windows(b, src, x.shape, node.kernel, node.stride, node.pads, h, merge=True)
    narrow = conv_is_float32_exact(node, x) and _dtype(b, src) == TensorProto.FLOAT
    fdt = np.float32 if narrow else np.float64
    if not narrow:  # float64: exact below 2^53
        cols = b.op("Cast", [cols], hint=h, to=TensorProto.DOUBLE)
    # Weights as float constants (exact: at most 8 significant bits), not DequantizeLinear: onnxruntime's extended
    # optimizations turn DequantizeLinear(int8 weight) -> MatMul into an integer MatMul that quantizes the
    # activations dynamically, which is not exact.
    w = b.const(f"{h}/weight", (node.weight.reshape(-1, node.n_out).astype(np.float64) * node.weight_type.scale).astype(fdt))
    bias = b.const(f"{h}/bias", (node.bias.astype(np.float64) * node.bias_type.scale).astype(fdt))
    out = b.op("Add", [b.op("MatMul", [cols, w], hint=h), bias], out=h, hint=h)
    b.dtype[out] = TensorProto.FLOAT if narrow else TensorProto.DOUBLE
    return out


@emitter(ir.MaxPool)
def _emit_max_pool(b, node: ir.MaxPool, infos, graph_input):
    (src,) = node.inputs
    h = node.name
    windows = _windows(b, src, infos[src].shape, node.pool, node.stride, (0,) * (2 * len(node.pool)), h, merge=False)
    out = b.op("ReduceMax", [windows, b.const(f"{h}/axes", np.array([-2], np.int64))], out=h, hint=h, keepdims=0)
    b.dtype[out] = _dtype(b, src)
    return out


@emitter(ir.AvgPool)
def _emit_avg_pool(b, node: ir.AvgPool, infos, graph_input):
    """The sum of each window (exact: float32 below 2^24 LSBs, else float64) times 2^-log2(area), exact."""
    (src,) = node.inputs
    x, h = infos[src], node.name
    wide = _dtype(b, src) == TensorProto.DOUBLE or node.area * _magnitude(x) >= FLOAT32_EXACT
    windows = _windows(b, src, x.shape, node.pool, node.stride, (0,) * (2 * len(node.pool)), h, merge=False)
    if wide and _dtype(b, src) != TensorProto.DOUBLE:
        windows = b.op("Cast", [windows], hint=h, to=TensorProto.DOUBLE)
    total = b.op("ReduceSum", [windows, b.const(f"{h}/axes", np.array([-2], np.int64))], hint=h, keepdims=0)
    fdt = np.float64 if wide else np.float32
    out = b.op("Mul", [total, b.const(f"{h}/inverse_area", fdt(1.0 / node.area))], out=h, hint=h)
    b.dtype[out] = TensorProto.DOUBLE if wide else TensorProto.FLOAT
    return out


@emitter(ir.Flatten)
def _emit_flatten(b, node: ir.Flatten, infos, graph_input):
    (src,) = node.inputs
    out = b.op("Flatten", [src], out=node.name, hint=node.name, axis=1)  # row-major: channels-last order
    b.dtype[out] = _dtype(b, src)
    return out


@emitter(ir.Add)
def _emit_add(b, node: ir.Add, infos, graph_input):
    """Float32 when the sum stays below 2^24 LSBs of the finer input grid and both inputs are float32; else float64."""
    a, c = (infos[i] for i in node.inputs)
    frac = max(a.type.frac, c.type.frac)
    bound = (_magnitude(a) << (frac - a.type.frac)) + (_magnitude(c) << (frac - c.type.frac))
    wide = bound >= FLOAT32_EXACT or any(_dtype(b, i) == TensorProto.DOUBLE for i in node.inputs)
    ins = [b.op("Cast", [i], hint=node.name, to=TensorProto.DOUBLE) if wide and _dtype(b, i) != TensorProto.DOUBLE else i
           for i in node.inputs]
    out = b.op("Add", ins, out=node.name, hint=node.name)
    b.dtype[out] = TensorProto.DOUBLE if wide else TensorProto.FLOAT
    return out


@emitter(ir.BatchNorm)
def _emit_batchnorm(b, node: ir.BatchNorm, infos, graph_input):
    """``x * scale + bias`` along the channel (last) axis: float32 below 2^24 LSBs, else float64."""
    (src,) = node.inputs
    x, h = infos[src], node.name
    frac = node.acc_frac(x)
    s = np.abs(node.scale.astype(np.int64)) << (frac - x.type.frac - node.scale_type.frac)
    bias = np.abs(node.bias.astype(np.int64)) << (frac - node.bias_type.frac)
    wide = _dtype(b, src) == TensorProto.DOUBLE or int((s * _magnitude(x) + bias).max(initial=0)) >= FLOAT32_EXACT
    fdt = np.float64 if wide else np.float32
    xs = b.op("Cast", [src], hint=h, to=TensorProto.DOUBLE) if wide and _dtype(b, src) != TensorProto.DOUBLE else src
    scale = b.const(f"{h}/scale", (node.scale.astype(np.float64) * node.scale_type.scale).astype(fdt))
    shift = b.const(f"{h}/bias", (node.bias.astype(np.float64) * node.bias_type.scale).astype(fdt))
    out = b.op("Add", [b.op("Mul", [xs, scale], hint=h), shift], out=h, hint=h)
    b.dtype[out] = TensorProto.DOUBLE if wide else TensorProto.FLOAT
    return out




@emitter(ir.Threshold)
def _emit_threshold(b, node: ir.Threshold, infos, graph_input):
    """Compare with every threshold, count, then ``start + step * count`` on the output grid: the comparisons are
    exact in float64 (thresholds are integers times a power of two), the count and codes are small integers, exact
    in float32."""
    (src,) = node.inputs
    x, y, h = infos[src], infos[node.name], node.name
    xs = b.op("Cast", [src], hint=h, to=TensorProto.DOUBLE) if _dtype(b, src) != TensorProto.DOUBLE else src
    col = b.op("Unsqueeze", [xs, b.const(f"{h}/axis", np.array([-1], np.int64))], hint=h)  # (N, ..., C, 1)
    t = b.const(f"{h}/thresholds", np.asarray(node.thresholds, np.float64) * x.type.scale)  # (C, K)
    reached = b.op("Cast", [b.op("GreaterOrEqual", [col, t], hint=h)], hint=h, to=TensorProto.FLOAT)
    count = b.op("ReduceSum", [reached, b.const(f"{h}/last", np.array([-1], np.int64))], hint=h, keepdims=0)
    codes = b.op("Add", [b.op("Mul", [count, b.const(f"{h}/step", np.asarray(node.step, np.float32))], hint=h),
                         b.const(f"{h}/start", np.asarray(node.start, np.float32))], hint=h)
    out = b.op("Mul", [codes, b.const(f"{h}/lsb", np.float32(y.type.scale))], out=h, hint=h)
    b.dtype[out] = TensorProto.FLOAT
    return out

# -- recurrent networks: GRU and LSTM, unrolled in time


class _Unrolled:
    """Writes one recurrent layer step by step (:class:`edgeann.ir.Recurrent`): MatMul + Add accumulators per gate
    (the input projection once for all steps), each requantizer in QCDQ form, each table a ``Gather`` at the
    integer code minus ``int_min``, the layer's exact update. Float32 where every intermediate, partial sums
    included, is provably below 2^24 LSBs of its grid; else float64, exact below 2^53."""

    def __init__(self, b: _Builder, node: ir.Recurrent, infos: dict):
        (src,) = node.inputs
        self.b, self.node, self.x = b, node, infos[src]
        self.a = node.arithmetic(self.x)
        self.wide = _dtype(b, src) == TensorProto.DOUBLE or max(v for _, v in self.a.bounds.values()) >= FLOAT32_EXACT
        self.fdt, self.dt = (np.float64, TensorProto.DOUBLE) if self.wide else (np.float32, TensorProto.FLOAT)
        xs = src if _dtype(b, src) == self.dt else self.widen(src, node.name)
        self.gi_all, self.w_hh, self.b_hh = {}, {}, {}
        for gate in node.gates:
            rows = node.rows(gate)
            w_ih = self.values(f"w_ih_{gate}", node.w_ih[rows].T, node.w_ih_type)
            b_ih = self.values(f"b_ih_{gate}", node.b_ih[rows], node.b_ih_type)
            self.gi_all[gate] = self.op("Add", [self.op("MatMul", [xs, w_ih], node.name), b_ih], node.name)
            self.w_hh[gate] = self.values(f"w_hh_{gate}", node.w_hh[rows].T, node.w_hh_type)
            self.b_hh[gate] = self.values(f"b_hh_{gate}", node.b_hh[rows], node.b_hh_type)
        self.tables = {k: self.values(f"table_{k}", t, out) for k, (t, _, out) in node.tables().items()}

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        y = self.b.op(op_type, inputs, hint=hint, **attrs)
        self.b.dtype[y] = self.dt
        return y

    def values(self, key: str, codes: np.ndarray, t: ir.FixedType) -> str:
        return self.b.const(f"{self.node.name}/{key}", (codes.astype(np.float64) * t.scale).astype(self.fdt))

    def widen(self, y: str, hint: str) -> str:
        """A quantizer's float32 output in the layer's dtype."""
        return self.b.op("Cast", [y], hint=hint, to=TensorProto.DOUBLE) if self.wide else y

    def quantize(self, s: str, t: ir.FixedType, hint: str, out: str | None = None) -> str:
        """Floor and saturate onto ``t`` (QCDQ); float32, exact."""
        return emit_quantizer(self.b, s, t, out or hint, hint)

    def lookup(self, table: str, q: str, hint: str) -> str:
        """The table's entry at the code of ``q`` (a float32 quantizer output on the table's index type)."""
        _, index_type, _ = self.node.tables()[table]
        b = self.b
        code = b.op("Mul", [q, b.const(f"{hint}/{table}_grid", np.float32(2.0**index_type.frac))], hint=hint)
        offset = b.op("Sub", [code, b.const(f"{hint}/{table}_int_min", np.float32(index_type.int_min))], hint=hint)
        return self.op("Gather", [self.tables[table], b.op("Cast", [offset], hint=hint, to=TensorProto.INT64)], hint, axis=0)

    def gate(self, table: str, s: str, hint: str) -> str:
        """Requantize ``s`` onto the table's index type and read the table."""
        return self.lookup(table, self.quantize(s, self.node.tables()[table][1], f"{hint}/{table}_in"), hint)

    def run(self, step) -> str:
        """``step(t, gi, gh, h, carry, hint) -> (update, carry)`` for every step (``h`` None at the first: 0);
        each ``update`` is requantized onto the state type. Returns the layer's output tensor."""
        node, name = self.node, self.node.name
        h, carry, states = None, None, []
        for t in range(self.x.shape[0]):
            hint = f"{name}/t{t}"
            step_index = self.b.const(f"{hint}/step", np.int64(t))
            gi = {g: self.op("Gather", [self.gi_all[g], step_index], hint, axis=1) for g in node.gates}
            if h is None:  # h = 0: W_hh h + b_hh = b_hh
                gh = self.b_hh
            else:
                gh = {g: self.op("Add", [self.op("MatMul", [h, self.w_hh[g]], hint), self.b_hh[g]], hint) for g in node.gates}
            update, carry = step(gi, gh, h, carry, hint)
            last = t == self.x.shape[0] - 1 and not node.return_sequences
            q = self.quantize(update, node.state_type, f"{hint}/state", name if last else None)
            states.append(q)
            h = self.widen(q, hint)
        if not node.return_sequences:
            return states[-1]
        # (N, T*H) -> (N, T, H); not Unsqueeze + Concat: onnxruntime's QDQ propagation breaks on an Unsqueeze
        # right after DequantizeLinear (output_dtype INT8 does not match y_zero_point type UINT8)
        flat = self.b.op("Concat", states, hint=name, axis=-1)
        shape = self.b.const(f"{name}/sequence_shape", np.array([-1, self.x.shape[0], node.hidden], np.int64))
        out = self.b.op("Reshape", [flat, shape], out=name, hint=name)
        self.b.dtype[out] = TensorProto.FLOAT
        return out


@emitter(ir.GRU)
def _emit_gru(b, node: ir.GRU, infos, graph_input):
    u = _Unrolled(b, node, infos)

    def step(gi, gh, h, carry, hint):
        r = u.gate("r", u.op("Add", [gi["r"], gh["r"]], hint), hint)
        z = u.gate("z", u.op("Add", [gi["z"], gh["z"]], hint), hint)
        n = u.gate("n", u.op("Add", [gi["n"], u.op("Mul", [r, gh["n"]], hint)], hint), hint)
        d = u.op("Neg", [n], hint) if h is None else u.op("Sub", [h, n], hint)
        return u.op("Add", [n, u.op("Mul", [z, d], hint)], hint), None  # n + z * (h - n)

    return u.run(step)


@emitter(ir.LSTM)
def _emit_lstm(b, node: ir.LSTM, infos, graph_input):
    u = _Unrolled(b, node, infos)

    def step(gi, gh, h, c, hint):
        i, f, g, o = (u.gate(k, u.op("Add", [gi[k], gh[k]], hint), hint) for k in node.gates)
        cell = u.op("Mul", [i, g], hint) if c is None else u.op("Add", [u.op("Mul", [f, c], hint), u.op("Mul", [i, g], hint)], hint)
        cq = u.quantize(cell, node.cell_type, f"{hint}/cell")
        return u.op("Mul", [o, u.lookup("c", cq, hint)], hint), u.widen(cq, hint)  # o * tanh(c)

    return u.run(step)


INPUT_NAME = "global_in"
OUTPUT_NAME = "global_out"


def to_onnx(graph: ir.Graph, expose_all: bool = False) -> onnx.ModelProto:
    """The graph as an onnxruntime model with a dynamic batch dimension ``N``.

    Every graph tensor keeps its name in the ONNX model; ``expose_all`` makes each one a graph
    output too (for tracing where two implementations diverge).
    """
    infos = graph.infos()
    b = _Builder()
    for node in graph.nodes:
        emit = EMITTERS.get(type(node))
        if emit is None:
            raise NotImplementedError(f"no ONNX emitter for {type(node).__name__}")
        emit(b, node, infos, INPUT_NAME)
    (last,) = graph.outputs
    b.nodes.append(helper.make_node("Identity", [last], [OUTPUT_NAME], name=OUTPUT_NAME))
    in_shape = ["N", *graph.input.shape]
    # float32, or float64 where the last node is an exact sum too wide for float32
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, b.dtype.get(last, TensorProto.FLOAT), ["N", *infos[last].shape])]
    if expose_all:
        outputs += [helper.make_tensor_value_info(n.name, b.dtype.get(n.name, TensorProto.FLOAT), None) for n in graph.nodes]
    g = helper.make_graph(
        b.nodes, graph.name, [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_shape)], outputs, b.inits
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeann")
    model.ir_version = IR_VERSION
    model.doc_string = (
        "edgeann fixed-point reference: quantizers truncate (floor) and saturate; accumulations are exact."
    )
    onnx.checker.check_model(model)
    return model


def save(graph: ir.Graph, path: Path) -> None:
    onnx.save(to_onnx(graph), str(path))


def session(model: onnx.ModelProto | Path | str, opts=None):
    """An onnxruntime CPU session. A model of an opset too old for onnxruntime's kernels (``Gemm(6)``, PyTorch's old
    exporter) is converted to opset 13 by onnx's version converter first."""
    import onnxruntime as ort

    if opts is None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        if "NOT_IMPLEMENTED" not in str(e) and "Could not find an implementation" not in str(e):
            raise
        from onnx import version_converter

        m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        if max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=OPSET) >= 13:
            raise
        m = copy.deepcopy(m)  # the converter wants whole dimensions: a dynamic batch is 1 while it converts
        io = list(m.graph.input) + list(m.graph.output)
        dynamic = [(vi.name, d.dim_param) for vi in io for d in vi.type.tensor_type.shape.dim[:1] if d.dim_param]
        for vi in io:
            for d in vi.type.tensor_type.shape.dim[:1]:
                if d.dim_param:
                    d.dim_value = 1
        newer = version_converter.convert_version(m, 13)
        params = dict(dynamic)
        for vi in list(newer.graph.input) + list(newer.graph.output):
            if vi.name in params:
                vi.type.tensor_type.shape.dim[0].dim_param = params[vi.name]
        return ort.InferenceSession(newer.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """onnxruntime on float32 input, in batches; returns the output as float64."""
    sess = model if hasattr(model, "run") else session(model)
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def run_any(path: Path | str, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """onnxruntime on any single-input ONNX model, its batch dimension made dynamic first."""
    model = onnx.load(str(path))
    model.graph.ClearField("value_info")
    initializers = {t.name for t in model.graph.initializer}  # inputs too in ONNX IR version 3
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and vi.name not in initializers:
            dims[0].dim_param = "N"
    sess = session(model)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    except Exception:
        if batch == 1 or len(x) <= 1:
            raise
        # a model that fixes its batch to one inside (a Reshape to (1, n), as the ONNX model zoo's MNIST does)
        # runs one sample at a time
        outs = [sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]
    return np.concatenate(outs).astype(np.float64)
