"""Exact elementwise requantization: float chains between an integer tensor and the next quantizer.

Foreign models compute in float between a product and the next quantizer: non-power-of-two scales and zero points,
per-channel weight scales, batch normalization (``BatchNormalization`` or its decomposed ``Sub``/``Div``/``Mul``/
``Add``), a sign (``BipolarQuant``), FINN's ``MultiThreshold``. Such ops, with constants for their other operands,
are collected in a :class:`Chain` on the integer tensor they start from. When a quantizer ends the chain, the whole
chain is one monotone function per channel from the tensor's reachable integers to the quantizer's codes: it is run
with the original model's own arithmetic (qonnx's executor: onnxruntime for standard ops, qonnx for its own) and its
steps found by bisection, which gives an :class:`edgeann.ir.Threshold` node. Exact by construction, whatever the
scales.

Where a tensor's codes have a float scale that is no power of two (the output of such a quantizer, a product with
per-channel or non-power-of-two weight scales), ``r.scales`` keeps it: a later product multiplies the scales, a later
chain starts from ``code * scale`` as the original computes it in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import Const, attributes, bit_width, op

# elementwise ops that a chain may hold: monotone in their one dynamic operand when the others are constants
CHAIN_OPS = ("Mul", "Div", "Add", "Sub", "BatchNormalization", "Relu", "Clip", "Neg", "Identity", "Dropout",
             "QuantizeLinear", "Cast")
MAX_STEPS = 1 << 12  # output codes one channel may step through: the firmware compares against each


@dataclass(frozen=True)
class Chain:
    """Float ops of the original model on graph tensor ``src``: ``start`` is the ONNX tensor holding ``src``'s float
    value in the original, ``nodes`` the ops after it in order."""

    src: str
    start: str
    nodes: tuple = field(default_factory=tuple)


def is_pow2(v) -> bool:
    v = np.asarray(v, np.float64).ravel()
    return v.size > 0 and bool(np.all(v == v[0])) and v[0] > 0 and math.frexp(float(v[0]))[0] == 0.5


def code_scale(r, src: str) -> np.ndarray:
    """The float value of one code of graph tensor ``src`` (per channel, or one for all)."""
    return r.scales.get(src, np.float64(r.info(src).type.scale))


def float_scaled(r, tensor: str) -> bool:
    """True when the ONNX tensor is (or is a chain on) a graph tensor whose scale is no power of two."""
    return tensor in r.chains or (tensor in r.alias and r.alias[tensor] in r.scales) or \
        (tensor in r.relu_of and r.relu_of[tensor] in r.scales)


def chain_of(r, tensor: str, where: str) -> Chain:
    if tensor in r.chains:
        return r.chains[tensor]
    if tensor in r.relu_of:  # a ReLU held for the quantizer: part of the chain
        src = r.relu_of[tensor]
        return Chain(src, f"{tensor}/relu_input", (helper.make_node("Relu", [f"{tensor}/relu_input"], [tensor]),))
    return Chain(r.dynamic(tensor, where), tensor)


def extend(r, node: onnx.NodeProto, where: str) -> None:
    """Add ``node`` (one dynamic operand, constants for the rest) to the chain on its dynamic operand."""
    dynamic = [i for i in node.input if i and i not in r.consts]
    if len(dynamic) != 1:
        raise EdgeannError(f"{where}: {node.op_type} of {len(dynamic)} activations is not supported (one activation "
                           "and constants)")
    if node.op_type not in CHAIN_OPS:
        raise EdgeannError(f"{where}: {node.op_type} between a product and its quantizer is not supported "
                           f"(supported: {', '.join(CHAIN_OPS)})")
    if node.op_type in ("Div", "Sub") and node.input[1] == dynamic[0] and node.op_type == "Div":
        raise EdgeannError(f"{where}: a constant divided by an activation is not monotone; not supported")
    chain = chain_of(r, dynamic[0], where)
    r.chains[node.output[0]] = Chain(chain.src, chain.start, (*chain.nodes, node))


def unended(r, tensor: str, where: str) -> EdgeannError:
    chain = r.chains[tensor]
    ops = ", ".join(n.op_type for n in chain.nodes) or "a scale that is no power of two"
    return EdgeannError(f"{where}: float arithmetic ({ops}) on {chain.src} is read without a quantizer after it; "
                        "edgeann requantizes such chains exactly only into a following Quant, BipolarQuant or "
                        "MultiThreshold")


# --------------------------------------------------------------------------------------------
# Running a chain with the original's arithmetic


@dataclass(frozen=True)
class Layout:
    """Where a chain's channels are in its ONNX tensors: axis 1 of a channels-first (or 2-D) tensor, the one axis
    that is not 1 of a vector (an Unsqueeze to (N, C, 1) around a BatchNormalization), the last axis of a tensor
    whose ONNX layout is the graph's channels-last one (a (1, 10, 49) input quantized per column)."""

    rank: int
    axis: int = 1

    def per_sample(self, channels: int) -> tuple[int, ...]:
        """The per-sample shape a chain is evaluated on: the channels on the axis, ones elsewhere."""
        return tuple(channels if a == self.axis else 1 for a in range(1, self.rank))


