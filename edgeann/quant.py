"""Quantizer presets and the layer factory every model family builds from.

Brevitas quantizers are dependency-injection classes; edgeann hides them behind four presets,
each a fixed-point quantizer (a power-of-two scale, so every value is an ``ap_fixed``):

* :class:`FixedPointWeight` - signed, narrow range, scale from max |w|, rounded to nearest once
  when the weight is frozen into an integer;
* :class:`FixedPointAct` / :class:`FixedPointUnsignedAct` - activations, input and output: a
  learned power-of-two scale (initialised from running statistics), **truncating** (floor)
  and saturating, exactly like ``ap_fixed<W, I, AP_TRN, AP_SAT>`` in the firmware;
* :class:`FixedPointBias` - scale = input scale x weight scale, so the bias sits on the
  accumulator's grid and the firmware adds it without shifting.

Model builders never touch Brevitas directly: they ask a :class:`QuantLayers` (or, for a float
twin of the same network, :class:`FloatLayers`) for ``input()``, ``linear()``, ``relu()`` and
``output()``, named so per-layer bit widths from the flow apply.
"""

from __future__ import annotations

import brevitas.nn as qnn
from brevitas.inject.enum import FloatToIntImplType
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Int16Bias,
    Uint8ActPerTensorFixedPoint,
)
from torch import nn

from edgeann.config import QuantConfig


class FixedPointWeight(Int8WeightPerTensorFixedPoint):
    """Signed narrow-range weights with a per-tensor power-of-two scale (rounded to nearest)."""


class FixedPointAct(Int8ActPerTensorFixedPoint):
    """Signed activations with a learned power-of-two scale; truncating, saturating."""

    float_to_int_impl_type = FloatToIntImplType.FLOOR
    collect_stats_steps = 100


class FixedPointUnsignedAct(Uint8ActPerTensorFixedPoint):
    """Unsigned (post-ReLU) activations with a learned power-of-two scale; truncating, saturating."""

    float_to_int_impl_type = FloatToIntImplType.FLOOR
    collect_stats_steps = 100


class FixedPointBias(Int16Bias):
    """Bias on the accumulator grid: scale = input scale x weight scale."""


class QuantLayers:
    """Brevitas layers with edgeann's presets and the flow's bit widths."""

    quantized = True

    def __init__(self, cfg: QuantConfig):
        self.cfg = cfg

    def input(self) -> nn.Module:
        return qnn.QuantIdentity(act_quant=FixedPointAct.let(bit_width=self.cfg.input_bits), return_quant_tensor=True)

    def linear(self, name: str, n_in: int, n_out: int) -> nn.Module:
        q = self.cfg.for_layer(name)
        return qnn.QuantLinear(
            n_in,
            n_out,
            bias=True,
            weight_quant=FixedPointWeight.let(bit_width=q.weight_bits),
            bias_quant=FixedPointBias.let(bit_width=q.bias_bits),
            return_quant_tensor=False,
        )

    def relu(self, name: str) -> nn.Module:
        """The ReLU after layer ``name``, quantized with that layer's activation bit width."""
        bits = self.cfg.for_layer(name).activation_bits
        return qnn.QuantReLU(act_quant=FixedPointUnsignedAct.let(bit_width=bits), return_quant_tensor=True)

    def output(self) -> nn.Module:
        return qnn.QuantIdentity(act_quant=FixedPointAct.let(bit_width=self.cfg.output_bits), return_quant_tensor=False)


class FloatLayers:
    """The same network in plain PyTorch (for baselines and benchmarks)."""

    quantized = False

    def input(self) -> nn.Module:
        return nn.Identity()

    def linear(self, name: str, n_in: int, n_out: int) -> nn.Module:
        return nn.Linear(n_in, n_out)

    def relu(self, name: str) -> nn.Module:
        return nn.ReLU()

    def output(self) -> nn.Module:
        return nn.Identity()
