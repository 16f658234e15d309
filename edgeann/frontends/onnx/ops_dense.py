"""Matrix products and what follows them: ``MatMul`` / ``Gemm`` (+ ``Add`` of a constant bias) become
:class:`~edgeann.ir.Dense`; ``Relu`` is held until the quantizer after it (or the next reader) is known."""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx import ops_requant
from edgeann.frontends.onnx.reader import Const, attributes, exact_fixed, op, quantize_const


def typed_weight(r, tensor: str, where: str) -> tuple[np.ndarray, ir.FixedType]:
    """A weight's integer codes and type: as a quantizer typed it, rounded to ``--precision`` (post-training), or
    exactly where the float values are short fixed-point numbers."""
    c = r.const(tensor, where)
    if c.ints is None:
        if r.precision is not None:
            t = ir.FixedType(r.precision.width, r.precision.frac, True)
            c = Const(c.values, quantize_const(c.values, t), t)
        else:
            ints, t = exact_fixed(c.values, where, max_bits=8)
            c = Const(c.values, ints, t)
    return c.ints, c.type


def weights(r, tensor: str, where: str, transpose: bool) -> tuple[np.ndarray, ir.FixedType, np.ndarray | None]:
    """The integer weight matrix (n_out, n_in), its type and, where the quantizer's scale is no power of two (or per
    output), the float scale of each output's weights."""
    ints, t = typed_weight(r, tensor, where)
    if ints.ndim != 2:
        raise EdgeannError(f"{where}: weight {tensor} has shape {ints.shape}; only 2-d MatMul/Gemm weights are supported")
    scale = None
    c = r.consts[tensor]
    if c.scale is not None:
        s = np.broadcast_to(np.asarray(c.scale, np.float64), ints.shape)
        s = s.T if transpose else s
        if np.any(s != s[:, :1]):
            raise EdgeannError(f"{where}: weight scales of {tensor} vary along the input axis; only one scale per "
                               "output (or per tensor) can be factored out of the product")
        scale = np.ascontiguousarray(s[:, 0])
    return (ints.T if transpose else ints), t, scale


def bias(r, tensor: str, where: str) -> tuple[np.ndarray, ir.FixedType]:
    c = r.const(tensor, where)
    if c.ints is not None:
        return c.ints.ravel(), c.type
    if r.precision is not None:
        t = ir.FixedType(r.precision.width, r.precision.frac, True)
        return quantize_const(c.values, t).ravel(), t
    ints, t = exact_fixed(c.values, where)
    return ints.ravel(), t


def dense(r, node, where, x: str, w: str, transpose_w: bool, bias_tensor: str | None):
    offset = None
    if x in r.chains:  # the input normalized in float before the product, e.g. (x + 1) / 2: exact when fixed point
        src, wt_shift, offset = ops_requant.fixed_point_affine(r, x, where)
    else:
        src, wt_shift = r.dynamic(x, where), 0
    weight, wt, w_scale = weights(r, w, where, transpose_w)  # (n_out, n_in)
    if wt_shift:  # the chain's power-of-two gain moves the weights' grid: the product's codes stay
        wt = ir.FixedType(wt.width, wt.frac + wt_shift, wt.signed, wt.narrow)
        w_scale = None if w_scale is None else w_scale * 2.0**-wt_shift
    perm = r.flat_perm.get(x)
    if perm is not None and len(perm) == weight.shape[1]:  # a channels-first flatten: IR position perm[i] is ONNX's i
        permuted = np.empty_like(weight)
        permuted[:, perm] = weight
        weight = permuted
    x_scale = r.scales.get(src)
    if x_scale is not None or w_scale is not None:
        layer = _float_scaled_dense(r, node, where, src, weight, wt, x_scale, w_scale, bias_tensor)
        if offset is not None:
            _add_input_offset(layer, offset, r.info(src).type.frac + wt.frac)
        return
    if r.info(src).shape != (weight.shape[1],):
        raise EdgeannError(f"{where}: a {weight.shape[1]}-input product of a tensor of shape {r.info(src).shape}: "
                           "only products of flat per-sample vectors are supported")
    if bias_tensor is not None:
        b, bt = bias(r, bias_tensor, where)
        if b.size == 1:
            b = np.full(weight.shape[0], b[0], np.int64)
    else:
        b, bt = np.zeros(weight.shape[0], np.int64), ir.FixedType(2, r.info(src).type.frac + wt.frac)
    layer = ir.Dense(r.unique(node.name or "dense"), [src], weight=weight, weight_type=wt, bias=b, bias_type=bt)
    if offset is not None:
        _add_input_offset(layer, offset, r.info(src).type.frac + wt.frac)
    r.alias[node.output[0]] = r.emit(layer)
    r.raw_acc.add(layer.name)
    if bias_tensor is None:
        r.dense_out[node.output[0]] = layer


