"""The input standardization in fixed point, for the trigger firmware in front of the network.

The network's firmware reads standardized features, ``x_scaled = (x - mean) / std`` per feature (the run's
``scaler.json``, fit on the training split) on the input type ``ap_fixed<W, I, AP_TRN, AP_SAT>``. This module
designs the same standardization in integer arithmetic and writes it as a C++ header; :meth:`InputScaling.codes`
is the same arithmetic in Python integers (no floats), and a test checks the two agree on every value.

Design, for input type with ``f_in`` fraction bits and range ``[lo, hi]``:

* raw features arrive as ``raw_t = ap_fixed<RW, RI, AP_TRN, AP_SAT>``. Its range covers, for every feature,
  the raw values that do not saturate the input type (``mean + std * [lo, hi + LSB]``) with one bit to spare:
  a raw value beyond it would saturate the input anyway, and does (checked at the extremes of ``raw_t``). Its
  ``F_raw = f_in + RAW_GUARD_BITS - floor(log2(min std))`` fraction bits make one raw LSB at most
  ``2^-RAW_GUARD_BITS`` input LSBs for every feature;
* per feature ``a_i = round(2^K / std_i)`` and ``b_i = round(-mean_i / std_i * 2^K)`` with ``K = f_in +
  CONST_GUARD_BITS + RI`` fraction bits, so the constants' rounding moves the result by at most about
  ``2^-CONST_GUARD_BITS`` input LSBs even at the ends of ``raw_t``;
* ``t = raw * a_i + b_i`` is computed exactly (wide ``ap_fixed``), then assigned to the input type, which
  floors and saturates.

It differs from the float path of training (float32 ``(x - mean) / std``, then the input quantizer's floor)
only where a value lies within those small errors of an input-code boundary: the raw value's truncation to
``F_raw`` bits and the constants' rounding. :func:`agreement` measures how often on the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeann import ir

RAW_GUARD_BITS = 8
CONST_GUARD_BITS = 8
HEADER = "input_scaling.h"
FORMULA = "x_scaled = (x - mean) / std per feature (last axis), mean and std from scaler.json"


def _exact_literal(code: int, frac: int) -> str:
    """``code * 2^-frac`` as a C++ double literal that parses to exactly that value (|code| < 2^53)."""
    if abs(code) >= 1 << 53:
        raise ValueError(f"constant code {code} does not fit a double exactly")
    return repr(math.ldexp(code, -frac))


def _signed_width(max_abs: int, frac: int) -> tuple[int, int]:
    """(W, I) of a signed ap_fixed with ``frac`` fraction bits holding codes up to ``max_abs`` (I >= 1)."""
    integer = max(1, max_abs.bit_length() + 1 - frac)
    return integer + frac, integer


@dataclass(frozen=True)
class InputScaling:
    mean: tuple[float, ...]  # the scaler's float32 constants, taken as exact
    std: tuple[float, ...]
    input_type: ir.FixedType
    raw_type: ir.FixedType
    k: int  # fraction bits of the constants
    a: tuple[int, ...]  # round(2^k / std)
    b: tuple[int, ...]  # round(-mean / std * 2^k)

    @classmethod
    def design(cls, mean, std, input_type: ir.FixedType) -> InputScaling:
        mean = np.asarray(mean, np.float32).astype(np.float64)
        std = np.asarray(std, np.float32).astype(np.float64)
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(std > 0) or not np.all(np.isfinite(mean)):
            raise ValueError("the scaler needs one finite mean and one positive std per feature")
        f_in = input_type.frac
        lo, hi = input_type.int_min * input_type.scale, (input_type.int_max + 1) * input_type.scale
        reach = float(np.max(np.abs(np.concatenate([mean + std * lo, mean + std * hi]))))
        raw_integer = max(1, math.ceil(math.log2(max(reach, 1e-300)))) + 2  # sign bit and one to spare
        raw_frac = max(0, f_in + RAW_GUARD_BITS - math.floor(math.log2(float(std.min()))))
        k = f_in + CONST_GUARD_BITS + raw_integer
        # rounded to nearest in exact rational arithmetic on the float32 constants
        a = tuple(round(Fraction(1 << k) / Fraction(s)) for s in std.tolist())
        b = tuple(round(-Fraction(m) / Fraction(s) * (1 << k)) for m, s in zip(mean.tolist(), std.tolist()))
        scaling = cls(tuple(mean.tolist()), tuple(std.tolist()), input_type,
                      ir.FixedType(raw_integer + raw_frac, raw_frac), k, a, b)
        scaling._check_saturation()
        return scaling

    @property
    def n_features(self) -> int:
        return len(self.a)

    def _check_saturation(self) -> None:
        """A raw value saturated by raw_t must still saturate the input: the extremes of raw_t map to the ends."""
        r = self.raw_type
        edge = np.array([[r.int_min * r.scale] * self.n_features, [r.int_max * r.scale] * self.n_features])
        codes = self.codes(edge)
        if not (np.all(codes[0] == self.input_type.int_min) and np.all(codes[1] == self.input_type.int_max)):
            raise RuntimeError(f"raw type {r} does not cover the input range of every feature")

    def raw_codes(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw features (float) onto raw_t: floor and saturate, as ``raw_t(double)`` does."""
        return ir.quantize_float(x_raw, self.raw_type)

    def codes(self, x_raw: np.ndarray) -> np.ndarray:
        """The Python path: input-type codes of ``x_raw`` (features on the last axis), in exact integers."""
        x_raw = np.asarray(x_raw)
        if x_raw.shape[-1:] != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features on the last axis, got shape {x_raw.shape}")
        raw = self.raw_codes(x_raw).astype(object)  # Python ints: products may exceed 64 bits
        shift = self.raw_type.frac + self.k - self.input_type.frac
        t = raw * np.array(self.a, dtype=object) + np.array([b << self.raw_type.frac for b in self.b], dtype=object)
        floored = t >> shift  # arithmetic shift of Python ints: floor
        lo, hi = self.input_type.int_min, self.input_type.int_max
        return np.array([min(max(v, lo), hi) for v in floored.ravel()], dtype=np.int64).reshape(x_raw.shape)

    def cpp_types(self) -> dict[str, str]:
        r, frac = self.raw_type, self.k
        a_w, a_i = _signed_width(max(self.a), frac)
        b_w, b_i = _signed_width(max(abs(v) for v in self.b), frac)
        sum_frac = r.frac + frac
        sum_i = max(r.integer + a_i, b_i) + 1  # product, plus the offset: exact
        return {
            "raw_t": r.hls("AP_TRN", "AP_SAT"),
            "scaled_t": self.input_type.hls("AP_TRN", "AP_SAT"),
            "scale_t": f"ap_fixed<{a_w},{a_i}>",
            "offset_t": f"ap_fixed<{b_w},{b_i}>",
            "sum_t": f"ap_fixed<{sum_i + sum_frac},{sum_i}>",
        }

    def header(self, n_inputs: int) -> str:
        types = self.cpp_types()
        a = ",\n".join(f"    {_exact_literal(v, self.k)}  /* {v} * 2^-{self.k}; 1 / {s!r} */" for v, s in zip(self.a, self.std))
        b = ",\n".join(f"    {_exact_literal(v, self.k)}  /* {v} * 2^-{self.k}; -mean / std, mean {m!r}, std {s!r} */"
                       for v, m, s in zip(self.b, self.mean, self.std))
        typedefs = "\n".join(f"typedef {spelling} {name};" for name, spelling in types.items())
        return f"""// Written by edgeann: the input standardization the network was trained with, in fixed point.
//
// The firmware's input (input_t in defines.h, = scaled_t below) is the standardized feature vector
//   x_scaled = (x - mean) / std   per feature, mean and std from the run's scaler.json,
// floored and saturated onto {types['scaled_t']}. standardize() computes it from raw features:
// t = raw * scale + offset exactly, then floor and saturate onto scaled_t. raw_t saturates; its range covers
// every raw value that does not saturate scaled_t, so saturation never changes a result.
// edgeann's Python path (edgeann.backends.hls.input_scaling.InputScaling.codes) computes the same integers.
#ifndef EDGEANN_INPUT_SCALING_H_
#define EDGEANN_INPUT_SCALING_H_

#include "ap_fixed.h"

namespace edgeann_input {{

static const unsigned N_FEATURES = {self.n_features};
static const unsigned N_INPUTS = {n_inputs};  // per sample, channels-last: input k is feature k % N_FEATURES

{typedefs}

// 1 / std (scale) and -mean / std (offset), {self.k} fraction bits, rounded to nearest
static const scale_t scale[N_FEATURES] = {{
{a}
}};
static const offset_t offset[N_FEATURES] = {{
{b}
}};

inline scaled_t standardize(raw_t raw, unsigned feature) {{
    sum_t t = raw * scale[feature] + offset[feature];  // exact
    return scaled_t(t);  // AP_TRN, AP_SAT: floor, saturate
}}

inline void standardize_all(const raw_t raw[N_INPUTS], scaled_t scaled[N_INPUTS]) {{
    for (unsigned i = 0; i < N_INPUTS; i++) {{
        #pragma HLS UNROLL
        scaled[i] = standardize(raw[i], i % N_FEATURES);
    }}
}}

}}  // namespace edgeann_input

#endif
"""

    def write(self, directory: Path, n_inputs: int) -> Path:
        path = Path(directory) / HEADER
        path.write_text(self.header(n_inputs))
        return path

    def describe(self) -> dict:
        return {"raw_type": self.raw_type.hls("AP_TRN", "AP_SAT"), "constant_fraction_bits": self.k,
                **{name: spelling for name, spelling in self.cpp_types().items() if name != "raw_t"}}


def float_path_codes(mean, std, input_type: ir.FixedType, x_raw: np.ndarray) -> np.ndarray:
    """What training does: float32 ``(x - mean) / std`` (edgeann.data.Scaler), then the input quantizer's floor
    and saturation."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    scaled = ((np.asarray(x_raw, np.float32) - mean) / std).astype(np.float32)
    return ir.quantize_float(scaled, input_type)


def agreement(scaling: InputScaling, x_raw: np.ndarray) -> dict:
    """How often the fixed-point standardization gives the float path's input code, on ``x_raw``."""
    fixed = scaling.codes(x_raw)
    ref = float_path_codes(scaling.mean, scaling.std, scaling.input_type, x_raw)
    diff = np.abs(fixed - ref)
    return {"n_values": int(diff.size), "equal_fraction": float(np.mean(diff == 0)) if diff.size else 1.0,
            "differing_values": int(np.count_nonzero(diff)), "max_lsb_diff": int(diff.max(initial=0))}
