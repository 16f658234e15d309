"""Convolutional networks: ``Conv``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool`` and the layout moves
around them (``Transpose``; flattening is in :mod:`~edgeann.frontends.onnx.ops_shape`).

ONNX convolutions are channels-first (N, C, *spatial); the graph is channels-last. The reader keeps one IR tensor
per ONNX tensor and remembers, in ``r.cf``, the ONNX tensors that are channels-first while their IR tensor is
channels-last: a channels-first model input becomes an IR input (*spatial, C) (the verification transposes the
firmware's inputs into the model's layout), and a Keras-style ``Transpose`` pair (NHWC -> NCHW before the
convolutions, NCHW -> NHWC after) only toggles that mark, so such a model keeps its own input layout.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.ops_dense import bias, typed_weight
from edgeann.frontends.onnx.reader import attributes, op

CONV_OPS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool")


def to_channels_last(d: int) -> tuple[int, ...]:
    """The perm taking (N, C, *spatial) to (N, *spatial, C)."""
    return (0, *range(2, d + 2), 1)


def to_channels_first(d: int) -> tuple[int, ...]:
    """The perm taking (N, *spatial, C) to (N, C, *spatial): the firmware's input into a channels-first model's."""
    return (0, d + 1, *range(1, d + 1))


def channels_first_src(r, x: str, where: str) -> str:
    """The IR tensor behind a channels-first ONNX tensor (a convolution's or pooling's input)."""
    if x not in r.cf:
        raise EdgeannError(f"{where}: its input {x} is not a channels-first (N, C, ...) tensor the reader can lay out "
                           "channels-last; only models whose input feeds the convolutions directly, or through one "
                           "Transpose from channels-last, are supported")
    return r.dynamic(x, where)


def _spatial(r, src: str, where: str) -> int:
    d = len(r.info(src).shape) - 1
    if d not in (1, 2):
        raise EdgeannError(f"{where}: only 1-D and 2-D convolutions and pooling are supported (input of shape "
                           f"{r.info(src).shape})")
    return d


def _ones(attrs: dict, key: str, d: int, where: str, reason: str) -> None:
    if any(v != 1 for v in attrs.get(key, [1] * d)):
        raise EdgeannError(f"{where}: {key} {list(attrs[key])} is not supported ({reason})")


def _pads(attrs: dict, d: int, where: str, spatial: tuple[int, ...] = (), kernel: tuple[int, ...] = ()) -> tuple[int, ...]:
    """ONNX pads (all begins, then all ends) -> the IR's (before, after) per axis. ``SAME_UPPER`` / ``SAME_LOWER``
    auto-padding is made explicit from the input extent ``spatial``, the ``kernel`` and the strides, as the ONNX
    standard defines it (output extent ceil(n / stride); an odd total puts the extra row after, or before)."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER") and spatial and kernel:
        strides = list(attrs.get("strides", [1] * d))
        out = []
        for n, k, st in zip(spatial, kernel, strides):
            total = max((-(-n // st) - 1) * st + k - n, 0)
            small = total // 2
            out += [small, total - small] if auto == "SAME_UPPER" else [total - small, small]
        return tuple(out)
    if auto not in ("NOTSET", "VALID"):
        raise EdgeannError(f"{where}: auto_pad {auto} is not supported here; export with explicit pads (auto_pad NOTSET)")
    p = list(attrs.get("pads", [0] * 2 * d)) if auto == "NOTSET" else [0] * 2 * d
    return tuple(v for i in range(d) for v in (p[i], p[i + d]))


@op("Conv")
def read_conv(r, node, where):
    attrs = attributes(node)
    src = channels_first_src(r, node.input[0], where)
    d = _spatial(r, src, where)
    if attrs.get("group", 1) != 1:
        raise EdgeannError(f"{where}: group {attrs['group']} is not supported (grouped and depthwise convolutions "
                           "are not); use group=1")
    _ones(attrs, "dilations", d, where, "dilated convolutions are not; use dilation 1")
    w, wt = typed_weight(r, node.input[1], where)  # (c_out, c_in, *kernel)
    if w.ndim != d + 2:
        raise EdgeannError(f"{where}: weight of shape {w.shape} does not fit a {d}-D convolution")
    weight = np.transpose(w, (*range(2, d + 2), 1, 0))  # (*kernel, c_in, c_out)
    x = r.info(src)
    b_in = node.input[2] if len(node.input) > 2 and node.input[2] else None
    scale = _float_scale(r, node.input[1], src, w.shape[0], wt, x.type, where)
    if scale is not None:  # the integer convolution; its float scale is kept and the bias joins the float chain
        b_in, chain_bias = None, b_in
    if b_in is not None:
        b, bt = bias(r, b_in, where)
    else:
        b, bt = np.zeros(w.shape[0], np.int64), ir.FixedType(2, x.type.frac + wt.frac)
    try:
        layer = ir.Conv(r.unique(node.name or "conv"), [src], weight=weight, weight_type=wt, bias=b, bias_type=bt,
                        stride=tuple(attrs.get("strides", [1] * d)),
                        pads=_pads(attrs, d, where, tuple(x.shape[:-1]), tuple(w.shape[2:])))
        r.emit(layer)
        r.info(layer.name)
    except ValueError as e:
        raise EdgeannError(f"{where}: {str(e).split(': ', 1)[-1]}") from None  # the node's IR name is where's
    out = node.output[0]
    r.cf.add(out)
    if scale is not None:
        r.scales[layer.name] = scale
        if chain_bias is None:
            r.alias[out] = layer.name
            return
        _bias_into_chain(r, node, layer.name, chain_bias, w.shape[0], d, where)
        return
    r.alias[out] = layer.name
    r.raw_acc.add(layer.name)
    if b_in is None:
        r.dense_out[out] = layer  # an Add of a constant (c, 1, ...) after it is its bias


def _float_scale(r, weight: str, src: str, c_out: int, wt: ir.FixedType, xt: ir.FixedType, where: str):
    """The float scale of the convolution's integer result where its input's or weights' scale is no power of two
    (Brevitas' default float scales): one number, or one per output channel; None for fixed-point quantizers."""
    w_scale, x_scale = r.consts[weight].scale, r.scales.get(src)
    if w_scale is None and x_scale is None:
        return None
    if x_scale is not None and np.ndim(x_scale):
        raise EdgeannError(f"{where}: the input of this convolution has one scale per channel, which cannot be "
                           "factored out of its sums; not supported")
    if w_scale is not None:
        s = np.asarray(w_scale, np.float64)
        if s.size != 1:
            if s.size != c_out or s.shape[0] != c_out:  # (c_out, 1, ..., 1): one per output channel
                raise EdgeannError(f"{where}: weight scales of shape {s.shape}: only one scale per output channel (or "
                                   "per tensor) can be factored out of a convolution")
            s = s.reshape(c_out)
        else:
            s = s.reshape(())
    else:
        s = np.float64(wt.scale)
    return np.asarray((x_scale if x_scale is not None else xt.scale) * s, np.float64)


def _bias_into_chain(r, node, product_name: str, bias_tensor: str, c_out: int, d: int, where: str) -> None:
    """A float-scaled convolution's bias is added in float, as the original does: an ``Add`` of the bias, one value
    per channel on axis 1, starting the float chain to the next quantizer (:mod:`ops_requant`)."""
    from edgeann.frontends.onnx import ops_requant
    from edgeann.frontends.onnx.reader import Const

    out = node.output[0]
    product = f"{out}/product"  # the product before the bias, as the chain's start
    r.alias[product] = product_name
    r.cf.add(product)
    if out in r.shape:
        r.shape[product] = r.shape[out]
    c = r.const(bias_tensor, where)
    per_channel = f"{bias_tensor}/per_channel"
    r.consts[per_channel] = Const(np.asarray(c.values).reshape(c_out, *([1] * d)))
    add = onnx.helper.make_node("Add", [product, per_channel], [out], name=f"{node.name}/bias")
    ops_requant.extend(r, add, where)


def _pool(r, node, where, cls, what: str):
    attrs = attributes(node)
    src = channels_first_src(r, node.input[0], where)
    d = _spatial(r, src, where)
    if any(_pads(attrs, d, where)):
        raise EdgeannError(f"{where}: padded {what} is not supported; pool without padding (pads 0)")
    _ones(attrs, "dilations", d, where, f"dilated {what} is not; use dilation 1")
    if attrs.get("ceil_mode", 0):
        n, k = r.info(src).shape[:-1], attrs["kernel_shape"]
        s = attrs.get("strides", [1] * d)
        if any((a - b) % c for a, b, c in zip(n, k, s)):
            raise EdgeannError(f"{where}: ceil_mode=1 with windows running past the edge is not supported; use "
                               "ceil_mode=0 or an input that the windows tile")
    pool = tuple(attrs["kernel_shape"])
    emit(r, node, where, cls, src, pool, tuple(attrs.get("strides", [1] * d)))


def emit(r, node, where, cls, src, pool, stride):
    try:
        layer = cls(r.unique(node.name or cls.op.lower()), [src], pool=pool, stride=stride)
        r.emit(layer)
        r.info(layer.name)
    except ValueError as e:
        raise EdgeannError(f"{where}: {str(e).split(': ', 1)[-1]}") from None  # the node's IR name is where's
    r.alias[node.output[0]] = layer.name
    r.cf.add(node.output[0])
    if src in r.scales:  # codes with a float scale (positive, per tensor or channel): the maximum keeps it, the
        # average (an exact window sum) divides it by the window's area
        r.scales[layer.name] = np.asarray(r.scales[src], np.float64) * 2.0 ** -getattr(layer, "shift", 0)


@op("MaxPool")
def read_maxpool(r, node, where):
    if len([o for o in node.output if o]) > 1:
        raise EdgeannError(f"{where}: MaxPool's Indices output is not supported")
    _pool(r, node, where, ir.MaxPool, "max pooling")


@op("AveragePool")
def read_avgpool(r, node, where):
    _pool(r, node, where, ir.AvgPool, "average pooling")


@op("GlobalAveragePool")
def read_global_avgpool(r, node, where):
    src = channels_first_src(r, node.input[0], where)
    _spatial(r, src, where)
    extent = tuple(r.info(src).shape[:-1])
    emit(r, node, where, ir.AvgPool, src, extent, extent)


@op("Transpose")
def read_transpose(r, node, where):
    """Only the layout moves of a Keras-style export: channels-last -> channels-first before the convolutions and
    back before flattening. Both keep the IR tensor; they toggle the channels-first mark."""
    x, out = node.input[0], node.output[0]
    shape = r.shape.get(x)
    perm = tuple(attributes(node).get("perm", ()))
    d = len(shape) - 2 if shape else 0
    if d in (1, 2) and x not in r.cf and perm == to_channels_first(d):
        r.cf.add(out)
    elif d in (1, 2) and x in r.cf and perm == to_channels_last(d):
        pass
    else:
        raise EdgeannError(f"{where}: Transpose perm {list(perm)} of a tensor of shape {shape} is not supported (only "
                           "channels-last <-> channels-first around convolutions)")
    if x in r.relu_of:  # ReLU and layout moves commute
        r.relu_of[out] = r.relu_of.pop(x)
        return
    r.alias[out] = r.dynamic(x, where)
