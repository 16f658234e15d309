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
from brevitas.quant_tensor import IntQuantTensor

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.models import EdgeModel
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


# (layer name, module, its quantized input, its output, is it the first layer) -> graph node
Lowering = Callable[[str, torch.nn.Module, object, object, bool], ir.Node]
LOWERINGS = Registry("Brevitas lowering")  # Brevitas layer type (exact) -> its lowering
lowers = LOWERINGS.register


@lowers(qnn.QuantIdentity)
def _lower_identity(name, mod, x, out, first):
    t = act_type(mod.act_quant, name)
    if first:
        return ir.Input(name, [], shape=tuple(x.shape[1:]), type=t)
    return ir.Quantize(name, [], type=t)


@lowers(qnn.QuantReLU)
def _lower_relu(name, mod, x, out, first):
    return ir.Relu(name, [], type=act_type(mod.act_quant, name))


@lowers(qnn.QuantLinear)
def _lower_linear(name, mod, x, out, first):
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
    return ir.Dense(name, [], weight=weight, weight_type=wt, bias=bias, bias_type=bt)




@torch.no_grad()
def lower(model: EdgeModel, name: str) -> ir.Graph:
    """The trained ``model`` as an exact fixed-point graph named ``name``."""
    if not model.quantized:
        raise EdgeannError("only quantized models can be lowered to firmware")
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, *model.input_shape)
    nodes: list[ir.Node] = []
    for layer_name, mod in model.layers.named_children():
        fn = LOWERINGS.get(type(mod))
        if fn is None:
            raise EdgeannError(f"layer {layer_name} ({type(mod).__name__}) has no fixed-point lowering")
        out = mod(x)
        node = fn(layer_name, mod, x, out, first=not nodes)
        if nodes:
            node.inputs = [nodes[-1].name]
        nodes.append(node)
        x = out
    return ir.Graph(name, nodes, [nodes[-1].name])