def _float_scaled_dense(r, node, where, src, weight, wt, x_scale, w_scale, bias_tensor):
    """A product whose input or weights have a scale that is no power of two: the integer product, its float scale
    per output kept in ``r.scales``; a bias joins the float chain to the next quantizer (ops_requant)."""
    if x_scale is not None and np.ndim(x_scale):
        raise EdgeannError(f"{where}: the input of this product has one scale per channel, which cannot be factored "
                           "out of the sum; not supported")
    if r.info(src).shape != (weight.shape[1],):
        raise EdgeannError(f"{where}: a {weight.shape[1]}-input product of a tensor of shape {r.info(src).shape}: "
                           "only products of flat per-sample vectors are supported")
    xt = r.info(src).type
    scale = (x_scale if x_scale is not None else xt.scale) * (w_scale if w_scale is not None else wt.scale)
    b = np.zeros(weight.shape[0], np.int64)
    layer = ir.Dense(r.unique(node.name or "dense"), [src], weight=weight, weight_type=wt, bias=b,
                     bias_type=ir.FixedType(2, xt.frac + wt.frac))
    name = r.emit(layer)
    r.scales[name] = np.asarray(scale, np.float64)
    if bias_tensor is None:
        r.alias[node.output[0]] = name
        return layer
    product = f"{node.output[0]}/product"  # the product before the bias, as a chain's start
    r.alias[product] = name
    add = onnx.helper.make_node("Add", [product, bias_tensor], [node.output[0]], name=f"{node.name}/bias")
    ops_requant.extend(r, add, where)
    return layer


def _add_input_offset(layer: ir.Dense, offset: np.ndarray, frac: int) -> None:
    """W (code + k) = W code + W k: the input's whole-code offsets ``k`` (one per input) join the bias, exactly, on
    the accumulator's grid ``frac``."""
    extra = layer.weight.astype(np.int64) @ offset.astype(np.int64)
    shift = frac - layer.bias_type.frac
    if shift < 0:
        raise EdgeannError(f"{layer.name}: the bias is finer than the accumulator; cannot add the input's offset")
    b = (layer.bias.astype(np.int64) << shift) + extra
    layer.bias = b
    layer.bias_type = ir.FixedType.covering(int(b.min(initial=0)), int(b.max(initial=0)), frac)


def scaled(r, tensor: str, factor: float, where: str, what: str) -> str:
    """The constant ``tensor`` times Gemm's ``alpha`` / ``beta``: exact for a power of two (the codes keep, the
    grid moves) or for float constants; a quantized constant times anything else is refused."""
    if factor == 1.0:
        return tensor
    c = r.const(tensor, where)
    mantissa, exponent = math.frexp(abs(factor))
    name = f"{tensor}*{factor!r}"
    if c.ints is not None and mantissa == 0.5:
        ints = c.ints * (1 if factor > 0 else -1)
        frac = c.type.frac - (exponent - 1)
        t = c.type if factor > 0 else ir.FixedType.covering(int(ints.min(initial=0)), int(ints.max(initial=0)), c.type.frac)
        r.consts[name] = Const(ints * 2.0**-frac, ints, ir.FixedType(t.width, frac, t.signed, t.narrow))
    elif c.ints is None:
        r.consts[name] = Const(np.asarray(c.values, np.float64) * factor)
    else:
        raise EdgeannError(f"{where}: {what} {factor!r} is not a power of two, so it cannot scale quantized constants exactly")
    return name


