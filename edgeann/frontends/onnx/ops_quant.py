"""QONNX quantizers: ``Quant`` and ``BipolarQuant``, on constants (weights, biases) and on activations."""

from __future__ import annotations

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import Const, attributes, bit_width, op, pow2_frac, quantize_const


@op("Quant")
def read_quant(r, node, where):
    x, scale, zero, bits = (list(node.input) + [None] * 4)[:4]
    attrs = attributes(node)
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    if rounding not in ("ROUND", "FLOOR"):
        raise EdgeannError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
    if np.any(r.const(zero, where).values != 0):
        raise EdgeannError(f"{where}: a nonzero zero point has no ap_fixed equivalent; use symmetric quantization")
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    width = bit_width(r.const(bits, where).values, where, lo=1 if not signed else 2)
    t = ir.FixedType(width, pow2_frac(r.const(scale, where).values, where), signed, narrow)
    out = node.output[0]
    if x in r.consts:
        c = r.consts[x]
        ints = quantize_const(c.values, t, rounding)
        r.consts[out] = Const(ints * t.scale, ints, t)
        return
    rnd = "floor" if rounding == "FLOOR" else "half_even"
    if x == r.graph_input and r.graph_input not in r.alias:
        r.quantizer_on_input(where)
        r.alias[out] = r.emit(ir.Input("input", [], shape=r.in_shape, type=t, rounding=rnd))
    elif x in r.relu_of:
        src = r.relu_of.pop(x)
        r.alias[out] = r.emit(ir.Relu(r.unique(node.name or f"relu_{src}"), [src], type=t, rounding=rnd))
    else:
        src = r.dynamic(x, where)
        r.alias[out] = r.emit(ir.Quantize(r.unique(node.name or f"quant_{src}"), [src], type=t, rounding=rnd))


@op("BipolarQuant")
def read_bipolar_quant(r, node, where):
    x, scale = node.input[:2]
    if x not in r.consts:
        raise EdgeannError(f"{where}: BipolarQuant on activations is not supported (only on weights)")
    frac = pow2_frac(r.const(scale, where).values, where)
    ints = np.where(r.consts[x].values >= 0, 1, -1).astype(np.int64)
    t = ir.FixedType(2, frac, True, True)
    r.consts[node.output[0]] = Const(ints * t.scale, ints, t)
