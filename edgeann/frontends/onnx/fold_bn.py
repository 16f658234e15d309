"""Batch normalization of a float model, folded into the product before it (post-training fixed point).

A float model read with ``--precision`` is quantized layer by layer; a ``BatchNormalization`` after a ``Gemm``,
``MatMul`` (+ bias ``Add``) or ``Conv`` is folded into that layer's float weights and bias first, as a
physicist's own PTQ would, so the firmware has one product per layer. ``Unsqueeze`` / ``Squeeze`` around it
(PyTorch's old exporter writes a ``BatchNorm1d`` so) may stay: they only move values. Quantized models are never
folded: there the batch norm sits between a product and a quantizer and becomes exact thresholds."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_THROUGH = ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Dropout")


def fold_batchnorms(model: onnx.ModelProto) -> int:
    """Fold every foldable inference ``BatchNormalization`` in place; returns how many were folded."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    folded = 0
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1 or \
                not all(i in inits for i in bn.input[1:5]):
            continue
        layer, bias_add = _layer_before(bn.input[0], producer, uses, inits)
        if layer is None:
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        if not _fold_into(g, layer, bias_add, scale, shift, inits):
            continue
        bn.op_type = "Identity"  # in place: the graph's order stays
        del bn.input[1:]
        del bn.attribute[:]
        folded += 1
    return folded


def _layer_before(tensor: str, producer: dict, uses: dict, inits: dict):
    """The Gemm / MatMul / Conv (and its bias Add) whose output reaches ``tensor`` through value moves only, each
    tensor on the way read once; (None, None) otherwise."""
    bias_add = None
    while True:
        if uses.get(tensor, 0) != 1 or tensor not in producer:
            return None, None
        node = producer[tensor]
        if node.op_type in _THROUGH:
            tensor = node.input[0]
            continue
        if node.op_type == "Add" and bias_add is None and sum(i in inits for i in node.input) == 1:
            bias_add = node
            tensor = next(i for i in node.input if i not in inits)
            continue
        if node.op_type in ("Gemm", "MatMul", "Conv") and len(node.input) > 1 and node.input[1] in inits:
            if node.op_type == "Gemm" and any(a.name in ("alpha", "beta") and a.f != 1.0 for a in node.attribute):
                return None, None
            if node.op_type != "MatMul" and bias_add is not None:
                return None, None
            return node, bias_add
        return None, None


def _fold_into(g, layer, bias_add, scale: np.ndarray, shift: np.ndarray, inits: dict) -> bool:
    w = numpy_helper.to_array(inits[layer.input[1]]).astype(np.float64)
    n = len(scale)
    if layer.op_type == "Conv":
        if w.shape[0] != n:
            return False
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        trans_b = layer.op_type == "Gemm" and any(a.name == "transB" and a.i for a in layer.attribute)
        out_axis = 0 if trans_b else w.ndim - 1
        if w.ndim != 2 or w.shape[out_axis] != n:
            return False
        w = w * (scale[:, None] if trans_b else scale[None, :])
    if bias_add is not None:
        b_name = next(i for i in bias_add.input if i in inits)
        b = numpy_helper.to_array(inits[b_name]).astype(np.float64)
        if b.size not in (1, n):
            return False
        new_b = np.broadcast_to(b.reshape(-1), (n,)) * scale + shift
        shape = b.shape if b.size == n else (n,)
        _replace(g, inits, bias_add, b_name, new_b.reshape(shape))
    elif layer.op_type in ("Gemm", "Conv") and len(layer.input) > 2 and layer.input[2]:
        b = numpy_helper.to_array(inits[layer.input[2]]).astype(np.float64) if layer.input[2] in inits else None
        if b is None or b.size not in (1, n):
            return False
        _replace(g, inits, layer, layer.input[2], np.broadcast_to(b.reshape(-1), (n,)) * scale + shift)
    elif layer.op_type in ("Gemm", "Conv"):
        name = _unique(inits, f"{layer.name or layer.op_type}/folded_bias")
        _add_init(g, inits, name, shift)
        while len(layer.input) < 3:
            layer.input.append("")
        layer.input[2] = name
    else:  # a MatMul with no bias: the shift becomes the Add of a constant after it, which is read as its bias
        return False
    _replace(g, inits, layer, layer.input[1], w)
    return True


def _replace(g, inits: dict, node, name: str, value: np.ndarray) -> None:
    """``node`` reads a new initializer holding ``value`` instead of ``name`` (which other nodes may share)."""
    dtype = numpy_helper.to_array(inits[name]).dtype
    new = _unique(inits, f"{name}/folded")
    _add_init(g, inits, new, np.asarray(value).astype(dtype))
    for i, x in enumerate(node.input):
        if x == name:
            node.input[i] = new


def _add_init(g, inits: dict, name: str, value: np.ndarray) -> None:
    t = numpy_helper.from_array(np.asarray(value, np.float32) if np.asarray(value).dtype == np.float64 else value, name)
    g.initializer.append(t)
    inits[name] = t


def _unique(inits: dict, base: str) -> str:
    name, k = base, 1
    while name in inits:
        name, k = f"{base}_{k}", k + 1
    return name
