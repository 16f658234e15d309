"""Write the fixed-point graph as standard ONNX (QuantizeLinear / Clip / DequantizeLinear).

The result is the onnxruntime reference for the firmware, so it must compute exactly what
:meth:`edgeann.ir.Graph.execute` computes:

* every quantizer truncates: ``Mul(2^f) -> Floor -> Mul(2^-f)`` puts the value on the grid
  (exact in binary floating point), then ``QuantizeLinear -> Clip -> DequantizeLinear``
  saturates it (``QuantizeLinear`` alone would round half to even); foreign models that ask
  for round-half-to-even get ``Round`` in place of ``Floor``;
* 9-16-bit quantizers clip in float before an int16/uint16 ``QuantizeLinear``
  (onnxruntime has no int16 ``Clip``); 17-24-bit ones saturate with a float ``Clip`` alone;
* a dense layer sums in float32 only when every partial sum is provably below 2^24 in units
  of its least significant bit (then float32 is exact); wider layers sum in float64, exact
  below 2^53, so no accumulator is ever rounded.

Brevitas' own QCDQ exporter rounds half to even and stops at 8 bits, so edgeann writes this
file itself; the QONNX file (Quant nodes) comes from Brevitas (:mod:`edgeann.export`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeann import ir
from edgeann.registry import Registry

OPSET = 21
IR_VERSION = 10
FLOAT32_EXACT = 2**24
MAX_QUANTIZER_BITS = 24


class _Builder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.dtype: dict[str, int] = {}  # float tensors: FLOAT or DOUBLE
        self._n = 0

    def const(self, hint: str, value: np.ndarray) -> str:
        name = f"{hint}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, hint: str = "", **attrs) -> str:
        self._n += 1
        out = out or f"{hint}/{op_type}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{hint}/{op_type}_{self._n}", **attrs))
        return out


def _storage(t: ir.FixedType) -> tuple[type, int]:
    if t.width <= 8:
        return (np.int8, 8) if t.signed else (np.uint8, 8)
    return (np.int16, 16) if t.signed else (np.uint16, 16)


def emit_quantizer(b: _Builder, x: str, t: ir.FixedType, out: str, hint: str, rounding: str = "floor") -> str:
    """Round onto ``t``'s grid (floor, or half to even) and saturate, in QCDQ form.

    ``x`` may be float32 or float64.
    """
    wide = b.dtype.get(x, TensorProto.FLOAT) == TensorProto.DOUBLE
    fdt = np.float64 if wide else np.float32
    up = b.const(f"{hint}/grid", fdt(2.0**t.frac))
    down = b.const(f"{hint}/lsb", fdt(2.0**-t.frac))
    if rounding == "floor" and t.frac < 0:
        # floor(x * 2^f) == floor(floor(x) * 2^f) for f < 0; flooring first keeps a tiny negative
        # x from underflowing to -0.0 (whose floor would be 0, not -1)
        x = b.op("Floor", [x], hint=hint)
    to_grid = {"floor": "Floor", "half_even": "Round"}[rounding]  # ONNX Round is half to even
    y = b.op("Mul", [b.op(to_grid, [b.op("Mul", [x, up], hint=hint)], hint=hint), down], hint=hint)
    if wide:  # exact after saturation: in-range values have at most 16 significant bits
        y = b.op("Cast", [y], hint=hint, to=TensorProto.FLOAT)
    if t.width > MAX_QUANTIZER_BITS:
        raise ValueError(f"{hint}: a {t.width}-bit quantizer is wider than the {MAX_QUANTIZER_BITS} bits float32 holds exactly")
    if t.width > 16:  # no 32-bit QuantizeLinear: saturate in float32, exact up to 24 bits
        lo = b.const(f"{hint}/min", np.float32(t.int_min * t.scale))
        hi = b.const(f"{hint}/max", np.float32(t.int_max * t.scale))
        out = b.op("Clip", [y, lo, hi], out=out, hint=hint)
        b.dtype[out] = TensorProto.FLOAT
        return out
    storage, bits = _storage(t)
    scale = b.const(f"{hint}/scale", np.float32(t.scale))
    zero = b.const(f"{hint}/zero_point", storage(0))
    info = np.iinfo(storage)
    if bits == 16:
        lo = b.const(f"{hint}/min", np.float32(t.int_min * t.scale))
        hi = b.const(f"{hint}/max", np.float32(t.int_max * t.scale))
        y = b.op("Clip", [y, lo, hi], hint=hint)
    q = b.op("QuantizeLinear", [y, scale, zero], hint=hint)
    if bits == 8 and (t.int_min, t.int_max) != (info.min, info.max):
        q = b.op("Clip", [q, b.const(f"{hint}/qmin", storage(t.int_min)), b.const(f"{hint}/qmax", storage(t.int_max))], hint=hint)
    out = b.op("DequantizeLinear", [q, scale, zero], out=out, hint=hint)
    b.dtype[out] = TensorProto.FLOAT
    return out


Emitter = Callable[["_Builder", ir.Node, dict, str], str]  # (builder, node, tensor infos, graph input) -> output
EMITTERS = Registry("ONNX emitter")  # node type (exact) -> the function writing it as ONNX nodes
emitter = EMITTERS.register


@emitter(ir.Input)
def _emit_input(b, node: ir.Input, infos, graph_input: str):
    return emit_quantizer(b, graph_input, node.type, node.name, node.name, node.rounding)


def dense_is_float32_exact(node: ir.Dense, x: ir.TensorInfo) -> bool:
    """True when every partial sum of the layer is an integer below 2^24 LSBs (float32 exact)."""
    frac = node.acc_frac(x)
    w = np.abs(node.weight.astype(np.int64)) << (frac - x.type.frac - node.weight_type.frac)
    b = np.abs(node.bias.astype(np.int64)) << (frac - node.bias_type.frac)
    bound = b + w.sum(axis=1) * max(abs(x.lo), abs(x.hi))
    return int(bound.max(initial=0)) < FLOAT32_EXACT


@emitter(ir.Dense)
def _emit_dense(b, node: ir.Dense, infos, graph_input):
    (src,) = node.inputs
    x = infos[src]
    h = node.name
    if dense_is_float32_exact(node, x):
        wq = b.const(f"{h}/weight_int", node.weight.astype(np.int8))
        w = b.op("DequantizeLinear", [wq, b.const(f"{h}/weight_scale", np.float32(node.weight_type.scale))], hint=h)
        bq = b.const(f"{h}/bias_int", node.bias.astype(np.int32))
        bias = b.op("DequantizeLinear", [bq, b.const(f"{h}/bias_scale", np.float32(node.bias_type.scale))], hint=h)
        out = b.op("Gemm", [src, w, bias], out=h, hint=h, transB=1)
        b.dtype[out] = TensorProto.FLOAT
    else:  # float64 accumulation: exact below 2^53
        xd = b.op("Cast", [src], hint=h, to=TensorProto.DOUBLE)
        w = b.const(f"{h}/weight", (node.weight.T.astype(np.float64) * node.weight_type.scale))
        bias = b.const(f"{h}/bias", node.bias.astype(np.float64) * node.bias_type.scale)
        out = b.op("Add", [b.op("MatMul", [xd, w], hint=h), bias], out=h, hint=h)
        b.dtype[out] = TensorProto.DOUBLE
    return out


@emitter(ir.Relu)
def _emit_relu(b, node: ir.Relu, infos, graph_input):
    (src,) = node.inputs
    r = b.op("Relu", [src], hint=node.name)
    b.dtype[r] = b.dtype.get(src, TensorProto.FLOAT)
    return emit_quantizer(b, r, node.type, node.name, node.name, node.rounding)


@emitter(ir.Quantize)
def _emit_quantize(b, node: ir.Quantize, infos, graph_input):
    return emit_quantizer(b, node.inputs[0], node.type, node.name, node.name, node.rounding)



INPUT_NAME = "global_in"
OUTPUT_NAME = "global_out"


def to_onnx(graph: ir.Graph, expose_all: bool = False) -> onnx.ModelProto:
    """The graph as an onnxruntime model with a dynamic batch dimension ``N``.

    Every graph tensor keeps its name in the ONNX model; ``expose_all`` makes each one a graph
    output too (for tracing where two implementations diverge).
    """
    infos = graph.infos()
    b = _Builder()
    for node in graph.nodes:
        emit = EMITTERS.get(type(node))
        if emit is None:
            raise NotImplementedError(f"no ONNX emitter for {type(node).__name__}")
        emit(b, node, infos, INPUT_NAME)
    (last,) = graph.outputs
    b.nodes.append(helper.make_node("Identity", [last], [OUTPUT_NAME], name=OUTPUT_NAME))
    in_shape = ["N", *graph.input.shape]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", *infos[last].shape])]
    if expose_all:
        outputs += [helper.make_tensor_value_info(n.name, b.dtype.get(n.name, TensorProto.FLOAT), None) for n in graph.nodes]
    g = helper.make_graph(
        b.nodes, graph.name, [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_shape)], outputs, b.inits
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeann")
    model.ir_version = IR_VERSION
    model.doc_string = (
        "edgeann fixed-point reference: quantizers truncate (floor) and saturate; accumulations are exact."
    )
    onnx.checker.check_model(model)
    return model


def save(graph: ir.Graph, path: Path) -> None:
    onnx.save(to_onnx(graph), str(path))


def session(model: onnx.ModelProto | Path | str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def run(model, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """onnxruntime on float32 input, in batches; returns the output as float64."""
    sess = model if hasattr(model, "run") else session(model)
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def run_any(path: Path | str, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """onnxruntime on any single-input ONNX model, its batch dimension made dynamic first."""
    model = onnx.load(str(path))
    model.graph.ClearField("value_info")
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    sess = session(model)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)