def _chain_layout(r, tensor: str, channels: int, where: str) -> Layout:
    shape = r.shape.get(tensor)
    rank = len(shape) if shape else 2
    if rank <= 2 or tensor in r.cf:
        if shape and rank > 1 and shape[1] not in (None, channels):
            raise EdgeannError(f"{where}: the tensor {tensor} of shape {shape} does not have its {channels} channels on "
                               "axis 1")
        return Layout(rank)
    if None not in shape[1:] and int(np.prod(shape[1:])) == channels:  # a vector with unit axes, e.g. (N, C, 1)
        return Layout(rank, next(a for a in range(1, rank) if shape[a] == channels))
    if shape[-1] not in (None, channels):
        raise EdgeannError(f"{where}: the tensor {tensor} of shape {shape} does not have its {channels} channels on "
                           "its last axis")
    return Layout(rank, rank - 1)


def _check_per_channel(r, nodes, layout: Layout, where: str) -> None:
    """Every constant of the chain is one value per channel (on the layout's axis): the chain is then one function
    per channel."""
    for node in nodes:
        if node.op_type == "BatchNormalization" and layout.axis != 1:
            raise EdgeannError(f"{where}: a BatchNormalization acts on axis 1, but this tensor's channels are on axis "
                               f"{layout.axis}; not supported")
        for name in node.input:
            if name and name in r.consts and node.op_type not in ("BatchNormalization", "MultiThreshold", "Quant",
                                                                  "BipolarQuant", "QuantizeLinear",
                                                                  "DequantizeLinear"):
                shape = np.shape(r.consts[name].values)
                aligned = (1,) * (layout.rank - len(shape)) + tuple(shape)
                if len(shape) > layout.rank or any(d != 1 for a, d in enumerate(aligned) if a != layout.axis):
                    raise EdgeannError(f"{where}: constant {name} of shape {shape} in {node.op_type} is not one value "
                                       "per channel; only per-channel (or per-tensor) constants can be requantized "
                                       "exactly")


def _submodel(r, chain: Chain, end: onnx.NodeProto, batch: int, per_sample: tuple[int, ...]) -> onnx.ModelProto:
    nodes = [*chain.nodes, end]
    names = {i for n in nodes for i in n.input if i and i in r.consts}
    inits = [numpy_helper.from_array(np.asarray(r.consts[k].values), k) for k in sorted(names)]
    shape = [batch, *per_sample]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(chain.start, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(end.output[0], TensorProto.FLOAT, shape)], inits)
    opsets = [o for o in r.model.opset_import]
    return helper.make_model(g, opset_imports=opsets)


