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
import os
from contextlib import contextmanager
from functools import cached_property
from typing import NamedTuple

import brevitas.nn as qnn
import torch
from brevitas.core.bit_width import BitWidthConst
from brevitas.core.function_wrapper import CeilSte, FloorSte, Identity, LogTwo, RoundSte, TensorClamp, TensorClampSte
from brevitas.core.function_wrapper.ops_ste import ScalarSignedClampMinSte
from brevitas.core.function_wrapper.shape import OverTensorView
from brevitas.core.quant import PrescaledRestrictIntQuant, RescalingIntQuant
from brevitas.core.restrict_val import PowerOfTwoRestrictValue
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling, StatsFromParameterScaling
from brevitas.core.stats import AbsMax
from brevitas.core.stats.view_wrapper import _ViewParameter
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.quant_tensor import IntQuantTensor, QuantTensor

FAST_PATH = os.environ.get("EDGEANN_QAT_FAST_PATH", "1") != "0"  # see _FastActivation, _FastWeightLayer

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
        return self.learned_scale(threshold)

    @cached_property
    def _scale_min_val(self) -> float | None:
        return _min_val(self.clamp_scaling.clamp_min_ste)[1]

    def learned_scale(self, threshold: torch.Tensor) -> torch.Tensor:
        """The learned power-of-two scale for the integer ``threshold`` (statistics collected: a fused scaling's
        training forward after its collection steps)."""
        shared = self.__dict__.get("_shared")
        if shared is not None and shared.get("threshold") is threshold:
            return shared["scale"]
        restricted = self._restricted_threshold(
            threshold, lambda t: self.restrict_threshold(self.restrict_threshold_pre(t)))
        scale = PowerOfTwoScaleFn.apply(self.value, restricted, self._scale_min_val, False)
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

    @cached_property
    def plain_abs_max(self) -> bool:
        """Whether the statistic is max |w| of the one weight, flattened (what :meth:`scale_of` computes directly)."""
        pls = self.parameter_list_stats
        return (pls.extra_tracked_params_list is None and type(pls.first_tracked_param) is _ViewParameter
                and type(pls.first_tracked_param.view_shape_impl) is OverTensorView
                and type(pls.stats.stats_impl) is AbsMax and pls.stats.stats_impl.stats_reduce_dim is None)

    @cached_property
    def _scale_min_val(self) -> float | None:
        return _min_val(self.stats_scaling_impl.clamp_scaling.clamp_min_ste)[1]

    def forward(self, x, threshold=None):
        if threshold is None or not self.fused:
            return super().forward(x, threshold)
        return self.scale_of(self.parameter_list_stats(x), threshold)

    def scale_of(self, stats: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """The power-of-two scale of the statistic ``stats`` for the integer ``threshold``."""
        ss = self.stats_scaling_impl
        restricted = self._restricted_threshold(
            threshold, lambda t: ss.restrict_clamp_threshold(ss.restrict_threshold_pre(t)))
        return PowerOfTwoScaleFn.apply(stats, restricted, self._scale_min_val, True)

    def abs_max(self, weight: torch.Tensor) -> torch.Tensor:
        """``parameter_list_stats(weight)`` when :attr:`plain_abs_max`: Brevitas' operations, without its modules."""
        return torch.max(torch.abs(weight.reshape(-1))).view(self.parameter_list_stats.stats.stats_output_shape)


@contextmanager
def brevitas_path():
    """Within this block, edgeann's layers train through Brevitas' module calls, not the fast path (the
    reference it is tested against; ``EDGEANN_QAT_FAST_PATH=0`` does the same for a whole process)."""
    global FAST_PATH
    saved, FAST_PATH = FAST_PATH, False
    try:
        yield
    finally:
        FAST_PATH = saved


class _IntPlan(NamedTuple):
    """What a fused integer quantizer needs besides its input and scale, fixed once its module is built."""

    zero_point: torch.Tensor
    bit_width: torch.Tensor
    signed: torch.Tensor  # IntQuantTensor's flags, as tensors
    training: torch.Tensor
    min_int: float
    max_int: float
    to_int: object
    clamp_passes_gradient: bool

    @classmethod
    def of(cls, tensor_quant, zero_point: torch.Tensor, signed: bool) -> "_IntPlan":
        bit_width = tensor_quant.msb_clamp_bit_width_impl()
        iq = tensor_quant.int_quant
        return cls(zero_point, bit_width, torch.tensor(signed), torch.tensor(True),
                   *tensor_quant._int_range(bit_width), _TO_INT[type(iq.float_to_int_impl)],
                   _CLAMP_PASSES_GRADIENT[type(iq.tensor_clamp_impl)])

    def quantize(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return FixedPointQuantFn.apply(x, scale, scale.view_as(scale), self.zero_point, self.min_int, self.max_int,
                                       self.to_int, self.clamp_passes_gradient)

    def quant_tensor(self, value: torch.Tensor, scale: torch.Tensor) -> IntQuantTensor:
        """The IntQuantTensor Brevitas would return (training), without ``IntQuantTensor.__new__``'s conversions."""
        return tuple.__new__(IntQuantTensor, (value, scale, self.zero_point, self.bit_width, self.signed, self.training))


def _cached_plan(module: torch.nn.Module, key, build):
    """``build()`` once per ``key`` (the device and dtype of the parameters: a moved model gets a new plan)."""
    cached = module.__dict__.get("_fast_plan")
    if cached is None or cached[0] != key:
        cached = (key, build())
        module.__dict__["_fast_plan"] = cached
    return cached[1]


class _ActivationPlan(NamedTuple):
    proxy: torch.nn.Module
    tensor_quant: FusedRescalingIntQuant
    scaling: FusedParameterFromRuntimeStatsScaling
    threshold: torch.Tensor  # the integer threshold (Brevitas' int_scaling_impl of the bit width)
    relu: bool
    quant: _IntPlan


class _FastActivation:
    """A quantized identity or ReLU whose training step, once its scale is learned, is the activation and two
    fused functions (:class:`PowerOfTwoScaleFn`, :class:`FixedPointQuantFn`) on the layer's own parameter,
    without Brevitas' module calls: the same operations on the same tensors, in the same order, so the same
    values and gradients (tests/test_fast_path.py). Statistics collection, evaluation and export are Brevitas'."""

    def _build_plan(self) -> _ActivationPlan | None:
        proxy = self.act_quant
        fused_proxy = getattr(proxy, "fused_activation_quant_proxy", None)
        tq = getattr(fused_proxy, "tensor_quant", None)
        if not (isinstance(tq, FusedRescalingIntQuant) and tq.fused and not proxy.skip_create_quant_tensor
                and isinstance(tq.scaling_impl, FusedParameterFromRuntimeStatsScaling) and tq.scaling_impl.fused
                and not self.input_quant.is_quant_enabled):
            return None
        act = fused_proxy.activation_impl
        if type(act) is torch.nn.ReLU and not act.inplace:
            relu = True
        elif type(act) is Identity or type(act) is torch.nn.Identity:
            relu = False
        else:
            return None
        bit_width = tq.msb_clamp_bit_width_impl()
        return _ActivationPlan(proxy, tq, tq.scaling_impl, tq._int_threshold(bit_width), relu,
                               _IntPlan.of(tq, tq.zero_point_impl.zero_point(), proxy.is_signed))

    def _plan(self) -> _ActivationPlan | None:
        if not (FAST_PATH and self.training) or self.export_mode:
            return None
        value = self.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value
        plan = _cached_plan(self, (value.device, value.dtype), self._build_plan)
        if plan is None:
            return None
        scaling = plan.scaling
        if (scaling.counter <= scaling.collect_stats_steps or scaling.local_loss_mode or not scaling.training
                or plan.tensor_quant.observer_only or not plan.proxy.is_quant_enabled or not plan.proxy.training):
            return None  # collecting statistics, calibrating or switched off: Brevitas' own path
        return plan

    def forward(self, x):
        plan = self._plan()
        if plan is None:
            return super().forward(x)
        value = _value(x)
        if plan.relu:
            value = torch.relu(value)
        scale = plan.scaling.learned_scale(plan.threshold)
        y = plan.quant.quantize(value, scale)
        return plan.quant.quant_tensor(y, scale) if self.return_quant_tensor else y


class QuantIdentity(_FastActivation, qnn.QuantIdentity):
    pass


class QuantReLU(_FastActivation, qnn.QuantReLU):
    pass


class _WeightPlan(NamedTuple):
    tensor_quant: FusedRescalingIntQuant
    scaling: FusedStatsFromParameterScaling
    threshold: torch.Tensor
    weight: _IntPlan
    bias: _IntPlan | None


class _FastWeightLayer:
    """A weight layer whose output leaves as a plain tensor (``return_quant_tensor=False``).

    It computes the product on the quantized values alone: Brevitas would dispatch it through QuantTensor's
    handler, which derives the accumulator's scale and bit width and compares scales on the device (host
    syncs) only to drop them. In training, the weight, the bias and the product are computed without
    Brevitas' module calls either, by the fused functions on the layer's own parameters, operation for
    operation as Brevitas orders them (the same values and gradients; tests/test_fast_path.py)."""

    channel_dim = 1  # of the output, where the bias goes

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        if self.return_quant_tensor:
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        return super().inner_forward_impl(_value(x), _value(quant_weight), _value(quant_bias))

    def _build_plan(self) -> _WeightPlan | None:
        wq, bq = self.weight_quant, self.bias_quant
        wtq = wq.tensor_quant
        if not (isinstance(wtq, FusedRescalingIntQuant) and wtq.fused and not wq.requires_quant_input
                and isinstance(wtq.scaling_impl, FusedStatsFromParameterScaling) and wtq.scaling_impl.fused
                and wtq.scaling_impl.plain_abs_max and not wq.skip_create_quant_tensor
                and not self.input_quant.is_quant_enabled and not self.output_quant.is_quant_enabled
                and not self.return_quant_tensor):
            return None
        bias = None
        if self.bias is not None:
            btq = bq.tensor_quant
            if not (isinstance(btq, FusedPrescaledRestrictIntQuant) and btq.fused and bq.requires_input_scale
                    and not bq.skip_create_quant_tensor):
                return None
            bias = _IntPlan.of(btq, btq.zero_point(), bq.is_signed)
        bit_width = wtq.msb_clamp_bit_width_impl()
        return _WeightPlan(wtq, wtq.scaling_impl, wtq._int_threshold(bit_width),
                           _IntPlan.of(wtq, wtq.zero_point_impl.zero_point(), wq.is_signed), bias)

    def _plan(self) -> _WeightPlan | None:
        if not (FAST_PATH and self.training) or self.export_mode:
            return None
        weight = self.weight
        plan = _cached_plan(self, (weight.device, weight.dtype), self._build_plan)
        if plan is None or not (self.weight_quant.is_quant_enabled and self.weight_quant.training
                                and not plan.tensor_quant.observer_only):
            return None
        if plan.bias is not None and not self.bias_quant.is_quant_enabled:
            return None
        return plan

    def quant_weight(self, quant_input=None, subtensor_slice_list=None):
        plan = self._plan() if subtensor_slice_list is None else None
        if plan is None:
            return super().quant_weight(quant_input, subtensor_slice_list)
        return self._fast_weight(plan)

    def quant_bias(self, x, quant_weight):
        """``bias_quant(bias, x, quant_weight)``: the bias on the grid of x's scale times the weight's."""
        plan = self._plan()
        if plan is None or plan.bias is None or not isinstance(x, IntQuantTensor):
            return self.bias_quant(self.bias, x, quant_weight)
        return self._fast_bias(plan, x, quant_weight)

    def _fast_weight(self, plan: _WeightPlan) -> IntQuantTensor:
        weight = self.weight[slice(None)]  # Brevitas' (full) slice: one node, so the gradients add up as there
        scale = plan.scaling.scale_of(plan.scaling.abs_max(weight), plan.threshold)
        return plan.weight.quant_tensor(plan.weight.quantize(weight, scale), scale)

    def _fast_bias(self, plan: _WeightPlan, x: IntQuantTensor, quant_weight: IntQuantTensor) -> IntQuantTensor:
        shape = [1] * x.value.dim()
        shape[self.channel_dim] = -1
        scale = (quant_weight.scale.view(shape) * x.scale.view(shape)).view(-1)
        return plan.bias.quant_tensor(plan.bias.quantize(self.bias, scale), scale)

    def forward(self, x):
        plan = self._plan()
        if plan is None or not isinstance(x, IntQuantTensor) or (plan.bias is None) != (self.bias is None):
            return super().forward(x)
        weight = self._fast_weight(plan)
        bias = None if plan.bias is None else self._fast_bias(plan, x, weight).value
        return super().inner_forward_impl(x.value, weight.value, bias)


class QuantLinear(_FastWeightLayer, qnn.QuantLinear):
    channel_dim = -1


class QuantConv1d(_FastWeightLayer, qnn.QuantConv1d):
    pass


class QuantConv2d(_FastWeightLayer, qnn.QuantConv2d):
    pass
