"""Fused fixed-point quantizers: Brevitas' quantizers in a few autograd operations, bit-identical.

Brevitas builds a quantizer from many small modules (a straight-through floor or round, a tensor clamp, the
min/max integer derived from the bit width on every call, the power-of-two restriction of the scale with its
own straight-through ceil and clamps); on edgeann's small networks those scalar operations and their
dispatch, not the arithmetic, were most of a QAT step. This module replaces them *inside* Brevitas, through
the presets' injector attributes (edgeann.quant), each class built from the same dependencies by name:

* :class:`FusedRescalingIntQuant` / :class:`FusedPrescaledRestrictIntQuant` (``tensor_quant``): the integer
  part, one :class:`FixedPointQuantFn`;
* :class:`FusedParameterFromRuntimeStatsScaling` / :class:`FusedStatsFromParameterScaling` (``scaling_impl``):
  the power-of-two scale, one :class:`PowerOfTwoScaleFn` (statistics collection and evaluation stay
  Brevitas' own code);
* :class:`QuantLinear` / :class:`QuantConv1d` / :class:`QuantConv2d`: a weight layer whose output is a plain
  tensor skips QuantTensor's accumulator bookkeeping (device-side scale comparisons and host syncs);
* :func:`scales_computed_once`: a recurrent layer computes each gate/state scale once per sequence.

They subclass Brevitas' classes, so state_dict keys, export, lowering and checkpoints are unchanged.
Each computes what Brevitas computes, operation for operation in the same order, and its backward is
PyTorch's derivative formulas for Brevitas' graph, so forward values and gradients are torch.equal to
Brevitas' (tests/test_fused_quant.py, including a few Adam steps of a whole MLP):

    forward   codes = clamp(floor_or_round(x / scale + zero_point), min_int, max_int)
              y     = codes * scale                       (the zero-point is zero)
    backward  straight through the floor/round; through the clamp only inside [min_int, max_int] (TensorClamp)
              or everywhere (TensorClampSte); scale gets the two terms of y = codes * scale and x / scale.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import cached_property

import brevitas.nn as qnn
import torch
from brevitas.core.bit_width import BitWidthConst
from brevitas.core.function_wrapper import CeilSte, FloorSte, Identity, LogTwo, RoundSte, TensorClamp, TensorClampSte
from brevitas.core.function_wrapper.ops_ste import ScalarSignedClampMinSte
from brevitas.core.quant import PrescaledRestrictIntQuant, RescalingIntQuant
from brevitas.core.restrict_val import PowerOfTwoRestrictValue
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling, StatsFromParameterScaling
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.quant_tensor import QuantTensor

_TO_INT = {FloorSte: torch.floor, RoundSte: torch.round}  # straight-through in Brevitas, and here
_CLAMP_PASSES_GRADIENT = {TensorClamp: False, TensorClampSte: True}


class FixedPointQuantFn(torch.autograd.Function):
    """``IntQuant``'s forward and its autograd graph's backward, for a zero zero-point, in one node.

    ``scale`` comes in twice, as the divisor of ``x`` and as the factor of the codes, and gets its gradient
    as two terms on two edges, as Brevitas' graph (a division, then a product) gives it: the autograd engine
    then adds the terms to the scale's other uses (the bias scale) in the same order, so even the learned
    scales' gradients are bit-identical, not merely equal up to the order of a sum.

    The clamp's gradient mask is ``min_int <= codes <= max_int``; the codes are integers, so that is
    ``hardtanh_backward``'s open interval (min_int - 1, max_int + 1): one pass, no boolean tensor (a masked
    fill is ten times slower on the CPU)."""

    @staticmethod
    def forward(ctx, x, scale_product, scale_division, zero_point, min_int: float, max_int: float, to_int,
                clamp_passes_gradient: bool):
        scaled = x / scale_division
        unclamped = scaled + zero_point
        to_int(unclamped, out=unclamped)
        # ``codes - zero_point`` is omitted: x - (+0.0) is x, bit for bit (a fused zero-point is always zero)
        if clamp_passes_gradient:
            codes, ctx.int_range = unclamped.clamp_(min_int, max_int), None
            ctx.save_for_backward(scaled, codes, scale_product, None)
        else:
            codes, ctx.int_range = torch.clamp(unclamped, min_int, max_int), (min_int - 1, max_int + 1)
            ctx.save_for_backward(scaled, codes, scale_product, unclamped)
        return codes * scale_product

    @staticmethod
    def backward(ctx, grad):
        scaled, codes, scale, unclamped = ctx.saved_tensors
        grad_codes = grad * scale
        if ctx.int_range is not None:
            grad_codes = torch.ops.aten.hardtanh_backward(grad_codes, unclamped, *ctx.int_range)
        grad_x = grad_product = grad_division = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_codes / scale
        if ctx.needs_input_grad[1]:
            grad_product = (grad * codes).sum_to_size(scale.shape)
        if ctx.needs_input_grad[2]:
            # autograd's -grad * ((x / s) / s), summed: negating the sum instead of every term is bit-identical
            grad_division = -(grad_codes * (scaled / scale)).sum_to_size(scale.shape)
        return grad_x, grad_product, grad_division, None, None, None, None, None


class _FusedIntQuant:
    """What both fused quantizers share: whether ``int_quant`` is fusable, and its integer range."""

    def _fusable(self) -> bool:
        iq = self.int_quant
        return (type(iq.float_to_int_impl) in _TO_INT and type(iq.tensor_clamp_impl) in _CLAMP_PASSES_GRADIENT
                and type(iq.delay_wrapper.delay_impl).__name__ == "_NoDelay"
                and type(iq.input_view_impl).__name__ == "Identity"
                and isinstance(self.msb_clamp_bit_width_impl, BitWidthConst))

    def _quantize(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bit_width: torch.Tensor):
        iq = self.int_quant
        min_int, max_int = self._int_range(bit_width)
        # a view as the second input: the same tensor twice makes torch.compile break the graph
        return FixedPointQuantFn.apply(x, scale, scale.view_as(scale), zero_point, min_int, max_int,
                                       _TO_INT[type(iq.float_to_int_impl)],
                                       _CLAMP_PASSES_GRADIENT[type(iq.tensor_clamp_impl)])

    def _int_range(self, bit_width: torch.Tensor) -> tuple[float, float]:
        """(min_int, max_int) of the constant bit width, as numbers (a clamp to numbers is faster than to tensors)."""
        cached = self.__dict__.get("_int_range_cache")
        if cached is None:
            cached = (float(self.int_quant.min_int(bit_width)), float(self.int_quant.max_int(bit_width)))
            self.__dict__["_int_range_cache"] = cached
        return cached


class FusedRescalingIntQuant(_FusedIntQuant, RescalingIntQuant):
    """:class:`brevitas.core.quant.RescalingIntQuant` (weights, activations) with the integer part fused."""

    def __init__(self, int_quant, scaling_impl, int_scaling_impl, zero_point_impl, bit_width_impl):
        super().__init__(int_quant, scaling_impl, int_scaling_impl, zero_point_impl, bit_width_impl)
        self.fused = self._fusable() and isinstance(zero_point_impl, ZeroZeroPoint)
        self._threshold_cache: dict = {}

    def forward(self, x: torch.Tensor):
        if not self.fused or self.observer_only:
            return super().forward(x)
        bit_width = self.msb_clamp_bit_width_impl()
        int_threshold = self._int_threshold(bit_width)
        scale = self.scaling_impl(x, int_threshold)
        zero_point = self.zero_point_impl(x, scale, bit_width)
        return self._quantize(x, scale, zero_point, bit_width), scale, zero_point, bit_width

    def _int_threshold(self, bit_width: torch.Tensor) -> torch.Tensor:
        key = (bit_width.device, bit_width.dtype)  # the bit width itself is constant (BitWidthConst)
        if key not in self._threshold_cache:
            self._threshold_cache[key] = self.int_scaling_impl(bit_width)
        return self._threshold_cache[key]


class FusedPrescaledRestrictIntQuant(_FusedIntQuant, PrescaledRestrictIntQuant):
    """:class:`brevitas.core.quant.PrescaledRestrictIntQuant` (biases: scale = input scale x weight scale) with
    the integer part fused."""

    def __init__(self, int_quant, bit_width_impl):
        super().__init__(int_quant, bit_width_impl)
        self.fused = self._fusable()

    def forward(self, x: torch.Tensor, scale: torch.Tensor):
        if not self.fused:
            return super().forward(x, scale)
        bit_width = self.msb_clamp_bit_width_impl()
        zero_point = self.zero_point()
        return self._quantize(x, scale, zero_point, bit_width), scale, zero_point, bit_width


def _value(x):
    return x.value if isinstance(x, QuantTensor) else x


class PowerOfTwoScaleFn(torch.autograd.Function):
    """A power-of-two scale and its gradient, as Brevitas' scaling modules compute them, in one node:

        value = clamp_min(2 ** ceil(exponent), min_val) / threshold      (a learned activation scale), or
        value = clamp_min(2 ** ceil(log2(clamp_min(stats, min_val))), min_val) / threshold  (``from_stats``: weights)

    with straight-through ceil and clamps, and PyTorch's own derivative formulas for ``2 ** t``, ``log2`` and
    the division (so the gradient is the same float32 number). ``threshold`` is a constant (from the bit width).
    """

    @staticmethod
    def forward(ctx, exponent_or_stats, threshold, min_val, from_stats: bool):
        stats = None
        exponent = exponent_or_stats
        if from_stats:
            stats = _clamp_min(exponent_or_stats, min_val)
            exponent = torch.log2(stats)
        power = 2.0 ** torch.ceil(exponent)
        ctx.save_for_backward(power, threshold, stats)
        return _clamp_min(power, min_val) / threshold

    @staticmethod
    def backward(ctx, grad):
        power, threshold, stats = ctx.saved_tensors
        grad = grad / threshold
        grad = grad * (power * math.log(2.0))  # d 2**t / dt, as torch's pow_backward_exponent writes it
        if stats is not None:
            grad = grad / (stats * 0.6931471805599453)  # d log2(s) / ds, as torch's derivatives.yaml writes it
        return grad, None, None, None


def _clamp_min(x: torch.Tensor, min_val: float | None) -> torch.Tensor:
    """Brevitas' ScalarSignedClampMinSte on a non-negative scale: clamp_min (its sign factor is +1)."""
    return x if min_val is None else torch.clamp_min(x, min_val)