def run_chain(r, chain: Chain, end: onnx.NodeProto, values: np.ndarray, per_sample: tuple[int, ...]) -> np.ndarray:
    """The original's output of ``end`` for float32 ``values`` (m, channels) at the chain's start, by qonnx's
    executor (the verification's reference)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    m = len(values)
    model = ModelWrapper(_submodel(r, chain, end, m, per_sample)).transform(InferShapes())
    x = np.asarray(values, np.float32).reshape(m, *per_sample)
    y = execute_onnx(model, {chain.start: x})[end.output[0]]
    return np.asarray(y).reshape(m, -1)


def tabulate(f, lo: int, hi: int, channels: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, start, step) of the monotone functions ``f`` (codes (m, channels) -> codes) on the integers
    [lo, hi]: each threshold is the smallest input reaching the next output code, found by bisection."""
    f_lo, f_hi = f(np.array([[lo] * channels, [hi] * channels], np.int64))
    up = f_hi >= f_lo
    n = np.abs(f_hi - f_lo)
    k = int(n.max(initial=0))
    if k > MAX_STEPS:
        raise EdgeannError(f"{where}: the output steps through {k} codes over the input's range; at most {MAX_STEPS} "
                           "thresholds per channel are built (narrow the quantizer)")
    step = np.where(up, 1, -1).astype(np.int64)
    levels = np.arange(1, k + 1, dtype=np.int64)[:, None]  # (k, 1)
    target = f_lo[None, :] + step[None, :] * levels  # (k, channels)
    valid = levels <= n[None, :]
    a = np.full((k, channels), lo, np.int64)  # f(a) has not reached the target (f(lo) = f_lo)
    b = np.full((k, channels), hi, np.int64)  # f(b) has, for the valid pairs
    while k:
        gap = valid & (b - a > 1)
        if not gap.any():
            break
        mid = a + (b - a) // 2
        y = f(mid)
        reached = np.where(up[None, :], y >= target, y <= target)
        b = np.where(gap & reached, mid, b)
        a = np.where(gap & ~reached, mid, a)
    thresholds = np.where(valid, b, hi + 1).T if k else np.full((channels, 1), hi + 1, np.int64)
    # monotone by construction of the ops; check the steps found reproduce f at every threshold and just below
    probe = np.concatenate([thresholds.T, thresholds.T - 1]).clip(lo, hi)
    expected = f(probe)
    node = ir.Threshold("check", ["x"], thresholds=np.ascontiguousarray(thresholds), start=f_lo, step=step)
    if not np.array_equal(node.codes_at(probe), expected):
        raise EdgeannError(f"{where}: the float chain is not monotone over the input's range; cannot requantize it "
                           "with thresholds")
    return np.ascontiguousarray(thresholds), f_lo.astype(np.int64), step


def _near_ties(thresholds: np.ndarray, info: ir.TensorInfo, scale: np.ndarray, g) -> int:
    """How many steps of the function sit within float32 rounding of the original's arithmetic: the original sums
    a product with scales that are no power of two in float32, so its value there is ``code x scale`` only up to a
    few units in the last place, and its order of summation decides the output where a quantizer's rounding
    boundary lies that close. Each step (and the code below it) is probed 4 units in the last place either side."""
    t = np.asarray(thresholds, np.int64)
    live = (t > info.lo) & (t <= info.hi)
    if not live.any():
        return 0
    rows = np.concatenate([t.T, t.T - 1]).clip(info.lo, info.hi)  # (2k, channels)
    values = (rows.astype(np.float64) * scale[None, :]).astype(np.float32)
    base = g(values)
    moved = np.zeros(rows.shape, bool)
    for direction in (np.inf, -np.inf):
        v = values
        for _ in range(4):
            v = np.nextafter(v, np.float32(direction)).astype(np.float32)
        moved |= g(v) != base
    k = t.shape[1]
    return int(np.count_nonzero((moved[:k] | moved[k:]) & live.T))


# --------------------------------------------------------------------------------------------
# Quantizers that end a chain: what their outputs' codes and types are


@dataclass(frozen=True)
class Codes:
    """An end quantizer's output grid: value = code * ``scale`` (per channel or one), codes in [lo, hi]."""

    scale: np.ndarray
    lo: int
    hi: int
    narrow_bipolar: bool = False

    def decode(self, y: np.ndarray, where: str) -> np.ndarray:
        y64 = np.asarray(y, np.float64)
        k = np.rint(y64 / self.scale)
        if not np.array_equal(np.asarray(k * self.scale, np.float32), np.asarray(y, np.float32)):
            raise EdgeannError(f"{where}: the quantizer's outputs are not integer multiples of its scale")
        return k.astype(np.int64)

    def type(self) -> tuple[ir.FixedType, np.ndarray | None]:
        """The graph type of the codes and the float scale to keep (None when the scale is one power of two)."""
        s = np.asarray(self.scale, np.float64)
        frac = 1 - math.frexp(float(s.ravel()[0]))[1] if is_pow2(s) else 0
        if self.narrow_bipolar:
            t = ir.FixedType(2, frac, True, narrow=True)
        elif self.lo >= 0:
            t = ir.FixedType(max(int(self.hi).bit_length(), 1), frac, signed=False)
        else:
            t = ir.FixedType.covering(self.lo, self.hi, frac)
            if -self.lo == self.hi:
                t = ir.FixedType(t.width, frac, True, narrow=True)
        return t, (None if is_pow2(s) else (s.ravel() if s.size > 1 else np.float64(s.ravel()[0])))


