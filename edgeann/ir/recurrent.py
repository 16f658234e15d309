"""Recurrent networks in the fixed-point graph: the GRU and the LSTM, with their activation tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgeann.ir.core import Dense, FixedType, Node, TensorInfo, _align, requantize

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
