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
``output()``, named so per-layer bit widths from the flow apply; CNNs add ``conv()``,
``batchnorm()`` and ``requantize()``, and the parameter-free layers of :class:`ShapeLayers`.

:func:`stats_collection_state` / :func:`restore_stats_collection` carry what the activation quantizers
keep outside ``state_dict`` during their first ``collect_stats_steps`` training steps, so training can
be checkpointed and continued exactly.
"""

from __future__ import annotations

import torch
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling
from brevitas.inject.enum import FloatToIntImplType
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Int16Bias,
    Uint8ActPerTensorFixedPoint,
)
from torch import nn

from edgeann import fused
from edgeann.config import QuantConfig
from edgeann.fused import (
    FusedParameterFromRuntimeStatsScaling,
    FusedPrescaledRestrictIntQuant,
    FusedRescalingIntQuant,
    FusedStatsFromParameterScaling,
)
from edgeann.layers import ChannelsFirst, ChannelsLastFlatten, QuantBatchNorm, Residual


class FixedPointWeight(Int8WeightPerTensorFixedPoint):
    """Signed narrow-range weights with a per-tensor power-of-two scale (rounded to nearest)."""

    tensor_quant = FusedRescalingIntQuant
    scaling_impl = FusedStatsFromParameterScaling


class FixedPointAct(Int8ActPerTensorFixedPoint):
    """Signed activations with a learned power-of-two scale; truncating, saturating."""

    float_to_int_impl_type = FloatToIntImplType.FLOOR
    collect_stats_steps = 100
    tensor_quant = FusedRescalingIntQuant
    scaling_impl = FusedParameterFromRuntimeStatsScaling


class FixedPointUnsignedAct(Uint8ActPerTensorFixedPoint):
    """Unsigned (post-ReLU) activations with a learned power-of-two scale; truncating, saturating."""

    float_to_int_impl_type = FloatToIntImplType.FLOOR
    collect_stats_steps = 100
    tensor_quant = FusedRescalingIntQuant
    scaling_impl = FusedParameterFromRuntimeStatsScaling


class FixedPointBias(Int16Bias):
    """Bias on the accumulator grid: scale = input scale x weight scale."""

    tensor_quant = FusedPrescaledRestrictIntQuant


def _stats_scalings(model: nn.Module) -> dict[str, ParameterFromRuntimeStatsScaling]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ParameterFromRuntimeStatsScaling)}


def collecting_stats(model: nn.Module) -> bool:
    """Whether an activation quantizer of ``model`` is still in its statistics-collection steps."""
    return any(m.counter <= m.collect_stats_steps for m in _stats_scalings(model).values())


def stats_collection_state(model: nn.Module) -> dict[str, dict]:
    """Each activation quantizer's statistics phase: step counter, running statistics and learned value.

    Brevitas keeps the counter in a plain attribute and the running statistics in a buffer it leaves out of
    ``state_dict``; while it is still collecting, its ``state_dict`` holds the statistics in place of the
    learned value, and ``load_state_dict`` ends the collection (the scale freezes early). This is the state
    those three lose, to be put back with :func:`restore_stats_collection` after ``load_state_dict``.
    """
    return {name: {"counter": int(m.counter), "buffer": m.buffer.detach().clone(), "value": m.value.detach().clone()}
            for name, m in _stats_scalings(model).items()}


def restore_stats_collection(model: nn.Module, state: dict[str, dict]) -> None:
    """Put back what :func:`stats_collection_state` took (after ``load_state_dict``); ValueError if it does not fit."""
    scalings = _stats_scalings(model)
    if set(state) != set(scalings):
        raise ValueError(f"activation quantizers differ: {sorted(set(state) ^ set(scalings))[:3]}")
    with torch.no_grad():
        for name, m in scalings.items():
            m.counter = int(state[name]["counter"])
            m.buffer.copy_(state[name]["buffer"])
            m.value.copy_(state[name]["value"])


class ShapeLayers:
    """Layers without parameters or quantizers of their own, the same in the quantized and the float network:
    layout changes (see :mod:`edgeann.layers`), pooling and the residual connection."""

    def channels_first(self, dims: int) -> nn.Module:
        return ChannelsFirst(dims)

    def flatten(self, dims: int) -> nn.Module:
        return ChannelsLastFlatten(dims)

    def max_pool(self, dims: int, size: tuple[int, ...], stride: tuple[int, ...]) -> nn.Module:
        return (nn.MaxPool1d, nn.MaxPool2d)[dims - 1](size, stride)

    def avg_pool(self, dims: int, size: tuple[int, ...], stride: tuple[int, ...]) -> nn.Module:
        """The exact mean (a power-of-two window); follow it with :meth:`requantize`."""
        return (nn.AvgPool1d, nn.AvgPool2d)[dims - 1](size, stride)

    def residual(self, body: nn.Sequential, after: nn.Module) -> nn.Module:
        return Residual(body, after)


class QuantLayers(ShapeLayers):
    """Brevitas layers with edgeann's presets and the flow's bit widths."""

    quantized = True

    def __init__(self, cfg: QuantConfig):
        self.cfg = cfg
        self.layer_names: list[str] = []  # every name the model asked bits for: what quantization.layers may name

    def _bits(self, name: str):
        if name not in self.layer_names:
            self.layer_names.append(name)
        return self.cfg.for_layer(name)

    def input(self) -> nn.Module:
        return fused.QuantIdentity(act_quant=FixedPointAct.let(bit_width=self.cfg.input_bits), return_quant_tensor=True)

    def linear(self, name: str, n_in: int, n_out: int) -> nn.Module:
        q = self._bits(name)
        return fused.QuantLinear(
            n_in,
            n_out,
            bias=True,
            weight_quant=FixedPointWeight.let(bit_width=q.weight_bits),
            bias_quant=FixedPointBias.let(bit_width=q.bias_bits),
            return_quant_tensor=False,
        )

    def relu(self, name: str) -> nn.Module:
        """The ReLU after layer ``name``, quantized with that layer's activation bit width."""
        bits = self._bits(name).activation_bits
        return fused.QuantReLU(act_quant=FixedPointUnsignedAct.let(bit_width=bits), return_quant_tensor=True)

    def output(self) -> nn.Module:
        return fused.QuantIdentity(act_quant=FixedPointAct.let(bit_width=self.cfg.output_bits), return_quant_tensor=False)

    def conv(self, name: str, dims: int, c_in: int, c_out: int, kernel, stride, padding) -> nn.Module:
        """A 1-D or 2-D convolution (channels-first inside the model); ``padding`` as PyTorch takes it."""
        q = self._bits(name)
        return (fused.QuantConv1d, fused.QuantConv2d)[dims - 1](
            c_in,
            c_out,
            kernel,
            stride=stride,
            padding=padding,
            bias=True,
            weight_quant=FixedPointWeight.let(bit_width=q.weight_bits),
            bias_quant=FixedPointBias.let(bit_width=q.bias_bits),
            return_quant_tensor=False,
        )

    def batchnorm(self, name: str, dims: int, channels: int) -> nn.Module:
        """Batch normalization kept as a fixed-point ``x * s + t`` (s with the weight bits, t with the bias bits)."""
        q = self._bits(name)
        return QuantBatchNorm(channels, q.weight_bits, q.bias_bits)

    def recurrent(self, cell: str, name: str, n_in: int, hidden: int, *, gate_bits: int, table_bits: int,
                  return_sequences: bool = False) -> nn.Module:
        """A quantization-aware GRU or LSTM (``cell``; :mod:`edgeann.models.recurrent`): weights and biases with layer
        ``name``'s bits, the state with its activation bits, gate pre-activations (and the LSTM's cell) with
        ``gate_bits``, tables ``table_bits`` wide."""
        from edgeann.models.recurrent import QuantGRU, QuantLSTM

        q = self._bits(name)
        kw = {"cell_quant": FixedPointAct.let(bit_width=gate_bits)} if cell == "lstm" else {}
        return {"gru": QuantGRU, "lstm": QuantLSTM}[cell](
            name, n_in, hidden, weight_quant=FixedPointWeight.let(bit_width=q.weight_bits),
            bias_quant=FixedPointBias.let(bit_width=q.bias_bits), gate_quant=FixedPointAct.let(bit_width=gate_bits),
            state_quant=FixedPointAct.let(bit_width=q.activation_bits), table_bits=table_bits,
            return_sequences=return_sequences, **kw)

    def requantize(self, name: str, signed: bool = True) -> nn.Module:
        """A truncating, saturating quantizer with layer ``name``'s activation bit width (after an exact sum)."""
        bits = self._bits(name).activation_bits
        act = FixedPointAct if signed else FixedPointUnsignedAct
        return fused.QuantIdentity(act_quant=act.let(bit_width=bits), return_quant_tensor=True)


class FloatLayers(ShapeLayers):
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

    def conv(self, name: str, dims: int, c_in: int, c_out: int, kernel, stride, padding) -> nn.Module:
        return (nn.Conv1d, nn.Conv2d)[dims - 1](c_in, c_out, kernel, stride=stride, padding=padding)

    def batchnorm(self, name: str, dims: int, channels: int) -> nn.Module:
        return (nn.BatchNorm1d, nn.BatchNorm2d)[dims - 1](channels)

    def requantize(self, name: str, signed: bool = True) -> nn.Module:
        return nn.Identity()

    def recurrent(self, cell: str, name: str, n_in: int, hidden: int, *, gate_bits: int, table_bits: int,
                  return_sequences: bool = False) -> nn.Module:
        from edgeann.models.recurrent import FloatGRU, FloatLSTM

        return {"gru": FloatGRU, "lstm": FloatLSTM}[cell](name, n_in, hidden, return_sequences=return_sequences)
