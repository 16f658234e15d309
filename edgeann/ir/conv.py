"""Convolutional networks in the fixed-point graph: convolution, pooling, flatten, residual add and
batch norm. Tensors are channels-last, ``(*spatial, channels)``, 1-D or 2-D."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgeann.ir.core import FixedType, Node, TensorInfo, _align



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
