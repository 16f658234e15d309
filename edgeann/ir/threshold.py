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