def _per_channel(value, channels: int, layout: Layout, where: str, what: str) -> np.ndarray:
    v = np.asarray(value, np.float64)
    if what == "batch norm":  # its parameters are 1-D, for axis 1 of its input whatever the rank
        if layout.axis != 1 or v.size not in (1, channels):
            raise EdgeannError(f"{where}: batch norm of shape {v.shape} does not act on the {channels} channels of "
                               "this tensor")
        return v.reshape(()) if v.size == 1 else v.reshape(channels)
    if v.size == 1:
        return v.reshape(())
    if v.ndim > layout.rank:
        raise EdgeannError(f"{where}: {what} of shape {v.shape} is not one value per channel")
    aligned = v.reshape((1,) * (layout.rank - v.ndim) + v.shape)
    if any(d != 1 for a, d in enumerate(aligned.shape) if a != layout.axis) or aligned.shape[layout.axis] != channels:
        raise EdgeannError(f"{where}: {what} of shape {v.shape} is not one value per channel")
    return aligned.reshape(channels)


def quant_codes(r, node, where: str, channels: int, layout: Layout) -> Codes:
    _, scale, zero, bits = (list(node.input) + [None] * 4)[:4]
    attrs = attributes(node)
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    width = bit_width(r.const(bits, where).values, where, lo=1)
    z = np.asarray(r.const(zero, where).values, np.float64)
    if np.any(z != np.round(z)) or np.unique(z).size > 1:
        raise EdgeannError(f"{where}: zero point {np.unique(z)[:4].tolist()} is not one integer; not supported")
    z = int(z.ravel()[0])
    s = _per_channel(r.const(scale, where).values, channels, layout, where, "scale")
    if width == 1 and signed:  # qonnx takes the sign of x / scale + zero point, then subtracts the zero point
        return Codes(s, -1, 1, narrow_bipolar=True) if z == 0 else Codes(s, -1 - z, 1 - z)
    if signed:
        q_lo, q_hi = -(1 << (width - 1)) + (1 if narrow else 0), (1 << (width - 1)) - 1
    else:
        q_lo, q_hi = 0, (1 << width) - 1 - (1 if narrow else 0)
    return Codes(s, q_lo - z, q_hi - z)


def end_chain(r, node: onnx.NodeProto, where: str, codes_of) -> None:
    """The quantizer ``node`` ends the chain on its first input: emit the chain as one Threshold node.
    ``codes_of(channels, layout)`` describes the quantizer's output grid."""
    x = node.input[0]
    chain = chain_of(r, x, where)
    info = r.info(chain.src)
    channels = info.shape[-1] if info.shape else 1
    layout = _chain_layout(r, chain.start, channels, where)
    per_sample = layout.per_sample(channels)
    _check_per_channel(r, (*chain.nodes, node), layout, where)
    grid = codes_of(channels, layout)
    scale = np.broadcast_to(np.asarray(code_scale(r, chain.src), np.float64), (channels,))

    def f(codes: np.ndarray) -> np.ndarray:
        values = (codes.astype(np.float64) * scale[None, :]).astype(np.float32)
        return grid.decode(run_chain(r, chain, node, values, per_sample), where)

    thresholds, start, step = tabulate(f, info.lo, info.hi, channels, where)
    near = 0
    if chain.src in r.scales and isinstance(next((n for n in r.nodes if n.name == chain.src), None), (ir.Dense, ir.Conv)):
        near = _near_ties(thresholds, info, scale, lambda v: grid.decode(run_chain(r, chain, node, v, per_sample), where))
    t, float_scale = grid.type()
    name = r.unique(node.name or f"threshold_{chain.src}")
    affine = ir.affine_form(thresholds, start, step, info.lo, info.hi)
    form = {} if affine is None else dict(zip(("multiplier", "offset", "shift", "exact", "line"), affine))
    r.alias[node.output[0]] = r.emit(ir.Threshold(name, [chain.src], thresholds=thresholds, start=start, step=step,
                                                  type=t, near_ties=near, **form))
    if float_scale is not None:
        r.scales[name] = float_scale


