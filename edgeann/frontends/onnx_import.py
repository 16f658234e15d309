"""Read a foreign model (QONNX, or float ONNX with a chosen precision) into the fixed-point graph.

QONNX files from other tools (Brevitas/FINN, QKeras through qonnx, ...) carry ``Quant`` /
``BipolarQuant`` nodes. After qonnx's clean-up, the graph is walked once in topological order:
constants are quantized where a ``Quant`` meets them, ``MatMul``/``Gemm`` (+ ``Add`` of a
constant) become :class:`~edgeann.ir.Dense`, ``Relu`` followed by a ``Quant`` becomes
:class:`~edgeann.ir.Relu`, and a ``Quant`` on a dynamic tensor becomes the graph
:class:`~edgeann.ir.Input` or a :class:`~edgeann.ir.Quantize`.

A float ONNX model gets post-training fixed point from ``precision``: weights and biases are
rounded to it, the input and every layer output are truncated to it (hls4ml's usual default
is ``ap_fixed<16,6>``).

Everything outside that set ends in an :class:`~edgeann.errors.EdgeannError` naming the node.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeann import ir
from edgeann.errors import EdgeannError

SUPPORTED_OPS = ("Quant", "BipolarQuant", "MatMul", "Gemm", "Add", "Relu", "Flatten", "Reshape", "Identity")
_AP_TYPE = re.compile(r"^\s*ap_(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*>\s*$")


def parse_precision(text: str) -> ir.FixedType:
    """``ap_fixed<16,6>`` / ``ap_ufixed<8,3>`` -> FixedType."""
    m = _AP_TYPE.match(text)
    if not m:
        raise EdgeannError(f"--precision {text!r}: expected ap_fixed<W,I> or ap_ufixed<W,I>")
    unsigned, width, integer = m.group(1) == "u", int(m.group(2)), int(m.group(3))
    if not 2 <= width <= 24:
        raise EdgeannError(f"--precision {text!r}: width {width} is outside 2-24 bits")
    return ir.FixedType(width, width - integer, not unsigned)


def _pow2_frac(scale: np.ndarray, where: str) -> int:
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(s == s[0]):
        raise EdgeannError(f"{where}: per-channel scales are not supported; use one power-of-two scale per tensor")
    mantissa, exponent = math.frexp(float(s[0]))
    if s[0] <= 0 or mantissa != 0.5:
        raise EdgeannError(
            f"{where}: scale {float(s[0])!r} is not a power of two, so no ap_fixed type holds it exactly; "
            "use a fixed-point quantizer (Brevitas *FixedPoint quantizers, QKeras quantized_bits with alpha=1)"
        )
    return 1 - exponent


def _bit_width(value, where: str, lo: int = 1, hi: int = 32) -> int:
    b = float(np.asarray(value).ravel()[0])
    if b != int(b) or not lo <= b <= hi:
        raise EdgeannError(f"{where}: bit width {b:g} cannot be represented (an integer in {lo}-{hi} is needed)")
    return int(b)


def quantize_const(values: np.ndarray, t: ir.FixedType, rounding: str = "ROUND") -> np.ndarray:
    v = np.asarray(values, np.float64) * 2.0**t.frac
    ints = np.floor(v) if rounding == "FLOOR" else np.round(v)  # numpy rounds half to even
    return np.clip(ints, t.int_min, t.int_max).astype(np.int64)


def exact_fixed(values: np.ndarray, where: str, max_bits: int = 32) -> tuple[np.ndarray, ir.FixedType]:
    """Represent float constants exactly as fixed point (they must be dyadic)."""
    v = np.asarray(values, np.float64)
    for frac in range(-16, 40):
        ints = v * 2.0**frac
        if np.all(ints == np.round(ints)):
            ints = ints.astype(np.int64)
            t = ir.FixedType.covering(int(ints.min(initial=0)), int(ints.max(initial=0)), frac)
            if t.width <= max_bits:
                return ints, t
            break
    raise EdgeannError(f"{where}: float constants that are not fixed-point numbers; quantize the model or pass --precision")


class _Const:
    def __init__(self, values: np.ndarray, ints: np.ndarray | None = None, type: ir.FixedType | None = None):
        self.values, self.ints, self.type = values, ints, type


class _Reader:
    def __init__(self, model: onnx.ModelProto, name: str, precision: ir.FixedType | None):
        self.model, self.name, self.precision = model, name, precision
        self.consts: dict[str, _Const] = {t.name: _Const(numpy_helper.to_array(t)) for t in model.graph.initializer}
        self.alias: dict[str, str] = {}  # onnx tensor -> ir tensor
        self.relu_of: dict[str, str] = {}  # onnx tensor -> ir tensor it is the ReLU of (not yet emitted)
        self.nodes: list[ir.Node] = []
        self.dense_out: dict[str, ir.Dense] = {}  # onnx tensor that is a bias-less Dense's output
        self.raw_acc: set[str] = set()  # IR tensors that are untruncated Dense results (PTQ only)
        self.shape: dict[str, tuple] = {}
        for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shape[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        inputs = [i for i in model.graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(model.graph.output) != 1:
            raise EdgeannError(f"edgeann supports models with one input and one output (this one has {len(inputs)} and {len(model.graph.output)})")
        self.graph_input = inputs[0].name
        self.in_shape = tuple(self.shape[self.graph_input][1:])
        if any(d is None for d in self.in_shape):
            raise EdgeannError(f"input {self.graph_input}: per-sample shape {self.in_shape} is not fully known")

    # -- helpers
    def unique(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_") or "layer"
        names = {n.name for n in self.nodes}
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        return name

    def emit(self, node: ir.Node) -> str:
        self.nodes.append(node)
        return node.name

    def dynamic(self, tensor: str, where: str, requant: bool = True) -> str:
        """The IR tensor behind an ONNX tensor, emitting a pending ReLU if needed.

        With ``precision`` (post-training fixed point) a layer's raw accumulator is truncated
        to the precision before anything but a ReLU reads it.
        """
        if requant and self.precision is not None and self.alias.get(tensor) in self.raw_acc:
            src = self.alias[tensor]
            self.raw_acc.discard(src)
            self.alias[tensor] = self.emit(ir.Quantize(self.unique(f"{src}_out"), [src], type=self.precision))
            self.dense_out.pop(tensor, None)
        if tensor in self.relu_of:
            src = self.relu_of.pop(tensor)
            self.alias[tensor] = self.emit(ir.Relu(self.unique(f"relu_{src}"), [src], type=self._relu_passthrough(src)))
        if tensor == self.graph_input:
            if self.precision is None:
                raise EdgeannError(f"{where}: the model input {tensor} is not quantized; pass --precision for its type")
            self.alias[tensor] = self.emit(ir.Input("input", [], shape=self.in_shape, type=self.precision))
        if tensor not in self.alias:
            raise EdgeannError(f"{where}: input {tensor} comes from an unsupported construct")
        return self.alias[tensor]

    def _relu_passthrough(self, src: str) -> ir.FixedType:
        if self.precision is not None:
            return self.precision
        t = self._info(src).type
        return ir.FixedType(max(t.width - 1, 1), t.frac, signed=False)

    def _info(self, tensor: str) -> ir.TensorInfo:
        return ir.Graph(self.name, list(self.nodes), [tensor]).infos()[tensor]

    def const(self, tensor: str, where: str) -> _Const:
        if tensor not in self.consts:
            raise EdgeannError(f"{where}: expected a constant for {tensor}")
        return self.consts[tensor]

    # -- ops
    def op_Quant(self, node, where):
        x, scale, zero, bits = (list(node.input) + [None] * 4)[:4]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        rounding = attrs.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
        if rounding not in ("ROUND", "FLOOR"):
            raise EdgeannError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
        if np.any(self.const(zero, where).values != 0):
            raise EdgeannError(f"{where}: a nonzero zero point has no ap_fixed equivalent; use symmetric quantization")
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        width = _bit_width(self.const(bits, where).values, where, lo=1 if not signed else 2)
        t = ir.FixedType(width, _pow2_frac(self.const(scale, where).values, where), signed, narrow)
        out = node.output[0]
        if x in self.consts:
            c = self.consts[x]
            ints = quantize_const(c.values, t, rounding)
            self.consts[out] = _Const(ints * t.scale, ints, t)
            return
        rnd = "floor" if rounding == "FLOOR" else "half_even"
        if x == self.graph_input and self.graph_input not in self.alias:
            self.alias[out] = self.emit(ir.Input("input", [], shape=self.in_shape, type=t, rounding=rnd))
        elif x in self.relu_of:
            src = self.relu_of.pop(x)
            self.alias[out] = self.emit(ir.Relu(self.unique(node.name or f"relu_{src}"), [src], type=t, rounding=rnd))
        else:
            src = self.dynamic(x, where)
            self.alias[out] = self.emit(ir.Quantize(self.unique(node.name or f"quant_{src}"), [src], type=t, rounding=rnd))

    def op_BipolarQuant(self, node, where):
        x, scale = node.input[:2]
        if x not in self.consts:
            raise EdgeannError(f"{where}: BipolarQuant on activations is not supported (only on weights)")
        frac = _pow2_frac(self.const(scale, where).values, where)
        ints = np.where(self.consts[x].values >= 0, 1, -1).astype(np.int64)
        t = ir.FixedType(2, frac, True, True)
        self.consts[node.output[0]] = _Const(ints * t.scale, ints, t)

    def _weights(self, tensor: str, where: str, transpose: bool) -> tuple[np.ndarray, ir.FixedType]:
        c = self.const(tensor, where)
        if c.ints is None:
            if self.precision is not None:
                t = ir.FixedType(self.precision.width, self.precision.frac, True)
                c = _Const(c.values, quantize_const(c.values, t), t)
            else:
                ints, t = exact_fixed(c.values, where, max_bits=8)
                c = _Const(c.values, ints, t)
        if c.ints.ndim != 2:
            raise EdgeannError(f"{where}: weight {tensor} has shape {c.ints.shape}; only 2-d MatMul/Gemm weights are supported")
        return (c.ints.T if transpose else c.ints), c.type

    def _bias(self, tensor: str, where: str) -> tuple[np.ndarray, ir.FixedType]:
        c = self.const(tensor, where)
        if c.ints is not None:
            return c.ints.ravel(), c.type
        if self.precision is not None:
            t = ir.FixedType(self.precision.width, self.precision.frac, True)
            return quantize_const(c.values, t).ravel(), t
        ints, t = exact_fixed(c.values, where)
        return ints.ravel(), t

    def _dense(self, node, where, x: str, w: str, transpose_w: bool, bias: str | None):
        src = self.dynamic(x, where)
        weight, wt = self._weights(w, where, transpose_w)  # (n_out, n_in)
        if bias is not None:
            b, bt = self._bias(bias, where)
        else:
            b, bt = np.zeros(weight.shape[0], np.int64), ir.FixedType(2, self._info(src).type.frac + wt.frac)
        dense = ir.Dense(self.unique(node.name or "dense"), [src], weight=weight, weight_type=wt, bias=b, bias_type=bt)
        self.alias[node.output[0]] = self.emit(dense)
        self.raw_acc.add(dense.name)
        if bias is None:
            self.dense_out[node.output[0]] = dense

    def op_MatMul(self, node, where):
        x, w = node.input
        self._dense(node, where, x, w, transpose_w=True, bias=None)

    def op_Gemm(self, node, where):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise EdgeannError(f"{where}: Gemm with transA, alpha or beta is not supported")
        x, w = node.input[:2]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        self._dense(node, where, x, w, transpose_w=not attrs.get("transB", 0), bias=bias)

    def op_Add(self, node, where):
        a, b = node.input
        dyn, const = (a, b) if b in self.consts else (b, a)
        if const not in self.consts or dyn not in self.dense_out:
            raise EdgeannError(f"{where}: Add is only supported as the bias of a MatMul (constant + MatMul output)")
        dense = self.dense_out.pop(dyn)
        dense.bias, dense.bias_type = self._bias(const, where)
        if dense.bias.size == 1:
            dense.bias = np.full(dense.n_out, dense.bias[0], np.int64)
        self.alias[node.output[0]] = self.alias[dyn]

    def op_Relu(self, node, where):
        src = self.dynamic(node.input[0], where, requant=False)
        self.relu_of[node.output[0]] = src

    def _passthrough(self, node, where):
        x = node.input[0]
        if x in self.consts:
            raise EdgeannError(f"{where}: {node.op_type} of a constant should have been folded")
        shape = self.shape.get(node.output[0])
        if shape and len([d for d in shape[1:] if d != 1]) > 1:
            raise EdgeannError(f"{where}: {node.op_type} to shape {shape} is not supported (only flattening)")
        if x in self.relu_of:
            self.relu_of[node.output[0]] = self.relu_of.pop(x)
            return
        self.alias[node.output[0]] = self.dynamic(x, where)

    op_Flatten = op_Reshape = op_Identity = _passthrough

    def finish(self) -> ir.Graph:
        out = self.model.graph.output[0].name
        src = self.dynamic(out, f"output {out}")
        if not self.nodes or not isinstance(self.nodes[0], ir.Input):
            raise EdgeannError("the model's input is not quantized before its first layer")
        graph = ir.Graph(self.name, self.nodes, [src])
        graph.infos()
        return graph


def load_onnx(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise EdgeannError(f"model file {path} not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise EdgeannError(f"{path}: not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if not model.graph.node:
        raise EdgeannError(f"{path}: not a valid ONNX model (the graph has no nodes)")
    return model


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """qonnx's clean-up: shapes inferred, constants folded, names unique, graph sorted."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    try:
        return cleanup_model(ModelWrapper(model)).model
    except Exception as e:
        raise EdgeannError(f"qonnx could not clean up the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def from_onnx(path: Path, precision: ir.FixedType | None = None, name: str | None = None) -> ir.Graph:
    """Read a QONNX or float ONNX file into the fixed-point graph."""
    path = Path(path)
    model = clean(load_onnx(path))
    reader = _Reader(model, name or path.name.split(".")[0], precision)
    for k, node in enumerate(model.graph.node):
        where = f"node {node.name or k} ({node.op_type})"
        fn = getattr(reader, f"op_{node.op_type}", None)
        if fn is None:
            raise EdgeannError(f"{where}: op {node.op_type} is not supported (supported: {', '.join(SUPPORTED_OPS)})")
        if precision is not None and node.op_type in ("Quant", "BipolarQuant"):
            raise EdgeannError(f"{where}: the model is already quantized (QONNX); drop --precision")
        fn(node, where)
    return reader.finish()
