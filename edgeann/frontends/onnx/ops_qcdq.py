"""QCDQ ONNX: ``QuantizeLinear`` / ``Clip`` / ``DequantizeLinear``, and the power-of-two ``Mul`` / ``Floor`` /
``Round`` chains that put a value on a grid first (edgeann's own ``model.onnx``,
:mod:`edgeann.backends.onnx_qcdq`; Brevitas' ``export_onnx_qcdq``; onnxruntime's quantization tools).

A quantizer is spread over several nodes, so its pieces are collected in a :class:`Pending` value and only
become one :class:`~edgeann.ir.Quantize` (or the :class:`~edgeann.ir.Input`, or a :class:`~edgeann.ir.Relu`)
when something other than these ops reads it. Only power-of-two scales and zero zero points are ap_fixed
types; any other quantizer is refused, naming its node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from onnx import TensorProto

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import Const, attributes, op

_STORAGE = {np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max))
            for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)}


def power_of_two(value, where: str, what: str) -> int:
    """``k`` such that every element of ``value`` is ``2**k``; refused otherwise."""
    v = np.asarray(value, np.float64).ravel()
    if v.size == 0 or not np.all(v == v[0]):
        raise EdgeannError(f"{where}: per-channel {what}s are not supported yet; one power of two per tensor is needed")
    mantissa, exponent = math.frexp(float(v[0]))
    if v[0] <= 0 or mantissa != 0.5:
        raise EdgeannError(f"{where}: {what} {float(v[0])!r} is not a power of two, so no ap_fixed type holds it "
                           "exactly (requantization with thresholds or tables is not supported yet)")
    return exponent - 1


def _zero_point(r, node, where) -> np.dtype:
    """The storage type named by the zero point (uint8 when there is none, as the ONNX standard says)."""
    if len(node.input) < 3 or not node.input[2]:
        return np.dtype(np.uint8)
    zero = r.const(node.input[2], where).values
    if np.any(zero != 0):
        raise EdgeannError(f"{where}: zero point {np.unique(zero)[:4].tolist()} is not 0: an asymmetric quantizer has "
                           "no ap_fixed equivalent (not supported yet)")
    if zero.dtype not in _STORAGE:
        raise EdgeannError(f"{where}: zero point of type {zero.dtype} is not supported")
    return zero.dtype


@dataclass(frozen=True)
class Pending:
    """A quantizer being read, on graph tensor ``src`` (``relu``: of ``max(src, 0)``).

    Its value is ``y * 2**shift`` where ``y`` is ``src`` before any rounding and ``round(src * 2**frac)`` after
    (``rounding``), saturated to the codes ``lo``..``hi`` (grid ``2**-frac``); ``codes``: the tensor holds
    those integer codes (a ``QuantizeLinear`` output) rather than values; ``float32``: it went through a
    float32 ``Cast`` (exact when the result has at most 24 bits)."""

    src: str
    relu: bool = False
    shift: int = 0
    frac: int | None = None
    rounding: str | None = None
    lo: int | None = None
    hi: int | None = None
    codes: bool = False
    float32: bool = False

    def bounded(self, lo: int, hi: int) -> Pending:
        return replace(self, lo=lo if self.lo is None else max(self.lo, lo), hi=hi if self.hi is None else min(self.hi, hi))

    def materialize(self, r, where: str) -> str:
        """The graph tensor this value is: one quantizer node (or ``src`` itself)."""
        if self.codes:
            raise EdgeannError(f"{where}: reads integer codes of a QuantizeLinear without a DequantizeLinear")
        if self.rounding is None:
            if self.shift or self.lo is not None:
                raise EdgeannError(f"{where}: a scaling by 2^{self.shift} that no quantizer follows is not supported")
            src = r.dynamic(self.src, where)
            return r.emit(ir.Relu(r.unique(f"relu_{src}"), [src], type=r.relu_passthrough(src))) if self.relu else src
        if self.shift != -self.frac:
            raise EdgeannError(f"{where}: a value rounded onto the grid 2^{-self.frac} is scaled by 2^{self.shift + self.frac}; "
                               "only a quantizer's own dequantization is supported")
        t = self._type(r, where)
        if self.float32 and t.width > 24:
            raise EdgeannError(f"{where}: a {t.width}-bit quantizer computed in float32 is not exact")
        rnd = self.rounding
        if self.src == r.graph_input and r.graph_input not in r.alias and not self.relu:
            r.quantizer_on_input(where)
            return r.emit(ir.Input("input", [], shape=r.in_shape, type=t, rounding=rnd))
        if self.relu:
            return r.emit(ir.Relu(r.unique(f"relu_{self.src}"), [self.src], type=t, rounding=rnd))
        return r.emit(ir.Quantize(r.unique(f"quant_{self.src}"), [self.src], type=t, rounding=rnd))

    def _type(self, r, where: str) -> ir.FixedType:
        """The ap_fixed type whose range is the saturation ``lo``..``hi``; a range the values never reach need not be
        one (it is then the narrowest type holding every reachable code)."""
        lo, hi = self.lo, self.hi
        for t in _types_with_range(lo, hi, self.frac):
            return t
        if self.src == r.graph_input and r.graph_input not in r.alias:
            raise EdgeannError(f"{where}: the input quantizer saturates to [{lo}, {hi}] x 2^{-self.frac}, not the range "
                               "of an ap_fixed type")
        x = r.info(self.src)
        wide = ir.FixedType(62, self.frac)
        reach = ir.requantize(np.array([max(x.lo, 0) if self.relu else x.lo, max(x.hi, 0) if self.relu else x.hi]),
                              x.type.frac, wide, self.rounding)
        r_lo, r_hi = int(reach[0]), int(reach[1])
        if (lo is not None and r_lo < lo) or (hi is not None and r_hi > hi):
            raise EdgeannError(f"{where}: saturation to [{lo}, {hi}] x 2^{-self.frac} is not the range of an ap_fixed type")
        if r_lo >= 0:
            width = max(int(r_hi).bit_length(), 1)
            return ir.FixedType(width, self.frac, signed=False)
        return ir.FixedType.covering(r_lo, r_hi, self.frac)


def _types_with_range(lo: int | None, hi: int | None, frac: int):
    if lo is None or hi is None or hi < 1:
        return
    width = (hi + 1).bit_length() - 1
    if (1 << width) - 1 == hi and lo == 0:
        yield ir.FixedType(width, frac, signed=False)
    width += 1
    if (1 << (width - 1)) - 1 == hi and lo in (-(1 << (width - 1)), -(1 << (width - 1)) + 1):
        yield ir.FixedType(width, frac, signed=True, narrow=lo != -(1 << (width - 1)))


def pending(r, tensor: str, where: str) -> Pending:
    """The quantizer being read at ``tensor``, a new one when ``tensor`` is a plain graph tensor."""
    if tensor in r.pending:
        return r.pending[tensor]
    if tensor in r.consts:
        raise EdgeannError(f"{where}: a constant here should have been folded")
    if tensor in r.relu_of:
        return Pending(r.relu_of[tensor], relu=True)
    if tensor == r.graph_input and tensor not in r.alias:
        r.quantizer_on_input(where)
        return Pending(tensor)
    return Pending(r.dynamic(tensor, where))


@op("Mul")
def read_mul(r, node, where):
    from edgeann.frontends.onnx import ops_requant

    if ops_requant.needs_chain(r, node):
        ops_requant.extend(r, node, where)
        return
    a, b = node.input
    dyn, const = (a, b) if b in r.consts else (b, a)
    if const not in r.consts:
        raise EdgeannError(f"{where}: Mul of two activations is not supported")
    k = power_of_two(r.consts[const].values, where, "factor")
    p = pending(r, dyn, where)
    if p.codes:
        raise EdgeannError(f"{where}: Mul of QuantizeLinear codes is not supported")
    r.pending[node.output[0]] = replace(p, shift=p.shift + k)


def _round(r, node, where, rounding: str):
    p = pending(r, node.input[0], where)
    if p.codes or p.lo is not None:
        raise EdgeannError(f"{where}: {node.op_type} after saturation is not supported")
    if p.rounding is None:
        p = replace(p, frac=p.shift, rounding=rounding, shift=0)
    elif p.shift >= 0:
        pass  # already an integer
    elif p.rounding == rounding == "floor":  # floor(floor(y) * 2^-k) == floor(y * 2^-k)
        p = replace(p, frac=p.frac + p.shift, shift=0)
    else:
        raise EdgeannError(f"{where}: a second rounding of an already rounded value is not supported")
    r.pending[node.output[0]] = p


@op("Floor")
def read_floor(r, node, where):
    _round(r, node, where, "floor")


@op("Round")
def read_round(r, node, where):
    _round(r, node, where, "half_even")  # ONNX Round is half to even


def _fixed_point(r, node, where) -> bool:
    """One power-of-two scale and a zero zero point: the quantizer is an ap_fixed type."""
    from edgeann.frontends.onnx.ops_requant import is_pow2

    zero = r.const(node.input[2], where).values if len(node.input) > 2 and node.input[2] else 0
    return is_pow2(r.const(node.input[1], where).values) and not np.any(np.asarray(zero) != 0)


@op("QuantizeLinear")
def read_quantize_linear(r, node, where):
    from edgeann.frontends.onnx import ops_requant

    x, scale = node.input[:2]
    if x not in r.consts and x not in r.pending and (not _fixed_point(r, node, where) or ops_requant.float_scaled(r, x)):
        # a float scale or zero point: the quantizer joins the float chain before it, which its DequantizeLinear ends
        if x == r.graph_input and r.graph_input not in r.alias and r.input_precision is None:
            raise EdgeannError(f"{where}: the model input {r.input_label} is quantized with a scale or zero point that "
                               "no ap_fixed input port holds; pass --input-precision 'ap_fixed<W,I>' to name the "
                               "firmware's input type (the quantizer then becomes exact thresholds)")
        ops_requant.extend(r, node, where)
        return
    attrs = attributes(node)
    if attrs.get("saturate", 1) != 1 or (np.asarray(r.const(scale, where).values).size > 1):
        raise EdgeannError(f"{where}: per-axis or non-saturating QuantizeLinear is not supported yet")
    f = -power_of_two(r.const(scale, where).values, where, "scale")
    storage = _zero_point(r, node, where)
    if x in r.consts:
        raise EdgeannError(f"{where}: QuantizeLinear of a constant should have been folded")
    p = pending(r, x, where)
    if p.codes:
        raise EdgeannError(f"{where}: QuantizeLinear of codes is not supported")
    if p.rounding is None:  # QuantizeLinear rounds half to even itself
        if p.shift != 0 or p.lo is not None:
            raise EdgeannError(f"{where}: a scaling by 2^{p.shift} before QuantizeLinear is not supported")
        p = replace(p, frac=f, rounding="half_even")
    elif p.shift != -p.frac or p.frac != f:
        raise EdgeannError(f"{where}: scale 2^{-f} does not match the grid 2^{-p.frac} its input was rounded onto")
    r.pending[node.output[0]] = replace(p.bounded(*_STORAGE[storage]), codes=True, shift=0)


@op("DequantizeLinear")
def read_dequantize_linear(r, node, where):
    from edgeann.frontends.onnx import ops_requant

    x, scale = node.input[:2]
    if x in r.chains:  # the end of a float-scaled QuantizeLinear -> (Clip) -> DequantizeLinear on a float chain
        ops_requant.read_dequantize_chain(r, node, where)
        return
    if x in r.consts and not _fixed_point(r, node, where):
        r.consts[node.output[0]] = ops_requant.dequantize_constant(r, node, where)
        return
    frac = -power_of_two(r.const(scale, where).values, where, "scale")
    _zero_point(r, node, where)
    if x in r.consts:  # quantized weights and biases
        ints = np.asarray(r.consts[x].values).astype(np.int64)
        r.consts[node.output[0]] = Const(ints * 2.0**-frac, ints,
                                         ir.FixedType.covering(int(ints.min(initial=0)), int(ints.max(initial=0)), frac))
        return
    p = pending(r, x, where)
    if not p.codes:
        raise EdgeannError(f"{where}: DequantizeLinear of a tensor that is not a QuantizeLinear output")
    if frac != p.frac:
        raise EdgeannError(f"{where}: scale 2^{-frac} differs from its QuantizeLinear's 2^{-p.frac}")
    r.pending[node.output[0]] = replace(p, codes=False, shift=-frac)


@op("Clip")
def read_clip(r, node, where):
    from edgeann.frontends.onnx import ops_requant

    if ops_requant.needs_chain(r, node):
        ops_requant.extend(r, node, where)
        return
    x = node.input[0]
    bounds = [r.const(t, where).values if t else None for t in (list(node.input[1:]) + [None, None])[:2]]
    p = pending(r, x, where)
    if p.rounding is None:
        raise EdgeannError(f"{where}: Clip of a value that is not quantized is not supported")
    scale = 1.0 if p.codes else 2.0**p.frac
    codes = []
    for b in bounds:
        if b is None:
            codes.append(None)
            continue
        c = float(np.asarray(b, np.float64).ravel()[0]) * scale
        if c != math.floor(c):
            raise EdgeannError(f"{where}: Clip bound {float(np.asarray(b).ravel()[0])!r} is not on the quantizer's grid")
        codes.append(int(c))
    lo, hi = codes
    big = 1 << 62
    r.pending[node.output[0]] = p.bounded(-big if lo is None else lo, big if hi is None else hi)


@op("Cast")
def read_cast(r, node, where):
    to = attributes(node)["to"]
    if to not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise EdgeannError(f"{where}: Cast to {TensorProto.DataType.Name(to)} is not supported")
    x = node.input[0]
    if x in r.pending:
        p = r.pending[x]
        r.pending[node.output[0]] = replace(p, float32=p.float32 or to == TensorProto.FLOAT)
        return
    if x in r.relu_of:
        r.relu_of[node.output[0]] = r.relu_of[x]
        return
    src = r.dynamic(x, where)
    if to == TensorProto.FLOAT and r.info(src).type.width > 24:
        raise EdgeannError(f"{where}: a Cast to float32 rounds this {r.info(src).type.width}-bit tensor")
    r.alias[node.output[0]] = src