# --------------------------------------------------------------------------------------------
# Readers


def needs_chain(r, node) -> bool:
    """``node`` (an elementwise op with constants) belongs in a chain: it reads one, or a float-scaled tensor, or the
    model is QONNX (whose elementwise float ops always sit between a product and a quantizer), or it reads an input
    whose type --input-precision names."""
    dynamic = [i for i in node.input if i and i not in r.consts]
    typed_input = r.input_precision is not None and r.graph_input in dynamic  # float ops on an input given a type
    return any(float_scaled(r, d) for d in dynamic) or typed_input or \
        (r.qonnx and not any(d in r.pending for d in dynamic))


@op("Sub")
@op("Div")
@op("BatchNormalization")
@op("Neg")
def read_elementwise(r, node, where):
    extend(r, node, where)


@op("MultiThreshold")
def read_multithreshold(r, node, where):
    x, thr = node.input[:2]
    attrs = attributes(node)
    out_scale = float(attrs.get("out_scale", 1.0))
    out_bias = float(attrs.get("out_bias", 0.0))
    layout = attrs.get("data_layout", b"NCHW")
    layout = layout.decode() if isinstance(layout, bytes) else str(layout)
    if layout not in ("NCHW", "NC"):
        raise EdgeannError(f"{where}: MultiThreshold with data_layout {layout} is not supported (NCHW)")
    n = np.shape(r.const(thr, where).values)[-1]
    base = out_bias / out_scale
    if base != round(base) or out_scale == 0:
        raise EdgeannError(f"{where}: out_bias {out_bias!r} is not a whole number of out_scale {out_scale!r}")
    scale = abs(out_scale)
    lo, hi = sorted((int(base), int(base) + (n if out_scale > 0 else -n)))
    end_chain(r, node, where, lambda channels, layout: Codes(np.float64(scale), lo, hi))


def read_bipolar_activation(r, node, where):
    def grid(channels, layout):
        s = _per_channel(r.const(node.input[1], where).values, channels, layout, where, "scale")
        return Codes(s, -1, 1, narrow_bipolar=True)

    end_chain(r, node, where, grid)


def read_quant_activation(r, node, where):
    end_chain(r, node, where, lambda channels, layout: quant_codes(r, node, where, channels, layout))


def quant_constant(values: np.ndarray, scale, zero, width: int, signed: bool, narrow: bool, rounding: str,
                   where: str) -> Const:
    """A Quant on a constant whose scale is no power of two (or per channel): the codes, and the values exactly as
    qonnx's executor computes them."""
    from qonnx.custom_op.general.intquant import int_quant

    z = np.asarray(zero, np.float64)
    if np.any(z != 0):
        raise EdgeannError(f"{where}: a weight quantizer with a nonzero zero point is not supported")
    s = np.asarray(scale)
    v = np.asarray(values)
    out = np.asarray(int_quant(v, s, np.asarray(zero), np.float32(width), signed, narrow, rounding), np.float32)
    ints = np.rint(np.asarray(out, np.float64) / np.asarray(s, np.float64)).astype(np.int64)
    if width == 1 and signed:
        t = ir.FixedType(2, 0, True, narrow=True)
    else:
        t = ir.FixedType(width, 0, signed, narrow) if width > 1 or not signed else ir.FixedType(2, 0)
    return Const(np.asarray(out), ints, t, np.asarray(s, np.float64))


def end_trailing(r, tensor: str, where: str) -> None:
    """A chain that reaches the model's output with no quantizer after it. A bias ``Add`` on a float-scaled product
    whose values are whole multiples of each output's scale (Brevitas' ``Int32Bias``/``Int16Bias`` quantize it so)
    joins the product exactly: the firmware ends at the accumulator's codes and its scale is kept. Anything else
    is refused: a float result has no exact fixed-point equivalent."""
    chain = r.chains[tensor]
    layer = next((n for n in r.nodes if n.name == chain.src), None)
    if (len(chain.nodes) == 1 and chain.nodes[0].op_type == "Add" and isinstance(layer, ir.Dense)
            and chain.src in r.scales and not np.any(layer.bias)):
        add = chain.nodes[0]
        c = r.consts[next(i for i in add.input if i in r.consts)]
        scale = np.broadcast_to(np.asarray(r.scales[chain.src], np.float64), (layer.n_out,))
        ints = _bias_codes(c, scale, layer.n_out)
        if ints is not None:
            layer.bias = ints
            layer.bias_type = ir.FixedType.covering(int(ints.min(initial=0)), int(ints.max(initial=0)),
                                                    layer.bias_type.frac)
            r.chains.pop(tensor)
            r.alias[tensor] = chain.src
            return
    coefficients = _affine(r, chain, where)
    if coefficients is None:
        raise unended(r, tensor, where)
    gain, offset = coefficients
    r.chains.pop(tensor)
    r.alias[tensor] = chain.src
    r.output_offset = offset
    r.output_gain = gain


