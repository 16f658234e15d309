"""Exact elementwise requantization: a per-channel monotone step function of an integer tensor.

Foreign models put float arithmetic between a product and the next quantizer: non-power-of-two scales and zero
points, per-channel weight scales, batch normalization (whole or decomposed into ``Sub``/``Div``/``Mul``/``Add``),
a sign (``BipolarQuant``), FINN's ``MultiThreshold``. No ``ap_fixed`` arithmetic reproduces that float chain
bit for bit, but it does not need to: the accumulator before it is an integer with a proven range, every op of the
chain is monotone, so per channel the chain is a non-decreasing (or non-increasing) step function from those
integers to the quantizer's output codes. The front end (:mod:`edgeann.frontends.onnx.ops_requant`) evaluates the
chain with the original model's own arithmetic to find where each step is; the firmware compares and counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgeann.ir.core import FixedType, Node, TensorInfo


@dataclass
class Threshold(Node):
    """``y[..., c] = start[c] + step[c] * #{k : x[..., c] >= thresholds[c, k]}`` on the channel (last) axis.

    ``thresholds`` (channels, k) are integer codes on the input's grid, ascending per channel (a repeated
    threshold is a jump of two codes; a channel with fewer steps is padded with thresholds above the input's
    range); ``step`` is +1 (non-decreasing) or -1 (non-increasing); ``start`` is the output code below the
    first threshold. The result is an integer code of ``type``: exact by construction, no arithmetic rounds."""

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    type: FixedType = FixedType(8, 0)
    # the same function as one integer multiply per value and a few corrections (see affine_form): per channel
    # clip(floor((multiplier * x + offset) / 2**shift), low, high)
    #     + step * sum_e ([x >= exact[e]] - [x >= line[e]])
    # empty when the firmware compares with every threshold and counts
    multiplier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shift: int = 0
    exact: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (channels, e): the true steps
    line: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (channels, e): the line's there
    # steps the original's float32 summation order decides (its value there is within 4 ulp of a rounding
    # boundary): the firmware follows code x scale; the original may not, on inputs that reach them
    near_ties: int = 0
    op: ClassVar[str] = "Threshold"

    @property
    def channels(self) -> int:
        return int(self.thresholds.shape[0])

    def _check(self, x: TensorInfo) -> None:
        t = np.asarray(self.thresholds)
        if t.ndim != 2 or len(self.start) != t.shape[0] or len(self.step) != t.shape[0]:
            raise ValueError(f"{self.name}: thresholds {t.shape}, start {len(self.start)}, step {len(self.step)} "
                             "do not describe one row per channel")
        if not x.shape or x.shape[-1] != t.shape[0]:
            raise ValueError(f"{self.name}: {t.shape[0]} channels, input shape {x.shape}")
        if t.size and np.any(np.diff(t, axis=1) < 0):
            raise ValueError(f"{self.name}: thresholds are not ascending within each channel")
        if not np.all(np.isin(self.step, (-1, 1))):
            raise ValueError(f"{self.name}: step must be +1 or -1 per channel")

    def codes_at(self, x: np.ndarray) -> np.ndarray:
        """The output codes for integer inputs ``x`` of shape (..., channels)."""
        x = np.asarray(x, np.int64)
        t = np.asarray(self.thresholds, np.int64)
        counts = np.zeros(x.shape, np.int64)
        for k in range(t.shape[1]):  # one comparison per step: bounded memory for any batch
            counts += x >= t[:, k]
        return np.asarray(self.start, np.int64) + np.asarray(self.step, np.int64) * counts

    def infer(self, ins):
        (x,) = ins
        self._check(x)
        ends = self.codes_at(np.array([[x.lo] * self.channels, [x.hi] * self.channels]))
        lo, hi = int(ends.min()), int(ends.max())
        if lo < self.type.int_min or hi > self.type.int_max:
            raise ValueError(f"{self.name}: codes {lo}..{hi} do not fit {self.type}")
        return TensorInfo(x.shape, self.type, lo, hi)

    def execute(self, ins, infos):
        return self.codes_at(ins[0])

    @property
    def affine(self) -> bool:
        return len(self.multiplier) == self.channels and self.channels > 0

    def ends(self, x: TensorInfo) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the lowest and highest output code over the input's range."""
        e = self.codes_at(np.array([[x.lo] * self.channels, [x.hi] * self.channels]))
        return e.min(axis=0), e.max(axis=0)

    def affine_codes(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        """The affine form's codes for integer inputs ``x`` (..., channels): what the firmware computes."""
        low, high = self.ends(info)
        x = np.asarray(x, np.int64)
        z = x.astype(object) * np.asarray(self.multiplier).astype(object) + np.asarray(self.offset).astype(object)
        y = np.clip((z >> int(self.shift)).astype(np.int64), low, high)
        for e in range(np.shape(self.exact)[1] if np.ndim(self.exact) == 2 else 0):
            y = y + np.asarray(self.step, np.int64) * ((x >= self.exact[:, e]).astype(np.int64) - (x >= self.line[:, e]))
        return y

    def threshold_type(self, x: TensorInfo) -> FixedType:
        """A type on the input's grid that holds every threshold (a padded one may lie above the input's type)."""
        t = np.asarray(self.thresholds, np.int64)
        return FixedType.covering(int(min(t.min(initial=0), x.lo)), int(max(t.max(initial=0), x.hi)), x.type.frac)


def steps_from_codes(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, start, step) of the monotone step functions that map the ascending integers ``x`` (n,) to
    ``codes`` (n, channels). Raises ValueError where a channel is not monotone. Thresholds are padded per channel
    with ``x[-1] + 1``, above every input."""
    x = np.asarray(x, np.int64)
    codes = np.asarray(codes, np.int64)
    d = np.diff(codes, axis=0)
    up, down = np.all(d >= 0, axis=0), np.all(d <= 0, axis=0)
    if not np.all(up | down):
        bad = int(np.flatnonzero(~(up | down))[0])
        raise ValueError(f"channel {bad} is not monotone over the input's range")
    step = np.where(up, 1, -1).astype(np.int64)
    start = codes[0]
    rows = []
    for c in range(codes.shape[1]):
        jumps = np.abs(d[:, c])
        rows.append(np.repeat(x[1:], jumps))
    k = max((len(r) for r in rows), default=0)
    thresholds = np.full((codes.shape[1], k), x[-1] + 1, np.int64)
    for c, r in enumerate(rows):
        thresholds[c, : len(r)] = r
    return thresholds, start, step




def affine_form(thresholds: np.ndarray, start: np.ndarray, step: np.ndarray, lo: int, hi: int):
    """The step function as a line and corrections: ``(multiplier, offset, shift, exact, line)`` (see
    :class:`Threshold`), or None when that is not cheaper than comparing with every threshold.

    For any integers M, B, s the floor of the line ``(M x + B) / 2**s`` steps through the levels at thresholds
    tau_k of its own, so ``#{k : x >= tau_k} = clip(floor(...) - start, 0, K)`` for every x (going down: the mirror
    image); adding ``[x >= t_k] - [x >= tau_k]`` wherever tau_k differs from the true t_k gives the count exactly.
    The line is fitted to the thresholds (least squares, then the offset that matches most of them); float32
    rounding in the original moves a few thresholds off any line, and those are the corrections."""
    t = np.asarray(thresholds, np.int64)
    channels = t.shape[0]
    span_bits = max(int(hi - lo).bit_length(), 1)
    best = None
    for shift in (span_bits + 8, span_bits + 16, span_bits + 24):
        rows = []
        for c in range(channels):
            live = t[c][(t[c] > lo) & (t[c] <= hi)]
            base = int(start[c]) + int(step[c]) * int(np.count_nonzero(t[c] <= lo))  # thresholds always reached
            rows.append(_fit(live, base, int(step[c]), shift))
        corrections = max(len(r[2]) for r in rows)
        if best is None or corrections < best[0]:
            best = corrections, shift, rows
        if corrections == 0:
            break
    corrections, shift, rows = best
    k = t.shape[1]
    if 2 * corrections + 2 >= k:  # a multiply and the corrections would not save comparators
        return None
    pad = hi + 1
    exact = np.full((channels, corrections), pad, np.int64)
    line = np.full((channels, corrections), pad, np.int64)
    for c, (_, _, pairs) in enumerate(rows):
        for e, (te, tl) in enumerate(pairs):
            exact[c, e], line[c, e] = te, tl
    return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64), shift, exact, line)


def _fit(live: np.ndarray, base: int, step: int, shift: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(M, B, corrections) for one channel: the line fitted to the thresholds ``live`` and the (true, line) pairs of
    the levels where its own threshold differs from the true one."""
    one = 1 << shift
    n = len(live)
    if n == 0:
        return 0, base * one, []
    x = live.astype(np.float64)
    k = np.arange(1, n + 1, dtype=np.float64)
    slope = step * (np.polyfit(x, k, 1)[0] if n > 1 and np.ptp(x) > 0 else 1.0)
    m = int(round(slope * one)) or step
    live = [int(v) for v in live]
    levels = [base + step * (i + 1) for i in range(n)]
    # each threshold holds for B in [lo_k, hi_k]; take the B that most intervals contain
    if step > 0:  # reached at t: m t + B >= level 2^s; not at t - 1: m (t - 1) + B <= level 2^s - 1
        bounds = [(lv * one - m * t, lv * one - 1 - m * (t - 1)) for lv, t in zip(levels, live)]
    else:  # down to level at t: m t + B <= (level + 1) 2^s - 1; not at t - 1: m (t - 1) + B >= (level + 1) 2^s
        bounds = [((lv + 1) * one - m * (t - 1), (lv + 1) * one - 1 - m * t) for lv, t in zip(levels, live)]
    events = sorted([(b_lo, 0) for b_lo, b_hi in bounds if b_lo <= b_hi] +
                    [(b_hi, 1) for b_lo, b_hi in bounds if b_lo <= b_hi])
    depth, best, b = 0, -1, bounds[0][0]
    for value, kind in events:  # sweep: an interval opens (0) before one closes (1) at the same value
        depth += 1 if kind == 0 else -1
        if kind == 0 and depth > best:
            best, b = depth, value
    pairs = []
    for lv, t in zip(levels, live):
        tau = _line_threshold(m, b, shift, lv, step)
        if tau != t:
            pairs.append((t, tau))
    return m, b, pairs


def _line_threshold(m: int, b: int, shift: int, level: int, step: int) -> int:
    """The smallest integer x at which floor((m x + b) / 2**shift) has reached ``level`` (going up: m x + b >=
    level 2^s, m > 0) or come down to it (going down: m x + b <= (level + 1) 2^s - 1, m < 0), in exact integers."""
    one = 1 << shift
    if step > 0:
        return _ceil_div(level * one - b, m)
    return _ceil_div((level + 1) * one - 1 - b, m)  # dividing by m < 0 flips the inequality


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)