@op("MatMul")
def read_matmul(r, node, where):
    x, w = node.input
    if x in r.consts and w not in r.consts:  # W @ x on column vectors (N, K, 1)
        shape = r.shape.get(w)
        if not shape or len(shape) != 3 or shape[2] != 1:
            raise EdgeannError(f"{where}: a constant times an activation of shape {shape}: only column vectors (N, K, 1) "
                               "are supported")
        dense(r, node, where, w, x, transpose_w=False, bias_tensor=None)
        return
    dense(r, node, where, x, w, transpose_w=True, bias_tensor=None)


@op("Gemm")
def read_gemm(r, node, where):
    attrs = attributes(node)
    if attrs.get("transA", 0):
        raise EdgeannError(f"{where}: Gemm with transA=1 reads its activation with the batch on the second axis; "
                           "not supported")
    x, w = node.input[:2]
    if x in r.consts:
        raise EdgeannError(f"{where}: Gemm with a constant first operand puts the batch on the last axis; not supported")
    w = scaled(r, w, float(attrs.get("alpha", 1.0)), where, "alpha")
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if b is not None:
        b = scaled(r, b, float(attrs.get("beta", 1.0)), where, "beta")
    dense(r, node, where, x, w, transpose_w=not attrs.get("transB", 0), bias_tensor=b)


@op("Add")
def read_add(r, node, where):
    a, b = node.input
    if a not in r.consts and b not in r.consts:
        residual(r, node, where, a, b)
        return
    dyn, const = (a, b) if b in r.consts else (b, a)
    if const in r.consts and ops_requant.needs_chain(r, node) and not (dyn in r.dense_out and dyn not in r.chains
                                                                       and not ops_requant.float_scaled(r, dyn)):
        ops_requant.extend(r, node, where)
        return
    if const not in r.consts or dyn not in r.dense_out:
        raise EdgeannError(f"{where}: Add of a constant is only supported as the bias of a MatMul or Conv (constant + "
                           "MatMul/Conv output)")
    layer = r.dense_out.pop(dyn)
    if isinstance(layer, ir.Conv):
        shape = tuple(np.shape(r.consts[const].values))
        d, c = len(layer.kernel), layer.n_out
        if shape not in ((c,) + (1,) * d, (1, c) + (1,) * d) and int(np.prod(shape)) != 1:
            raise EdgeannError(f"{where}: a constant of shape {shape} added to a convolution's output is not a "
                               f"per-channel bias (shape ({c}, {', '.join(['1'] * d)}))")
    layer.bias, layer.bias_type = bias(r, const, where)
    if layer.bias.size == 1:
        layer.bias = np.full(layer.n_out, layer.bias[0], np.int64)
    r.alias[node.output[0]] = r.alias[dyn]
    if dyn in r.cf:
        r.cf.add(node.output[0])


def residual(r, node, where, a: str, b: str):
    """The sum of two activations (a residual connection): exact, on the finer of the two grids."""
    if (a in r.cf) != (b in r.cf) or not np.array_equal(r.flat_perm.get(a, []), r.flat_perm.get(b, [])):
        raise EdgeannError(f"{where}: adds tensors of different layouts; only activations of one shape are supported")
    srcs = [r.dynamic(a, where), r.dynamic(b, where)]
    shapes = [r.info(s).shape for s in srcs]
    if shapes[0] != shapes[1]:
        raise EdgeannError(f"{where}: adds tensors of shapes {shapes[0]} and {shapes[1]}; broadcasting is not supported")
    r.alias[node.output[0]] = r.emit(ir.Add(r.unique(node.name or "add"), srcs))
    if a in r.cf:
        r.cf.add(node.output[0])
    if a in r.flat_perm:
        r.flat_perm[node.output[0]] = r.flat_perm[a]
    if r.precision is not None:
        r.raw_acc.add(r.alias[node.output[0]])


@op("Relu")
def read_relu(r, node, where):
    if ops_requant.float_scaled(r, node.input[0]):
        ops_requant.extend(r, node, where)
        return
    src = r.dynamic(node.input[0], where, requant=False)
    r.relu_of[node.output[0]] = src
