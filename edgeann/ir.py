"""The fixed-point graph: the one description of a trained network that every back end reads.

A trained model (or a foreign QONNX file) is lowered into a :class:`Graph` of integer weights
and exact fixed-point types. From it edgeann writes the onnxruntime reference (``model.onnx``),
the hls4ml firmware and the report, and it executes it here in exact integer arithmetic
(:meth:`Graph.execute`), which is the golden model the others are compared with.

Arithmetic convention (the same in PyTorch, ONNX and firmware):
* a tensor holds integers ``q`` on the grid of its :class:`FixedType`: value = ``q * 2**-frac``;
* products and sums are exact (accumulators are sized so they can never overflow);
* every requantization **truncates** (floor, ``AP_TRN``) and then **saturates** (``AP_SAT``).
  Foreign models may ask for round-half-to-even instead (``rounding="half_even"``,
  ``AP_RND_CONV``, what ONNX ``QuantizeLinear`` does); edgeann's own models never do.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

# --------------------------------------------------------------------------------------------
# Fixed-point types


@dataclass(frozen=True)
class FixedType:
    """``width`` bits, ``frac`` of them after the binary point (may be negative or exceed width)."""

    width: int
    frac: int
    signed: bool = True
    narrow: bool = False  # symmetric range: the most negative code is not used

    def __post_init__(self):
        if self.width < 1 or (self.signed and self.width < 2):
            raise ValueError(f"a {'signed' if self.signed else 'unsigned'} fixed-point type needs more than {self.width} bit(s)")

    @property
    def integer(self) -> int:
        """Integer bits including the sign bit: the ``I`` of ``ap_fixed<W, I>``."""
        return self.width - self.frac

    @property
    def int_min(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.width - 1)) + (1 if self.narrow else 0)

    @property
    def int_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def scale(self) -> float:
        return 2.0 ** -self.frac

    def hls(self, rounding: str = "AP_TRN", saturation: str = "AP_WRAP") -> str:
        """The ``ap_fixed``/``ap_ufixed`` spelling, e.g. ``ap_fixed<8,3,AP_TRN,AP_SAT>``."""
        base = "ap_fixed" if self.signed else "ap_ufixed"
        if self.narrow and saturation == "AP_SAT":
            saturation = "AP_SAT_SYM"
        if rounding == "AP_TRN" and saturation == "AP_WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},{rounding},{saturation}>"

    def __str__(self) -> str:
        return self.hls()

    @staticmethod
    def covering(lo: int, hi: int, frac: int) -> FixedType:
        """The narrowest signed type on grid ``2**-frac`` that holds every integer in [lo, hi]."""
        width = 2
        while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
            width += 1
        return FixedType(width, frac, True)


ROUNDINGS = ("floor", "half_even")  # floor = AP_TRN (edgeann's own models); half_even = AP_RND_CONV


def quantize_float(x: np.ndarray, t: FixedType, rounding: str = "floor") -> np.ndarray:
    """Float input to integer codes of ``t``: round onto the grid, then saturate (exact in float64)."""
    x = np.asarray(x, dtype=np.float64)
    scaled = x * 2.0**t.frac
    if rounding == "half_even":
        v = np.round(scaled)
    else:
        v = np.floor(scaled)
        # x * 2**frac is exact unless it underflows to -0.0 (x a tiny negative, frac < 0): its floor is then -1
        v = np.where((v == 0) & (x < 0), -1.0, v)
    return np.clip(v, t.int_min, t.int_max).astype(np.int64)


def requantize(q: np.ndarray, frac: int, t: FixedType, rounding: str = "floor") -> np.ndarray:
    """Integer codes on grid ``2**-frac`` to codes of ``t``: round (floor = arithmetic shift), saturate."""
    shift = frac - t.frac
    if shift <= 0:
        q = q << (-shift)
    elif rounding == "half_even":
        floor = q >> shift
        rest = q - (floor << shift)  # 0 .. 2**shift - 1
        half = 1 << (shift - 1)
        q = floor + ((rest > half) | ((rest == half) & (floor & 1 == 1)))
    else:
        q = q >> shift
    return np.clip(q, t.int_min, t.int_max)


def _align(q: np.ndarray, frac: int, to_frac: int) -> np.ndarray:
    assert to_frac >= frac
    return q << (to_frac - frac)


# --------------------------------------------------------------------------------------------
# Tensors and nodes


@dataclass(frozen=True)
class TensorInfo:
    """What is known of a tensor: per-sample shape, type, and the integer range it can take."""

    shape: tuple[int, ...]
    type: FixedType
    lo: int
    hi: int


NODE_TYPES: dict[str, type[Node]] = {}


@dataclass
class Node:
    """A layer of the fixed-point graph. Its output tensor is named like the node."""

    name: str
    inputs: list[str]
    op: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.op:
            NODE_TYPES[cls.op] = cls

    def infer(self, ins: list[TensorInfo]) -> TensorInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, ins: list[np.ndarray], infos: list[TensorInfo]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Input(Node):
    """The graph input: float values, truncated and saturated onto ``type``."""

    shape: tuple[int, ...] = ()
    type: FixedType = FixedType(8, 0)
    rounding: str = "floor"
    op: ClassVar[str] = "Input"

    def infer(self, ins):
        return TensorInfo(tuple(self.shape), self.type, self.type.int_min, self.type.int_max)


def _requant_info(shape, t: FixedType, lo: int, hi: int, frac: int, rounding: str = "floor") -> TensorInfo:
    """Range of ``requantize`` applied to integers in [lo, hi] on grid ``frac``."""
    lo_q, hi_q = requantize(np.array([lo, hi], dtype=np.int64), frac, t, rounding)
    return TensorInfo(tuple(shape), t, int(lo_q), int(hi_q))


@dataclass
class Dense(Node):
    """``y = W x + b`` with integer ``weight`` (n_out, n_in) and ``bias`` (n_out,); exact result."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    weight_type: FixedType = FixedType(8, 0)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias_type: FixedType = FixedType(16, 0)
    op: ClassVar[str] = "Dense"

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    def acc_frac(self, x: TensorInfo) -> int:
        return max(x.type.frac + self.weight_type.frac, self.bias_type.frac)

    def infer(self, ins):
        (x,) = ins
        if x.shape != (self.n_in,):
            raise ValueError(f"{self.name}: expects {self.n_in} inputs, got shape {x.shape}")
        frac = self.acc_frac(x)
        w = _align(self.weight.astype(np.int64), x.type.frac + self.weight_type.frac, frac)
        b = _align(self.bias.astype(np.int64), self.bias_type.frac, frac)
        hi = b + np.where(w > 0, w * x.hi, w * x.lo).sum(axis=1)
        lo = b + np.where(w > 0, w * x.lo, w * x.hi).sum(axis=1)
        lo_i, hi_i = int(lo.min(initial=0)), int(hi.max(initial=0))
        return TensorInfo((self.n_out,), FixedType.covering(lo_i, hi_i, frac), lo_i, hi_i)

    def execute(self, ins, infos):
        (x,), (xi,) = ins, infos
        frac = self.acc_frac(xi)
        acc = x @ self.weight.astype(np.int64).T
        acc = _align(acc, xi.type.frac + self.weight_type.frac, frac)
        return acc + _align(self.bias.astype(np.int64), self.bias_type.frac, frac)


