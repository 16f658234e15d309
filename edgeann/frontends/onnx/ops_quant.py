"""QONNX quantizers: ``Quant`` and ``BipolarQuant``, on constants (weights, biases) and on activations."""

from __future__ import annotations

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx import ops_requant
from edgeann.frontends.onnx.reader import Const, attributes, bit_width, op, pow2_frac, quantize_const


def _fixed_point(r, scale: str, zero: str, where: str) -> bool:
    """One power-of-two scale and a zero zero point: an ap_fixed type."""
    return ops_requant.is_pow2(r.const(scale, where).values) and not np.any(r.const(zero, where).values != 0)


@op("Quant")
def read_quant(r, node, where):
    x, scale, zero, bits = (list(node.input) + [None] * 4)[:4]
    attrs = attributes(node)
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    if rounding not in ("ROUND", "FLOOR"):
        raise EdgeannError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    fixed = _fixed_point(r, scale, zero, where)
    if x in r.consts and not fixed:  # per-channel or non-power-of-two weight scales: codes and a float scale
        width = bit_width(r.const(bits, where).values, where, lo=1)
        r.consts[node.output[0]] = ops_requant.quant_constant(r.consts[x].values, r.const(scale, where).values,
                                                              r.const(zero, where).values, width, signed, narrow,
                                                              rounding, where)
        return
    if x not in r.consts and (not fixed or ops_requant.float_scaled(r, x)):
        if x == r.graph_input and r.graph_input not in r.alias and r.input_precision is None:
            values = np.unique(np.asarray(r.const(scale, where).values, np.float64))
            what = f"scale {float(values[0])!r}" if values.size == 1 else "per-channel scales"
            raise EdgeannError(f"{where}: the model input {r.input_label} is quantized with {what} and zero point "
                               f"{float(np.asarray(r.const(zero, where).values).ravel()[0]):g}, which no ap_fixed input "
                               "port holds; pass --input-precision 'ap_fixed<W,I>' to name the firmware's input type "
                               "(the quantizer then becomes exact thresholds)")
        ops_requant.read_quant_activation(r, node, where)
        return
    if np.any(r.const(zero, where).values != 0):
        raise EdgeannError(f"{where}: a nonzero zero point has no ap_fixed equivalent; use symmetric quantization")
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
        if x == r.graph_input and r.graph_input not in r.alias and r.input_precision is None:
            raise EdgeannError(f"{where}: the model input {r.input_label} enters a BipolarQuant (sign); pass "
                               "--input-precision 'ap_fixed<W,I>' to name the firmware's input type")
        ops_requant.read_bipolar_activation(r, node, where)
        return
    if not ops_requant.is_pow2(r.const(scale, where).values):
        from qonnx.custom_op.general.bipolar_quant import binary_quant

        s = np.asarray(r.const(scale, where).values)
        out = binary_quant(np.asarray(r.consts[x].values), s)
        ints = np.where(np.asarray(r.consts[x].values) >= 0, 1, -1).astype(np.int64)
        r.consts[node.output[0]] = Const(np.asarray(out), ints, ir.FixedType(2, 0, True, True), s.astype(np.float64))
        return
    frac = pow2_frac(r.const(scale, where).values, where)
    ints = np.where(r.consts[x].values >= 0, 1, -1).astype(np.int64)
    t = ir.FixedType(2, frac, True, True)
    r.consts[node.output[0]] = Const(ints * t.scale, ints, t)
