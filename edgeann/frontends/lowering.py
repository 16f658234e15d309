"""Lower a trained Brevitas model into the fixed-point graph (:mod:`edgeann.ir`).

Each Brevitas layer type has one small lowering function. The model is run layer by layer on
a dummy batch so each function sees the quantized tensor that reaches it (the bias scale
depends on the input scale), and reads its integers and power-of-two scales from Brevitas.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor, QuantTensor

from edgeann import fused, ir
from edgeann.errors import EdgeannError
from edgeann.layers import ChannelsFirst, ChannelsLastFlatten, QuantBatchNorm, Residual
from edgeann.models import EdgeModel
from edgeann.models.recurrent import QuantGRU, QuantLSTM
from edgeann.registry import Registry


def frac_of(scale, what: str) -> int:
    """``scale = 2**-frac`` -> frac; anything else cannot be an ap_fixed."""
    s = float(torch.as_tensor(scale).reshape(-1)[0]) if not isinstance(scale, float) else scale
    if isinstance(scale, torch.Tensor) and scale.numel() > 1 and not torch.all(scale == scale.reshape(-1)[0]):
        raise EdgeannError(f"{what}: per-channel scales are not supported; use one power-of-two scale per tensor")
    mantissa, exponent = math.frexp(s)
    if s <= 0 or mantissa != 0.5:
        raise EdgeannError(
            f"{what}: scale {s!r} is not a power of two, so it has no exact ap_fixed type; "
            "use a fixed-point quantizer (edgeann's presets, or Brevitas' *FixedPoint quantizers)"
        )
    return 1 - exponent


def act_type(proxy, what: str) -> ir.FixedType:
    """The fixed-point type an activation quantizer produces."""
    if str(proxy.rounding_mode).upper() != "FLOOR":
        raise EdgeannError(
            f"{what}: activation quantizer rounds with {proxy.rounding_mode}; edgeann's firmware truncates, "
            "so activation quantizers must use FLOOR (edgeann.quant presets do)"
        )
    return ir.FixedType(int(proxy.bit_width()), frac_of(proxy.scale(), what), bool(proxy.is_signed), bool(proxy.is_narrow_range))


# (layer name, module, its quantized input, its output, is it the first layer) -> graph node(s): one node, several
# (each reading the one before unless it names its inputs), or None for a layout change (the graph is channels-last)
Lowering = Callable[[str, torch.nn.Module, object, object, bool], "ir.Node | list[ir.Node] | None"]
LOWERINGS = Registry("Brevitas lowering")  # Brevitas layer type (exact; edgeann.fused's too) -> its lowering
lowers = LOWERINGS.register


@lowers(qnn.QuantIdentity)
@lowers(fused.QuantIdentity)
def _lower_identity(name, mod, x, out, first):
    t = act_type(mod.act_quant, name)
    if first:
        return ir.Input(name, [], shape=tuple(x.shape[1:]), type=t)
    return ir.Quantize(name, [], type=t)


@lowers(qnn.QuantReLU)
@lowers(fused.QuantReLU)
def _lower_relu(name, mod, x, out, first):
    return ir.Relu(name, [], type=act_type(mod.act_quant, name))


def _weight_and_bias(name, mod, x) -> dict:
    """Integer weight (as Brevitas stores it: output channels first) and bias of a quantized layer, with their types."""
    if not isinstance(x, IntQuantTensor):
        raise EdgeannError(f"{name}: its input is not quantized; put a quantizer before it")
    qw = mod.quant_weight()
    wt = ir.FixedType(int(qw.bit_width), frac_of(qw.scale, f"{name} weight"), True, True)
    weight = qw.int().to(torch.int64).cpu().numpy()
    if mod.bias is None:
        bias = np.zeros(weight.shape[0], np.int64)
        bt = ir.FixedType(2, frac_of(x.scale, f"{name} input") + wt.frac)
    else:
        qb = mod.bias_quant(mod.bias, input=x, weight=qw)
        bias = qb.int().to(torch.int64).cpu().numpy()
        bt = ir.FixedType(int(qb.bit_width), frac_of(qb.scale, f"{name} bias"), True)
    return {"weight": weight, "weight_type": wt, "bias": bias, "bias_type": bt}


@lowers(qnn.QuantLinear)
@lowers(fused.QuantLinear)
def _lower_linear(name, mod, x, out, first):
    return ir.Dense(name, [], **_weight_and_bias(name, mod, x))


# -- CNN layers: PyTorch computes them channels-first, the graph channels-last


def _same_pads(kernel: tuple[int, ...]) -> tuple[int, ...]:
    """PyTorch's padding='same' (stride 1): k - 1 zeros per axis, the odd one at the end."""
    return tuple(p for k in kernel for p in ((k - 1) // 2, k - 1 - (k - 1) // 2))


@lowers(qnn.QuantConv1d)
@lowers(qnn.QuantConv2d)
@lowers(fused.QuantConv1d)
@lowers(fused.QuantConv2d)
def _lower_conv(name, mod, x, out, first):
    if mod.groups != 1 or any(d != 1 for d in mod.dilation) or mod.padding_mode != "zeros":
        raise EdgeannError(f"{name}: only plain convolutions (groups 1, dilation 1, zero padding) are supported")
    wb = _weight_and_bias(name, mod, x)
    w = wb.pop("weight")
    weight = np.moveaxis(w, (0, 1), (-1, -2))  # (c_out, c_in, *kernel) -> (*kernel, c_in, c_out)
    if isinstance(mod.padding, str):
        pads = _same_pads(tuple(mod.kernel_size)) if mod.padding == "same" else ()
    else:
        pads = tuple(p for p in mod.padding for _ in range(2))
    return ir.Conv(name, [], weight=weight, stride=tuple(mod.stride), pads=pads, **wb)


def _pool_geometry(name, mod) -> dict:
    d = 2 if isinstance(mod, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) else 1
    per_axis = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * d  # noqa: E731
    if any(per_axis(mod.padding)) or mod.ceil_mode:
        raise EdgeannError(f"{name}: pooling with padding or ceil_mode is not supported")
    if any(p != 1 for p in per_axis(getattr(mod, "dilation", 1))):
        raise EdgeannError(f"{name}: pooling with dilation is not supported")
    return {"pool": per_axis(mod.kernel_size), "stride": per_axis(mod.stride if mod.stride is not None else mod.kernel_size)}


@lowers(torch.nn.MaxPool1d)
@lowers(torch.nn.MaxPool2d)
def _lower_max_pool(name, mod, x, out, first):
    return ir.MaxPool(name, [], **_pool_geometry(name, mod))


@lowers(torch.nn.AvgPool1d)
@lowers(torch.nn.AvgPool2d)
def _lower_avg_pool(name, mod, x, out, first):
    if getattr(mod, "divisor_override", None):
        raise EdgeannError(f"{name}: average pooling with divisor_override is not supported")
    try:
        return ir.AvgPool(name, [], **_pool_geometry(name, mod))
    except ValueError as e:
        raise EdgeannError(str(e)) from None


@lowers(ChannelsFirst)
def _lower_channels_first(name, mod, x, out, first):
    return None  # the graph stays channels-last


@lowers(ChannelsLastFlatten)
def _lower_flatten(name, mod, x, out, first):
    return ir.Flatten(name, [])


@lowers(QuantBatchNorm)
def _lower_batchnorm(name, mod, x, out, first):
    s, s_frac, t, t_frac = mod.quantized(mod.running_mean, mod.running_var)
    as_int = lambda v: v.to(torch.int64).cpu().numpy()  # noqa: E731
    return ir.BatchNorm(name, [], scale=as_int(s), scale_type=ir.FixedType(mod.scale_bits, int(s_frac), True, True),
                        bias=as_int(t), bias_type=ir.FixedType(mod.bias_bits, int(t_frac), True))


@lowers(QuantGRU)
@lowers(QuantLSTM)
def _lower_recurrent(name, mod, x, out, first):
    """Weights and biases as two dense layers (the recurrent one's bias sits on the state's grid), the learned
    gate, cell and state types, and the activation tables the layer trained with."""
    ih = _lower_linear(f"{name}_ih", mod.ih, x, None, False)
    hh = _lower_linear(f"{name}_hh", mod.hh, mod.state(torch.zeros(1, mod.hidden_size)), None, False)
    types = {k: act_type(q.act_quant, f"{name} {k}") for k, q in mod.quantizers().items()}
    return mod.node_type(
        name, [], w_ih=ih.weight, w_ih_type=ih.weight_type, b_ih=ih.bias, b_ih_type=ih.bias_type, w_hh=hh.weight,
        w_hh_type=hh.weight_type, b_hh=hh.bias, b_hh_type=hh.bias_type, sigmoid_type=mod.sigmoid.out_type,
        tanh_type=mod.tanh.out_type, return_sequences=mod.return_sequences, **{f"{k}_type": t for k, t in types.items()},
        **mod.graph_tables(types),
    )


# Blocks wire their inner layers themselves: (block name, module, its input, the graph tensor holding that input)
# -> (graph nodes, its output)
BlockLowering = Callable[[str, torch.nn.Module, object, str], "tuple[list[ir.Node], object]"]
BLOCK_LOWERINGS = Registry("block lowering")
lowers_block = BLOCK_LOWERINGS.register


@lowers_block(Residual)
def _lower_residual(name, mod, x, source):
    body, y = lower_layers(mod.body.named_children(), x, source)
    if not body:
        raise EdgeannError(f"{name}: a residual block without layers")
    add = ir.Add(f"{name}_add", [source, body[-1].name])
    total = (x.value if isinstance(x, QuantTensor) else x) + (y.value if isinstance(y, QuantTensor) else y)
    out = mod.after(total)
    after = LOWERINGS.get(type(mod.after))
    if after is None:
        raise EdgeannError(f"{name}: {type(mod.after).__name__} after the sum has no fixed-point lowering")
    node = after(name, mod.after, total, out, False)
    node.inputs = [add.name]
    return [*body, add, node], out


def lower_layers(layers, x, source: str | None) -> tuple[list[ir.Node], object]:
    """Lower named layers ``(name, module)`` in order, the first reading graph tensor ``source`` (None: the first
    layer is the graph's input), running each on ``x`` so the next sees what reaches it. Returns (nodes, output)."""
    nodes: list[ir.Node] = []
    for layer_name, mod in layers:
        block = BLOCK_LOWERINGS.get(type(mod))
        if block is not None:
            new, x = block(layer_name, mod, x, source)
        else:
            fn = LOWERINGS.get(type(mod))
            if fn is None:
                raise EdgeannError(f"layer {layer_name} ({type(mod).__name__}) has no fixed-point lowering")
            out = mod(x)
            lowered = fn(layer_name, mod, x, out, first=source is None and not nodes)
            new = [] if lowered is None else [lowered] if isinstance(lowered, ir.Node) else list(lowered)
            x = out
        for node in new:
            if not node.inputs and source is not None:
                node.inputs = [source]
            source = node.name
        nodes += new
    return nodes, x


@torch.no_grad()
def lower(model: EdgeModel, name: str) -> ir.Graph:
    """The trained ``model`` as an exact fixed-point graph named ``name``."""
    if not model.quantized:
        raise EdgeannError("only quantized models can be lowered to firmware")
    model = copy.deepcopy(model).cpu().eval()
    nodes, _ = lower_layers(model.layers.named_children(), torch.zeros(2, *model.input_shape), None)
    return ir.Graph(name, nodes, [nodes[-1].name])
