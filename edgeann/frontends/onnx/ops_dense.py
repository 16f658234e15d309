"""Matrix products and what follows them: ``MatMul`` / ``Gemm`` (+ ``Add`` of a constant bias) become
:class:`~edgeann.ir.Dense`; ``Relu`` is held until the quantizer after it (or the next reader) is known."""

from __future__ import annotations

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import Const, attributes, exact_fixed, op, quantize_const


def weights(r, tensor: str, where: str, transpose: bool) -> tuple[np.ndarray, ir.FixedType]:
    c = r.const(tensor, where)
    if c.ints is None:
        if r.precision is not None:
            t = ir.FixedType(r.precision.width, r.precision.frac, True)
            c = Const(c.values, quantize_const(c.values, t), t)
        else:
            ints, t = exact_fixed(c.values, where, max_bits=8)
            c = Const(c.values, ints, t)
    if c.ints.ndim != 2:
        raise EdgeannError(f"{where}: weight {tensor} has shape {c.ints.shape}; only 2-d MatMul/Gemm weights are supported")
    return (c.ints.T if transpose else c.ints), c.type


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
    src = r.dynamic(x, where)
    weight, wt = weights(r, w, where, transpose_w)  # (n_out, n_in)
    if bias_tensor is not None:
        b, bt = bias(r, bias_tensor, where)
    else:
        b, bt = np.zeros(weight.shape[0], np.int64), ir.FixedType(2, r.info(src).type.frac + wt.frac)
    layer = ir.Dense(r.unique(node.name or "dense"), [src], weight=weight, weight_type=wt, bias=b, bias_type=bt)
    r.alias[node.output[0]] = r.emit(layer)
    r.raw_acc.add(layer.name)
    if bias_tensor is None:
        r.dense_out[node.output[0]] = layer


@op("MatMul")
def read_matmul(r, node, where):
    x, w = node.input
    dense(r, node, where, x, w, transpose_w=True, bias_tensor=None)


@op("Gemm")
def read_gemm(r, node, where):
    attrs = attributes(node)
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise EdgeannError(f"{where}: Gemm with transA, alpha or beta is not supported")
    x, w = node.input[:2]
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    dense(r, node, where, x, w, transpose_w=not attrs.get("transB", 0), bias_tensor=b)


@op("Add")
def read_add(r, node, where):
    a, b = node.input
    dyn, const = (a, b) if b in r.consts else (b, a)
    if const not in r.consts or dyn not in r.dense_out:
        raise EdgeannError(f"{where}: Add is only supported as the bias of a MatMul (constant + MatMul output)")
    layer = r.dense_out.pop(dyn)
    layer.bias, layer.bias_type = bias(r, const, where)
    if layer.bias.size == 1:
        layer.bias = np.full(layer.n_out, layer.bias[0], np.int64)
    r.alias[node.output[0]] = r.alias[dyn]


@op("Relu")
def read_relu(r, node, where):
    src = r.dynamic(node.input[0], where, requant=False)
    r.relu_of[node.output[0]] = src