def fixed_point_affine(r, tensor: str, where: str) -> tuple[str, int, np.ndarray]:
    """A float chain before a product that is exact fixed-point arithmetic: ``value = 2^-f (code + k)`` with one
    power-of-two gain and a whole number of codes ``k`` per channel (FINN's UNSW-NB15 MLP reads ``(x + 1) / 2`` of
    its bipolar input). Returns (the integer tensor, how many bits the gain moves the grid, ``k``), after checking
    on every code of the input's range that the original's float32 arithmetic computes exactly that. Anything
    else is refused: a float product of float values has no exact fixed-point equivalent."""
    chain = r.chains[tensor]
    info = r.info(chain.src)
    channels = info.shape[-1] if info.shape else 1
    coefficients = _affine(r, chain, where) if len(info.shape) == 1 else None
    refuse = EdgeannError(
        f"{where}: float arithmetic ({', '.join(n.op_type for n in chain.nodes)}) on {chain.src} enters this "
        "product unquantized, and it is not exact fixed-point arithmetic (a power-of-two gain and whole-code offsets); "
        "edgeann requantizes float chains exactly only into a following Quant, BipolarQuant or MultiThreshold")
    if coefficients is None or chain.src in r.scales:
        raise refuse
    gain, offset = np.broadcast_to(coefficients[0], (channels,)), np.broadcast_to(coefficients[1], (channels,))
    g = float(gain[0])
    mantissa, exponent = math.frexp(abs(g))
    k = offset / g
    if np.any(gain != g) or g <= 0 or mantissa != 0.5 or np.any(k != np.rint(k)) or info.hi - info.lo > 1 << 16:
        raise refuse
    k = np.rint(k).astype(np.int64)
    codes = np.arange(info.lo, info.hi + 1, dtype=np.int64)
    values = np.broadcast_to((codes * info.type.scale).astype(np.float32)[:, None], (len(codes), channels))
    last = chain.nodes[-1]
    probe = helper.make_node("Identity", [last.output[0]], [f"{last.output[0]}/probe"])
    layout = _chain_layout(r, chain.start, channels, where)
    got = run_chain(r, chain, probe, values, layout.per_sample(channels))
    if not np.array_equal(got, ((codes[:, None] + k[None, :]) * g).astype(np.float32)):
        raise refuse
    r.chains.pop(tensor)
    return chain.src, 1 - exponent - info.type.frac, k


AFFINE_OPS = ("Mul", "Div", "Add", "Sub", "Neg", "Identity", "Dropout", "BatchNormalization")


