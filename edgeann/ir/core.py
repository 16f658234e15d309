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