def _power_of_two_ceil(restrict) -> bool:
    impl = getattr(restrict, "restrict_value_impl", None)
    return isinstance(impl, PowerOfTwoRestrictValue) and isinstance(impl.float_to_int_impl, CeilSte)


def _min_val(clamp) -> tuple[bool, float | None]:
    """(understood, min_val) of a scale clamp: Identity (no clamp) or ScalarSignedClampMinSte."""
    if isinstance(clamp, Identity):
        return True, None
    if isinstance(clamp, ScalarSignedClampMinSte):
        return True, clamp.min_val
    return False, None


class _ConstantThreshold:
    """The restricted integer threshold depends on the bit width only: computed once per threshold tensor."""

    def _restricted_threshold(self, threshold: torch.Tensor, restrict) -> torch.Tensor:
        cached = self.__dict__.get("_threshold_entry")
        if cached is None or cached[0] is not threshold:
            with torch.no_grad():
                cached = (threshold, restrict(threshold))
            self.__dict__["_threshold_entry"] = cached
        return cached[1]


class FusedParameterFromRuntimeStatsScaling(_ConstantThreshold, ParameterFromRuntimeStatsScaling):
    """Brevitas' learned activation scale (statistics first, then a learned log2 parameter), with the learned
    power-of-two scale computed in one operation in training; statistics collection and evaluation are
    Brevitas' own code."""

    @cached_property
    def fused(self) -> bool:  # the submodules are fixed at construction
        return self._fusable()

    def _fusable(self) -> bool:
        understood, _ = _min_val(self.clamp_scaling.clamp_min_ste)
        return (understood and _power_of_two_ceil(self.restrict_scaling) and _power_of_two_ceil(self.restrict_threshold)
                and isinstance(self.restrict_threshold_pre, LogTwo)
                and isinstance(self.restrict_scale_threshold.restrict_value_impl, Identity))

    def training_forward(self, stats_input: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        if self.counter < self.collect_stats_steps or not self.fused or self.local_loss_mode:
            return super().training_forward(stats_input, threshold)
        if self.counter == self.collect_stats_steps:
            self.init_scale()
        shared = self.__dict__.get("_shared")
        if shared is not None and shared.get("threshold") is threshold:
            return shared["scale"]
        restricted = self._restricted_threshold(
            threshold, lambda t: self.restrict_threshold(self.restrict_threshold_pre(t)))
        scale = PowerOfTwoScaleFn.apply(self.value, restricted, _min_val(self.clamp_scaling.clamp_min_ste)[1], False)
        if shared is not None:
            shared.update(threshold=threshold, scale=scale)
        return scale


@contextmanager
def scales_computed_once(module: torch.nn.Module):
    """Within this block, each learned activation scale in ``module`` is computed once and reused, for a layer
    that calls the same quantizers at every time step (one node in the graph, not one per step; the gradient
    is the same sum, accumulated before the scale's derivative instead of after it). Statistics collection is
    unaffected (its scale changes with every call)."""
    impls = [m for m in module.modules() if isinstance(m, FusedParameterFromRuntimeStatsScaling)]
    for m in impls:
        m.__dict__["_shared"] = {}
    try:
        yield
    finally:
        for m in impls:
            m.__dict__.pop("_shared", None)


class FusedStatsFromParameterScaling(_ConstantThreshold, StatsFromParameterScaling):
    """Brevitas' weight scale from max |w|, with the power-of-two rounding of the statistic in one operation."""

    @cached_property
    def fused(self) -> bool:  # the submodules are fixed at construction
        return self._fusable()

    def _fusable(self) -> bool:
        ss = self.stats_scaling_impl
        clamp_ok, clamp_min = _min_val(ss.clamp_scaling.clamp_min_ste)
        restrict_ok, restrict_min = _min_val(ss.restrict_clamp_scaling.clamp_ste)
        return (clamp_ok and restrict_ok and clamp_min == restrict_min and isinstance(ss.affine_rescaling, Identity)
                and isinstance(ss.restrict_scaling_pre, LogTwo) and isinstance(ss.restrict_threshold_pre, LogTwo)
                and _power_of_two_ceil(ss.restrict_clamp_scaling) and _power_of_two_ceil(ss.restrict_clamp_threshold)
                and isinstance(ss.restrict_clamp_threshold.clamp_ste, Identity)
                and isinstance(ss.restrict_clamp_scale_threshold.restrict_value_impl, Identity)
                and isinstance(ss.restrict_clamp_scale_threshold.clamp_ste, Identity))

    def forward(self, x, threshold=None):
        if threshold is None or not self.fused:
            return super().forward(x, threshold)
        ss = self.stats_scaling_impl
        stats = self.parameter_list_stats(x)
        restricted = self._restricted_threshold(
            threshold, lambda t: ss.restrict_clamp_threshold(ss.restrict_threshold_pre(t)))
        return PowerOfTwoScaleFn.apply(stats, restricted, _min_val(ss.clamp_scaling.clamp_min_ste)[1], True)


class _PlainAccumulator:
    """A weight layer whose output leaves as a plain tensor (``return_quant_tensor=False``): it computes the
    product on the quantized values alone. Brevitas would dispatch it through QuantTensor's handler, which
    derives the accumulator's scale and bit width and compares scales on the device (host syncs) only to
    drop them. The values are the same operation on the same tensors."""

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        if self.return_quant_tensor:
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        return super().inner_forward_impl(_value(x), _value(quant_weight), _value(quant_bias))


class QuantLinear(_PlainAccumulator, qnn.QuantLinear):
    pass


class QuantConv1d(_PlainAccumulator, qnn.QuantConv1d):
    pass


class QuantConv2d(_PlainAccumulator, qnn.QuantConv2d):
    pass