def _affine(r, chain: Chain, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(gain, offset)`` per channel (float64) of a trailing chain of affine ops on per-channel constants (FINN's
    ``TensorNorm``, a dequantizing scale, a float bias): the output is ``gain * code + offset``, where ``code`` is the
    accumulator's. None when an op of the chain is not affine."""
    info = r.info(chain.src)
    channels = info.shape[-1] if info.shape else 1
    layout = _chain_layout(r, chain.start, channels, where)
    a = np.broadcast_to(np.asarray(code_scale(r, chain.src), np.float64), (channels,)).copy()
    b = np.zeros(channels)
    current = chain.start
    for node in chain.nodes:
        if node.op_type not in AFFINE_OPS:
            return None
        if node.op_type == "BatchNormalization":
            g, beta, mean, var = (_per_channel(r.const(i, where).values, channels, layout, where, "batch norm")
                                  for i in node.input[1:5])
            k = g / np.sqrt(var + float(attributes(node).get("epsilon", 1e-5)))
            a, b = a * k, (b - mean) * k + beta
        elif node.op_type == "Neg":
            a, b = -a, -b
        elif node.op_type in ("Identity", "Dropout"):
            pass
        else:
            first = node.input[0] == current
            c = _per_channel(r.const(node.input[1] if first else node.input[0], where).values, channels, layout, where,
                             "constant")
            if node.op_type == "Mul":
                a, b = a * c, b * c
            elif node.op_type == "Div" and first:
                a, b = a / c, b / c
            elif node.op_type == "Add":
                b = b + c
            elif node.op_type == "Sub":
                a, b = (a, b - c) if first else (-a, c - b)
            else:
                return None
        current = node.output[0]
    if np.any(a == 0):
        return None
    return a, b


def _bias_codes(c: Const, scale: np.ndarray, n_out: int) -> np.ndarray | None:
    """The bias as whole codes of the accumulator's grid ``scale`` (per output), or None. A quantized bias (codes and
    a scale) qualifies when its scale is the accumulator's up to float32 rounding of that product of scales (what
    Brevitas writes); a float bias when it is a whole multiple of the grid."""
    if c.ints is not None and c.scale is not None and c.ints.size in (1, n_out):
        bias_scale = np.broadcast_to(np.asarray(c.scale, np.float64).ravel(), (n_out,)) if np.size(c.scale) in (1, n_out) \
            else None
        if bias_scale is not None and np.all(np.abs(bias_scale / scale - 1) < 2.0**-20):
            return np.broadcast_to(c.ints.ravel(), (n_out,)).astype(np.int64)
    b = np.asarray(c.values, np.float64).ravel()
    if b.size not in (1, n_out):
        return None
    b = np.broadcast_to(b, (n_out,))
    ints = np.rint(b / scale)
    return ints.astype(np.int64) if np.array_equal((ints * scale).astype(np.float32), b.astype(np.float32)) else None


def _axis_scale(r, node, where, shape: tuple[int, ...]) -> np.ndarray:
    """The scale of a (De)QuantizeLinear broadcast to ``shape``: per tensor, or along its ``axis``."""
    s = np.asarray(r.const(node.input[1], where).values, np.float64)
    if s.size == 1:
        return s.reshape(())
    axis = attributes(node).get("axis", 1) % len(shape)
    return s.reshape([s.size if a == axis else 1 for a in range(len(shape))])


def dequantize_constant(r, node, where) -> Const:
    """A ``DequantizeLinear`` of integer constants with a float scale or a zero point (per tensor or per axis): the
    codes minus the zero point, and the values as onnxruntime computes them."""
    q = np.asarray(r.consts[node.input[0]].values)
    zero = np.asarray(r.const(node.input[2], where).values) if len(node.input) > 2 and node.input[2] else np.zeros((), q.dtype)
    scale = _axis_scale(r, node, where, q.shape)
    z = zero.astype(np.int64).reshape(scale.shape) if zero.size > 1 else zero.astype(np.int64).reshape(())
    ints = q.astype(np.int64) - z
    values = (ints.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)
    t = ir.FixedType.covering(int(ints.min(initial=0)), int(ints.max(initial=0)), 0)
    if ints.min(initial=0) >= 0:
        t = ir.FixedType(max(int(ints.max(initial=0)).bit_length(), 1), 0, signed=False)
    return Const(values, ints, t, scale)


def read_dequantize_chain(r, node, where):
    """``DequantizeLinear`` after a ``QuantizeLinear`` (and ``Clip``) on a float chain: the codes q - zero point."""
    chain = r.chains[node.input[0]]
    if not chain.nodes or chain.nodes[-1].op_type not in ("QuantizeLinear", "Clip") or \
            not any(n.op_type == "QuantizeLinear" for n in chain.nodes):
        raise EdgeannError(f"{where}: DequantizeLinear of a tensor that is not a QuantizeLinear output")

    def grid(channels, layout):
        s = _per_channel(r.const(node.input[1], where).values, channels, layout, where, "scale")
        zero = r.const(node.input[2], where).values if len(node.input) > 2 and node.input[2] else np.uint8(0)
        zero = np.asarray(zero)
        if zero.size != 1:
            raise EdgeannError(f"{where}: per-axis zero points on activations are not supported")
        info = np.iinfo(zero.dtype)
        z = int(zero.ravel()[0])
        return Codes(s, int(info.min) - z, int(info.max) - z)

    end_chain(r, node, where, grid)