@dataclass
class Relu(Node):
    """``max(x, 0)`` requantized (floor, saturate) onto ``type``."""

    type: FixedType = FixedType(8, 0, False)
    rounding: str = "floor"
    op: ClassVar[str] = "Relu"

    def infer(self, ins):
        (x,) = ins
        return _requant_info(x.shape, self.type, max(x.lo, 0), max(x.hi, 0), x.type.frac, self.rounding)

    def execute(self, ins, infos):
        return requantize(np.maximum(ins[0], 0), infos[0].type.frac, self.type, self.rounding)


@dataclass
class Quantize(Node):
    """Identity requantized (floor, saturate) onto ``type``: e.g. the output quantizer."""

    type: FixedType = FixedType(8, 0)
    rounding: str = "floor"
    op: ClassVar[str] = "Quantize"

    def infer(self, ins):
        (x,) = ins
        return _requant_info(x.shape, self.type, x.lo, x.hi, x.type.frac, self.rounding)

    def execute(self, ins, infos):
        return requantize(ins[0], infos[0].type.frac, self.type, self.rounding)


# -- convolutional networks: tensors are channels-last, (*spatial, channels), 1-D or 2-D


def _ints(v) -> tuple[int, ...]:
    return tuple(int(i) for i in v)


def _window_view(x: np.ndarray, window: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """(n, *spatial, c) -> (n, *out, *window, c): every window position, no copy."""
    d = len(window)
    v = np.lib.stride_tricks.sliding_window_view(x, window, axis=tuple(range(1, 1 + d)))  # (n, *full, c, *window)
    v = v[(slice(None), *(slice(None, None, s) for s in stride))]
    return np.moveaxis(v, 1 + d, -1)


def _window_out(node: Node, spatial: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...],
                pads: tuple[int, ...]) -> tuple[int, ...]:
    """Output extent of a sliding window; ``pads`` = (before, after) per spatial axis."""
    if len(spatial) != len(window):
        raise ValueError(f"{node.name}: a {len(window)}-D window on an input of {len(spatial)} spatial dimension(s)")
    out = []
    for n, k, s, (before, after) in zip(spatial, window, stride, zip(pads[::2], pads[1::2])):
        if n + before + after < k:
            raise ValueError(f"{node.name}: window {k} is larger than the (padded) input extent {n + before + after}")
        out.append((n + before + after - k) // s + 1)
    return tuple(out)


@dataclass
class Conv(Node):
    """Channels-last convolution: input (*spatial, c_in), integer ``weight`` (*kernel, c_in, c_out), ``bias``
    (c_out,); zero padding ``pads`` = (before, after) per spatial axis, ``stride`` per axis. Exact result,
    like :class:`Dense` at every output position."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 0, 0), np.int64))
    weight_type: FixedType = FixedType(8, 0)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias_type: FixedType = FixedType(16, 0)
    stride: tuple[int, ...] = ()  # () = 1 along every axis
    pads: tuple[int, ...] = ()  # () = no padding
    op: ClassVar[str] = "Conv"

    def __post_init__(self):
        d = self.weight.ndim - 2
        if d not in (1, 2):
            raise ValueError(f"{self.name}: weight of shape {self.weight.shape} is not (*kernel, c_in, c_out) of a 1-D or 2-D convolution")
        self.stride = _ints(self.stride) or (1,) * d
        self.pads = _ints(self.pads) or (0,) * (2 * d)
        if len(self.stride) != d or len(self.pads) != 2 * d or min(self.stride) < 1 or min(self.pads) < 0:
            raise ValueError(f"{self.name}: stride {self.stride} / pads {self.pads} do not fit a {d}-D kernel")

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[:-2])

    @property
    def n_in(self) -> int:
        """Inputs of one output value (kernel positions x input channels): the fan-in."""
        return int(np.prod(self.weight.shape[:-1]))

    @property
    def n_out(self) -> int:
        return self.weight.shape[-1]

    def acc_frac(self, x: TensorInfo) -> int:
        return max(x.type.frac + self.weight_type.frac, self.bias_type.frac)

    def infer(self, ins):
        (x,) = ins
        if len(x.shape) != len(self.kernel) + 1 or x.shape[-1] != self.weight.shape[-2]:
            raise ValueError(f"{self.name}: expects ({', '.join(['...'] * len(self.kernel))}, {self.weight.shape[-2]}) "
                             f"channels-last inputs, got shape {x.shape}")
        out = _window_out(self, x.shape[:-1], self.kernel, self.stride, self.pads)
        frac = self.acc_frac(x)
        w = _align(self.weight.astype(np.int64).reshape(-1, self.n_out), x.type.frac + self.weight_type.frac, frac)
        b = _align(self.bias.astype(np.int64), self.bias_type.frac, frac)
        x_lo, x_hi = (min(x.lo, 0), max(x.hi, 0)) if any(self.pads) else (x.lo, x.hi)  # padding reads zeros
        hi = b + np.where(w > 0, w * x_hi, w * x_lo).sum(axis=0)
        lo = b + np.where(w > 0, w * x_lo, w * x_hi).sum(axis=0)
        lo_i, hi_i = int(lo.min(initial=0)), int(hi.max(initial=0))
        return TensorInfo((*out, self.n_out), FixedType.covering(lo_i, hi_i, frac), lo_i, hi_i)

    def execute(self, ins, infos, chunk: int = 1024):
        (x,), (xi,) = ins, infos
        d = len(self.kernel)
        x = np.pad(x, [(0, 0), *zip(self.pads[::2], self.pads[1::2]), (0, 0)])
        w = self.weight.astype(np.int64).reshape(-1, self.n_out)
        frac = self.acc_frac(xi)
        parts = []
        for i in range(0, max(len(x), 1), chunk):  # bounded memory for the unfolded windows
            win = _window_view(x[i : i + chunk], self.kernel, self.stride)
            parts.append(win.reshape(*win.shape[: 1 + d], -1) @ w)
        acc = _align(np.concatenate(parts), xi.type.frac + self.weight_type.frac, frac)
        return acc + _align(self.bias.astype(np.int64), self.bias_type.frac, frac)


@dataclass
class _Pool(Node):
    """Channels-last pooling over ``pool`` windows moved by ``stride`` (default: the window), no padding."""

    pool: tuple[int, ...] = (2,)
    stride: tuple[int, ...] = ()

    def __post_init__(self):
        self.pool = _ints(self.pool)
        self.stride = _ints(self.stride) or self.pool
        if len(self.stride) != len(self.pool) or min(self.pool + self.stride) < 1:
            raise ValueError(f"{self.name}: pool {self.pool} / stride {self.stride} do not fit each other")

    def out_shape(self, x: TensorInfo) -> tuple[int, ...]:
        return (*_window_out(self, x.shape[:-1], self.pool, self.stride, (0,) * (2 * len(self.pool))), x.shape[-1])


@dataclass
class MaxPool(_Pool):
    """Channels-last max pooling: the largest code of each window; type unchanged."""

    op: ClassVar[str] = "MaxPool"

    def infer(self, ins):
        (x,) = ins
        return TensorInfo(self.out_shape(x), x.type, x.lo, x.hi)

    def execute(self, ins, infos):
        win = _window_view(ins[0], self.pool, self.stride)
        return win.max(axis=tuple(range(-1 - len(self.pool), -1)))


@dataclass
class AvgPool(_Pool):
    """Channels-last average pooling, exact: the window area ``k`` is a power of two, so the mean of codes on grid
    ``2**-frac`` is their sum on grid ``2**-(frac + log2 k)`` (no rounding; a following node requantizes)."""

    op: ClassVar[str] = "AvgPool"

    def __post_init__(self):
        super().__post_init__()
        if self.area & (self.area - 1):
            raise ValueError(f"{self.name}: average pooling over {self.area} values is not exact; use a window "
                             "whose area is a power of two (2, 4, 8, 16, ...)")

    @property
    def area(self) -> int:
        return int(np.prod(self.pool))

    @property
    def shift(self) -> int:
        """log2 of the window area: the fraction bits the mean adds."""
        return self.area.bit_length() - 1

    def infer(self, ins):
        (x,) = ins
        lo, hi = x.lo * self.area, x.hi * self.area
        return TensorInfo(self.out_shape(x), FixedType.covering(lo, hi, x.type.frac + self.shift), lo, hi)

    def execute(self, ins, infos):
        win = _window_view(ins[0].astype(np.int64), self.pool, self.stride)
        return win.sum(axis=tuple(range(-1 - len(self.pool), -1)))


@dataclass
class Flatten(Node):
    """(*spatial, channels) -> one vector, channels-last (row-major) order; values unchanged."""

    op: ClassVar[str] = "Flatten"

    def infer(self, ins):
        (x,) = ins
        return TensorInfo((int(np.prod(x.shape)),), x.type, x.lo, x.hi)

    def execute(self, ins, infos):
        return ins[0].reshape(len(ins[0]), -1)


@dataclass
class Add(Node):
    """Elementwise sum of two tensors of one shape (a residual connection): fractions aligned, exact."""

    op: ClassVar[str] = "Add"

    def infer(self, ins):
        a, b = ins
        if a.shape != b.shape:
            raise ValueError(f"{self.name}: adds tensors of different shapes {a.shape} and {b.shape}")
        frac = max(a.type.frac, b.type.frac)
        lo = (a.lo << (frac - a.type.frac)) + (b.lo << (frac - b.type.frac))
        hi = (a.hi << (frac - a.type.frac)) + (b.hi << (frac - b.type.frac))
        return TensorInfo(a.shape, FixedType.covering(min(lo, 0), max(hi, 0), frac), lo, hi)

    def execute(self, ins, infos):
        frac = max(i.type.frac for i in infos)
        return sum(_align(q.astype(np.int64), i.type.frac, frac) for q, i in zip(ins, infos))


@dataclass
class BatchNorm(Node):
    """Batch normalization as trained and frozen: ``y = x * scale[c] + bias[c]`` on the channel (last) axis, with
    integer ``scale`` and ``bias`` (c,); exact result."""

    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scale_type: FixedType = FixedType(8, 0)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias_type: FixedType = FixedType(16, 0)
    op: ClassVar[str] = "BatchNorm"

    def acc_frac(self, x: TensorInfo) -> int:
        return max(x.type.frac + self.scale_type.frac, self.bias_type.frac)

    def _aligned(self, x: TensorInfo) -> tuple[np.ndarray, np.ndarray, int]:
        frac = self.acc_frac(x)
        s = _align(self.scale.astype(np.int64), x.type.frac + self.scale_type.frac, frac)
        return s, _align(self.bias.astype(np.int64), self.bias_type.frac, frac), frac

    def infer(self, ins):
        (x,) = ins
        if x.shape[-1] != len(self.scale) or len(self.bias) != len(self.scale):
            raise ValueError(f"{self.name}: {len(self.scale)} channels, input shape {x.shape}")
        s, b, frac = self._aligned(x)
        lo = int((b + np.minimum(s * x.lo, s * x.hi)).min())
        hi = int((b + np.maximum(s * x.lo, s * x.hi)).max())
        return TensorInfo(x.shape, FixedType.covering(min(lo, 0), max(hi, 0), frac), lo, hi)

    def execute(self, ins, infos):
        s, b, _ = self._aligned(infos[0])
        return ins[0].astype(np.int64) * s + b


# -- recurrent networks: GRU and LSTM
#
# Sigmoid and tanh are lookup tables indexed by the integer code of their requantized input. The entries
# are integers, computed once in float64 (:func:`activation_table`) and stored in the node, so the golden
# model, model.onnx and the firmware read the same numbers, and the PyTorch layer trains with them.

_ACTIVATIONS = {"sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)), "tanh": np.tanh}


def activation_table(fn: str, index_type: FixedType, out_type: FixedType) -> np.ndarray:
    """Codes of ``fn`` (``sigmoid`` or ``tanh``) on ``out_type`` for every code of ``index_type``, in order.

    Entry ``i`` is ``fn((index_type.int_min + i) * 2**-frac)`` rounded to the nearest code of ``out_type``
    (ties up; off zero the values are transcendental, so there are none) and saturated: sigmoid of a large
    input is ``1 - 2**-f`` on an ``ap_ufixed<f, 0>``.
    """
    codes = np.arange(index_type.int_min, index_type.int_max + 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        y = _ACTIVATIONS[fn](codes.astype(np.float64) * index_type.scale)
    q = np.floor(y * 2.0**out_type.frac + 0.5)
    return np.clip(q, out_type.int_min, out_type.int_max).astype(np.int64)


def sigmoid_type(bits: int) -> FixedType:
    """The sigmoid table's output: [0, 1) in steps of 2**-bits, ``ap_ufixed<bits, 0>``."""
    return FixedType(bits, bits, signed=False)


def tanh_type(bits: int) -> FixedType:
    """The tanh table's output: [-1, 1) in steps of 2**-(bits - 1), ``ap_fixed<bits, 1>``."""
    return FixedType(bits, bits - 1, signed=True)


@dataclass(frozen=True)
class RecurrentArithmetic:
    """The grids and bounds of one step of a recurrent layer on a given input: the input and state of a step,
    the two exact accumulators, and ``bounds``: name -> (fractional bits, largest magnitude in codes of that
    grid) of every other intermediate, matrix-product partial sums included (what decides float32 or float64
    in ONNX)."""

    x: TensorInfo  # x_t, (F,)
    state: TensorInfo  # h, (H,): every value the state can take
    gi: TensorInfo  # W_ih x_t + b_ih, (G*H,)
    gh: TensorInfo  # W_hh h + b_hh, (G*H,)
    bounds: dict[str, tuple[int, int]]

    def frac(self, name: str) -> int:
        return self.bounds[name][0]


def _partial_sum_bound(node: Dense, x: TensorInfo) -> int:
    """Largest |partial sum| of ``node``'s accumulation, in LSBs of its accumulator (any summation order)."""
    frac = node.acc_frac(x)
    w = np.abs(node.weight.astype(np.int64)) << (frac - x.type.frac - node.weight_type.frac)
    b = np.abs(node.bias.astype(np.int64)) << (frac - node.bias_type.frac)
    return int((b + w.sum(axis=1) * max(abs(x.lo), abs(x.hi))).max(initial=0))


def _magnitude(lo: int, hi: int) -> int:
    return max(-lo, hi, 0)


@dataclass
class Recurrent(Node):
    """What the GRU and the LSTM share: a sequence (T, F) -> the last state (H,), or every state (T, H) with
    ``return_sequences``; per step, the exact accumulators of the input and recurrent matrices (G gates
    stacked in rows, as in PyTorch), ``gi = W_ih x_t + b_ih`` and ``gh = W_hh h + b_hh`` (like
    :class:`Dense`), and lookup tables; the state starts at 0."""

    w_ih: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (G*H, F)
    w_ih_type: FixedType = FixedType(8, 0)
    b_ih: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G*H,)
    b_ih_type: FixedType = FixedType(16, 0)
    w_hh: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (G*H, H)
    w_hh_type: FixedType = FixedType(8, 0)
    b_hh: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G*H,)
    b_hh_type: FixedType = FixedType(16, 0)
    state_type: FixedType = FixedType(8, 7)
    return_sequences: bool = False
    gates: ClassVar[str] = ""  # one letter per gate, in row order

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[1]

    @property
    def n_in(self) -> int:
        return self.w_ih.shape[1]

    def rows(self, gate: str) -> slice:
        k, n_h = self.gates.index(gate), self.hidden
        return slice(k * n_h, (k + 1) * n_h)

    def input_dense(self) -> Dense:
        return Dense(f"{self.name}.ih", [], weight=self.w_ih, weight_type=self.w_ih_type, bias=self.b_ih, bias_type=self.b_ih_type)

    def recurrent_dense(self) -> Dense:
        return Dense(f"{self.name}.hh", [], weight=self.w_hh, weight_type=self.w_hh_type, bias=self.b_hh, bias_type=self.b_hh_type)

    def tables(self) -> dict[str, tuple[np.ndarray, FixedType, FixedType]]:  # pragma: no cover - abstract
        """Table name -> (table, its index type, its output type)."""
        raise NotImplementedError

    def state_range(self) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def arithmetic(self, x: TensorInfo) -> RecurrentArithmetic:  # pragma: no cover - abstract
        raise NotImplementedError

    def products(self, a: RecurrentArithmetic) -> list[tuple[str, int, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, x: TensorInfo) -> None:
        g, (gh_, f), h = len(self.gates), self.w_ih.shape, self.hidden
        if len(x.shape) != 2 or x.shape[1] != f:
            raise ValueError(f"{self.name}: expects sequences (steps, {f}), got shape {x.shape}")
        if gh_ != g * h or self.w_hh.shape != (g * h, h) or self.b_ih.shape != (g * h,) or self.b_hh.shape != (g * h,):
            raise ValueError(f"{self.name}: weights {self.w_ih.shape}, {self.w_hh.shape} and biases {self.b_ih.shape}, "
                             f"{self.b_hh.shape} do not form a {self.op} ({g}H x F, {g}H x H, {g}H, {g}H)")
        for name, (table, index_type, out_type) in self.tables().items():
            size = index_type.int_max - index_type.int_min + 1
            if table.shape != (size,):
                raise ValueError(f"{self.name}: table {name} has shape {table.shape}, its index type {index_type} needs ({size},)")
            if size and (table.min() < out_type.int_min or table.max() > out_type.int_max):
                raise ValueError(f"{self.name}: table {name} has entries outside {out_type}")
        s = self.sigmoid_type
        if s.signed or s.frac < s.width:  # the state ranges rest on 0 <= sigmoid < 1
            raise ValueError(f"{self.name}: sigmoid type {s} must be unsigned with no integer bits (values in [0, 1))")

    def _accumulators(self, x: TensorInfo) -> tuple[TensorInfo, TensorInfo, TensorInfo, TensorInfo, dict]:
        """(x_t, state, gi, gh) infos and the partial-sum bounds of the two matrix products."""
        self._check(x)
        xs = TensorInfo((self.n_in,), x.type, x.lo, x.hi)
        state = TensorInfo((self.hidden,), self.state_type, *self.state_range())
        ih, hh = self.input_dense(), self.recurrent_dense()
        gi, gh = ih.infer([xs]), hh.infer([state])
        bounds = {"gi_partial": (gi.type.frac, _partial_sum_bound(ih, xs)), "gh_partial": (gh.type.frac, _partial_sum_bound(hh, state))}
        return xs, state, gi, gh, bounds

    def infer(self, ins):
        (x,) = ins
        a = self.arithmetic(x)
        if max(v for _, v in a.bounds.values()) >= 2**62:
            raise ValueError(f"{self.name}: an intermediate needs more than 62 bits; use narrower types")
        shape = (x.shape[0], self.hidden) if self.return_sequences else (self.hidden,)
        return TensorInfo(shape, self.state_type, a.state.lo, a.state.hi)

    def lookup(self, table: str, s: np.ndarray, frac: int) -> np.ndarray:
        """Requantize ``s`` (codes on grid ``frac``) onto the table's index type and read the table."""
        values, index_type, _ = self.tables()[table]
        return values[requantize(s, frac, index_type) - index_type.int_min]

    def _steps(self, x: np.ndarray, a: RecurrentArithmetic, step) -> np.ndarray:
        """Run ``step(gi, gh, carry) -> (h, carry)`` over the sequence; the states, as the layer returns them."""
        ih, hh = self.input_dense(), self.recurrent_dense()
        h, carry, states = np.zeros((len(x), self.hidden), np.int64), None, []
        for t in range(x.shape[1]):
            h, carry = step(ih.execute([x[:, t]], [a.x]), hh.execute([h], [a.state]), h, carry)
            states.append(h)
        return np.stack(states, axis=1) if self.return_sequences else h


@dataclass
class GRU(Recurrent):
    """A gated recurrent unit, PyTorch's equations and gate order (rows r, z, n) in fixed point; per step:

        gi = W_ih x_t + b_ih,  gh = W_hh h + b_hh     exact accumulators (see :class:`Recurrent`)
        r = S_r[q_r(gi_r + gh_r)]                     q_g: floor, saturate onto ``gate_<g>_type``
        z = S_z[q_z(gi_z + gh_z)]                     S_g: a sigmoid table (codes of ``sigmoid_type``)
        n = T[q_n(gi_n + r * gh_n)]                   T: the tanh table (codes of ``tanh_type``)
        h = q_h(n + z * (h - n))                      (= (1 - z) n + z h) floor, saturate onto ``state_type``

    Sums and products are exact (on the finer grid of their operands); only the ``q_*`` round. A table has
    one entry per code of its input type, indexed by ``code - int_min``. Since 0 <= z < 1, the new state lies
    between n and the old one, so the state never leaves [min(0, T), max(0, T)] (floored onto its grid):
    that range, not the state type's, bounds the recurrent accumulator.
    """

    gate_r_type: FixedType = FixedType(8, 4)
    gate_z_type: FixedType = FixedType(8, 4)
    gate_n_type: FixedType = FixedType(8, 4)
    sigmoid_type: FixedType = FixedType(8, 8, False)
    tanh_type: FixedType = FixedType(8, 7)
    sigmoid_r_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sigmoid_z_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tanh_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    op: ClassVar[str] = "GRU"
    gates: ClassVar[str] = "rzn"

    def tables(self):
        return {
            "r": (self.sigmoid_r_table, self.gate_r_type, self.sigmoid_type),
            "z": (self.sigmoid_z_table, self.gate_z_type, self.sigmoid_type),
            "n": (self.tanh_table, self.gate_n_type, self.tanh_type),
        }

    def state_range(self) -> tuple[int, int]:
        lo = min(int(self.tanh_table.min(initial=0)), 0)
        hi = max(int(self.tanh_table.max(initial=0)), 0)
        lo_q, hi_q = requantize(np.array([lo, hi], np.int64), self.tanh_type.frac, self.state_type)
        return int(lo_q), int(hi_q)

    def arithmetic(self, x: TensorInfo) -> RecurrentArithmetic:
        """Grids and bounds of every intermediate of a step on input sequences ``x`` (see the class docstring)."""
        xs, state, gi, gh, b = self._accumulators(x)
        fi, fh, fs, ft = gi.type.frac, gh.type.frac, self.sigmoid_type.frac, self.tanh_type.frac
        gi_max, gh_max, h_max = _magnitude(gi.lo, gi.hi), _magnitude(gh.lo, gh.hi), _magnitude(state.lo, state.hi)
        s_max = max(int(self.sigmoid_r_table.max(initial=0)), int(self.sigmoid_z_table.max(initial=0)))
        t_max = int(np.abs(self.tanh_table).max(initial=0))
        rz = max(fi, fh)
        b["rz_sum"] = (rz, (gi_max << (rz - fi)) + (gh_max << (rz - fh)))  # gi_g + gh_g, g = r, z
        b["r_gh"] = (fs + fh, s_max * gh_max)  # r * gh_n
        nf = max(fi, fs + fh)
        b["n_sum"] = (nf, (gi_max << (nf - fi)) + (b["r_gh"][1] << (nf - fs - fh)))  # gi_n + r * gh_n
        df = max(self.state_type.frac, ft)
        b["h_minus_n"] = (df, (h_max << (df - self.state_type.frac)) + (t_max << (df - ft)))
        b["z_d"] = (fs + df, s_max * b["h_minus_n"][1])  # z * (h - n)
        b["update"] = (fs + df, (t_max << (fs + df - ft)) + b["z_d"][1])  # n + z * (h - n)
        return RecurrentArithmetic(xs, state, gi, gh, b)

    def products(self, a: RecurrentArithmetic) -> list[tuple[str, int, int]]:
        """The element-wise products of a step, one per unit: (what, bits of one factor, bits of the other)."""
        return [("r * gh_n", self.sigmoid_type.width, a.gh.type.width),
                ("z * (h - n)", self.sigmoid_type.width, a.bounds["h_minus_n"][1].bit_length() + 1)]

    def execute(self, ins, infos):
        (x,), (xi,) = ins, infos
        a = self.arithmetic(xi)
        r_, z_, n_ = (self.rows(g) for g in self.gates)
        fi, fh, fs, ft = a.gi.type.frac, a.gh.type.frac, self.sigmoid_type.frac, self.tanh_type.frac
        rz, nf, df, uf = a.frac("rz_sum"), a.frac("n_sum"), a.frac("h_minus_n"), a.frac("update")

        def step(gi, gh, h, _):
            r = self.lookup("r", _align(gi[:, r_], fi, rz) + _align(gh[:, r_], fh, rz), rz)
            z = self.lookup("z", _align(gi[:, z_], fi, rz) + _align(gh[:, z_], fh, rz), rz)
            n = self.lookup("n", _align(gi[:, n_], fi, nf) + _align(r * gh[:, n_], fs + fh, nf), nf)
            d = _align(h, self.state_type.frac, df) - _align(n, ft, df)
            return requantize(_align(n, ft, uf) + z * d, uf, self.state_type), None

        return self._steps(x, a, step)


@dataclass
class LSTM(Recurrent):
    """A long short-term memory layer, PyTorch's equations and gate order (rows i, f, g, o) in fixed point;
    per step, from h = c = 0:

        gi = W_ih x_t + b_ih,  gh = W_hh h + b_hh     exact accumulators (see :class:`Recurrent`)
        i = S_i[q_i(gi_i + gh_i)], f = S_f[...], o = S_o[...]   sigmoid tables (codes of ``sigmoid_type``)
        g = T_g[q_g(gi_g + gh_g)]                     a tanh table (codes of ``tanh_type``)
        c = q_c(f * c + i * g)                        exact, then floor, saturate onto ``cell_type``
        h = q_h(o * T_c[c])                           T_c: tanh indexed by the cell's code; exact product,
                                                      then floor, saturate onto ``state_type``

    The state is a product of a sigmoid and a tanh entry, so it never leaves their products' range (floored
    onto its grid); the cell takes its whole type's range.
    """

    gate_i_type: FixedType = FixedType(8, 4)
    gate_f_type: FixedType = FixedType(8, 4)
    gate_g_type: FixedType = FixedType(8, 4)
    gate_o_type: FixedType = FixedType(8, 4)
    cell_type: FixedType = FixedType(8, 4)
    sigmoid_type: FixedType = FixedType(8, 8, False)
    tanh_type: FixedType = FixedType(8, 7)
    sigmoid_i_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sigmoid_f_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tanh_g_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sigmoid_o_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tanh_c_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    op: ClassVar[str] = "LSTM"
    gates: ClassVar[str] = "ifgo"

    def tables(self):
        return {
            "i": (self.sigmoid_i_table, self.gate_i_type, self.sigmoid_type),
            "f": (self.sigmoid_f_table, self.gate_f_type, self.sigmoid_type),
            "g": (self.tanh_g_table, self.gate_g_type, self.tanh_type),
            "o": (self.sigmoid_o_table, self.gate_o_type, self.sigmoid_type),
            "c": (self.tanh_c_table, self.cell_type, self.tanh_type),
        }

    def state_range(self) -> tuple[int, int]:
        o_max = int(self.sigmoid_o_table.max(initial=0))
        t = self.tanh_c_table
        lo, hi = o_max * min(int(t.min(initial=0)), 0), o_max * max(int(t.max(initial=0)), 0)
        lo_q, hi_q = requantize(np.array([lo, hi], np.int64), self.sigmoid_type.frac + self.tanh_type.frac, self.state_type)
        return int(lo_q), int(hi_q)

    def arithmetic(self, x: TensorInfo) -> RecurrentArithmetic:
        xs, state, gi, gh, b = self._accumulators(x)
        fi, fh, fs, ft, fc = gi.type.frac, gh.type.frac, self.sigmoid_type.frac, self.tanh_type.frac, self.cell_type.frac
        gi_max, gh_max = _magnitude(gi.lo, gi.hi), _magnitude(gh.lo, gh.hi)
        s_max = max(int(t.max(initial=0)) for t in (self.sigmoid_i_table, self.sigmoid_f_table, self.sigmoid_o_table))
        g_max = int(np.abs(self.tanh_g_table).max(initial=0))
        c_max = _magnitude(self.cell_type.int_min, self.cell_type.int_max)
        gf = max(fi, fh)
        b["gate_sum"] = (gf, (gi_max << (gf - fi)) + (gh_max << (gf - fh)))
        cf = max(fs + fc, fs + ft)
        b["f_c"] = (fs + fc, s_max * c_max)
        b["i_g"] = (fs + ft, s_max * g_max)
        b["cell_sum"] = (cf, (b["f_c"][1] << (cf - fs - fc)) + (b["i_g"][1] << (cf - fs - ft)))  # f * c + i * g
        b["o_tanh_c"] = (fs + ft, s_max * int(np.abs(self.tanh_c_table).max(initial=0)))  # o * tanh(c)
        return RecurrentArithmetic(xs, state, gi, gh, b)

    def products(self, a: RecurrentArithmetic) -> list[tuple[str, int, int]]:
        """The element-wise products of a step, one per unit: (what, bits of one factor, bits of the other)."""
        s, t = self.sigmoid_type.width, self.tanh_type.width
        return [("f * c", s, self.cell_type.width), ("i * g", s, t), ("o * tanh(c)", s, t)]

    def execute(self, ins, infos):
        (x,), (xi,) = ins, infos
        a = self.arithmetic(xi)
        fi, fh, fs, ft, fc = a.gi.type.frac, a.gh.type.frac, self.sigmoid_type.frac, self.tanh_type.frac, self.cell_type.frac
        gf, cf = a.frac("gate_sum"), a.frac("cell_sum")

        def step(gi, gh, h, c):
            c = np.zeros_like(h) if c is None else c
            i, f, g, o = (self.lookup(k, _align(gi[:, self.rows(k)], fi, gf) + _align(gh[:, self.rows(k)], fh, gf), gf)
                          for k in self.gates)
            c = requantize(_align(f * c, fs + fc, cf) + _align(i * g, fs + ft, cf), cf, self.cell_type)
            h = requantize(o * self.tanh_c_table[c - self.cell_type.int_min], fs + ft, self.state_type)
            return h, c

        return self._steps(x, a, step)


# --------------------------------------------------------------------------------------------
# The graph


@dataclass
class Graph:
    """A feed-forward graph: ``nodes`` in topological order, the first one the :class:`Input`."""

    name: str
    nodes: list[Node]
    outputs: list[str]

    def __post_init__(self):
        if not self.nodes or not isinstance(self.nodes[0], Input):
            raise ValueError("a graph starts with its Input node")
        self._infos: dict[str, TensorInfo] | None = None

    @property
    def input(self) -> Input:
        return self.nodes[0]  # type: ignore[return-value]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def infos(self) -> dict[str, TensorInfo]:
        """Type and integer range of every tensor, derived from the input type and the weights."""
        if self._infos is None:
            infos: dict[str, TensorInfo] = {}
            for n in self.nodes:
                try:
                    infos[n.name] = n.infer([infos[i] for i in n.inputs])
                except KeyError as e:
                    raise ValueError(f"node {n.name} reads tensor {e} that no earlier node writes") from None
            self._infos = infos
        return self._infos

    def execute(self, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
        """Run in exact integer arithmetic. Returns integer codes of the outputs (all tensors if ``keep``)."""
        infos = self.infos()
        x = np.asarray(x)
        values = {self.input.name: quantize_float(x, self.input.type, self.input.rounding)}
        for n in self.nodes[1:]:
            values[n.name] = n.execute([values[i] for i in n.inputs], [infos[i] for i in n.inputs])
        return values if keep else {o: values[o] for o in self.outputs}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The first output as float64 values (exact)."""
        out = self.outputs[0]
        return self.execute(x)[out].astype(np.float64) * self.infos()[out].type.scale

    # -- persistence: a json header and the arrays in one .npz
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        nodes = []
        for n in self.nodes:
            d = {"op": n.op}
            for f in dataclasses.fields(n):
                v = getattr(n, f.name)
                if isinstance(v, np.ndarray):
                    key = f"{n.name}/{f.name}"
                    arrays[key] = v
                    d[f.name] = {"array": key}
                elif isinstance(v, FixedType):
                    d[f.name] = {"fixed": dataclasses.asdict(v)}
                else:
                    d[f.name] = list(v) if isinstance(v, tuple) else v
            nodes.append(d)
        header = json.dumps({"name": self.name, "outputs": self.outputs, "nodes": nodes})
        with open(path, "wb") as fh:
            np.savez(fh, __graph__=np.array(header), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["__graph__"]))
            nodes = []
            for d in header["nodes"]:
                kind = NODE_TYPES[d.pop("op")]
                kw = {}
                for k, v in d.items():
                    if isinstance(v, dict) and "array" in v:
                        kw[k] = z[v["array"]]
                    elif isinstance(v, dict) and "fixed" in v:
                        kw[k] = FixedType(**v["fixed"])
                    elif k == "shape":
                        kw[k] = tuple(v)
                    else:
                        kw[k] = v
                nodes.append(kind(**kw))
        return cls(header["name"], nodes, header["outputs"])
