"""Read a foreign model (QONNX, or float ONNX with a chosen precision) into the fixed-point graph.

QONNX files from other tools (Brevitas/FINN, QKeras through qonnx, ...) carry ``Quant`` /
``BipolarQuant`` nodes. After qonnx's clean-up, the graph is walked once in topological order
(:mod:`~edgeann.frontends.onnx.reader`), each op read by the function its ``ops_*`` module registers:
constants are quantized where a ``Quant`` meets them, ``MatMul``/``Gemm`` (+ ``Add`` of a
constant) become :class:`~edgeann.ir.Dense`, ``Conv`` / ``MaxPool`` / ``AveragePool`` / ``GlobalAveragePool``
their channels-last :mod:`~edgeann.ir.conv` counterparts (:mod:`~edgeann.frontends.onnx.ops_conv`; a channels-first
input becomes a channels-last :class:`~edgeann.ir.Input` and :attr:`Foreign.input_perm` says how the original is fed),
an ``Add`` of two activations :class:`~edgeann.ir.Add`, ``Relu`` followed by a ``Quant`` becomes
:class:`~edgeann.ir.Relu`, and a ``Quant`` on a dynamic tensor becomes the graph
:class:`~edgeann.ir.Input` or a :class:`~edgeann.ir.Quantize`.

A float ONNX model gets post-training fixed point from ``precision``: weights and biases are
rounded to it, the input and every layer output are truncated to it (hls4ml's usual default
is ``ap_fixed<16,6>``).

Everything outside that set ends in an :class:`~edgeann.errors.EdgeannError` naming the node.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeann import ir
from edgeann.frontends.onnx import ops_quant, ops_qcdq, ops_dense, ops_shape, ops_requant, ops_conv  # noqa: F401, I001  (they register their ops)
from edgeann.frontends.onnx.heads import Head, cut_head
from edgeann.frontends.onnx.reader import OPS, QUANTIZERS, clean, exact_fixed, load_onnx, parse_precision, quantize_const, read

SUPPORTED_OPS = tuple(OPS)

__all__ = ["SUPPORTED_OPS", "Foreign", "clean", "exact_fixed", "from_onnx", "load_onnx", "model_kind", "parse_precision",
           "quantize_const", "read_foreign"]


def model_kind(model: onnx.ModelProto) -> str:
    """``qonnx`` (Quant nodes), ``qcdq`` (QuantizeLinear / DequantizeLinear) or ``float``."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"Quant", "BipolarQuant", "Trunc", "MultiThreshold"}:
        return "qonnx"
    return "qcdq" if ops & {"QuantizeLinear", "DequantizeLinear"} else "float"


@dataclass
class Foreign:
    """A foreign model read into the graph: ``model`` is the original, ``reference`` the original cut at the
    logits when a ``head`` (Softmax, ArgMax, ...) was cut off (else ``model`` itself)."""

    graph: ir.Graph
    kind: str
    model: onnx.ModelProto
    reference: onnx.ModelProto
    head: Head | None
    input_on_grid: bool = False  # the input type was named (--input-precision): verify only on its grid
    output_scale: np.ndarray | None = None  # the output codes' float scale where it is no power of two
    output_offset: np.ndarray | None = None  # a trailing affine float chain's offset: value = code * scale + offset
    input_perm: tuple[int, ...] | None = None  # axes taking the firmware's channels-last inputs into the model's layout
    output_perm: tuple[int, ...] | None = None  # axes taking the model's channels-first output to the firmware's


def read_foreign(path: Path, precision: ir.FixedType | None = None, name: str | None = None,
                 input_precision: ir.FixedType | None = None) -> Foreign:
    """Read a QONNX, QCDQ or float ONNX file into the fixed-point graph, ending at the logits. ``input_precision``
    is the firmware's input type where a quantized model's input enters unquantized: the original then computes
    on any float, the firmware on that grid, so the two are compared on the grid."""
    path = Path(path)
    model = load_onnx(path)
    reference, head = cut_head(model)
    if input_precision is None and precision is None and model_kind(reference) != "float":
        input_precision = annotated_input_type(reference)
    layout: dict = {}
    graph, output_scale, output_offset = read(clean(copy.deepcopy(reference)), name or path.name.split(".")[0],
                                              precision, input_precision, layout)
    return Foreign(graph, model_kind(model), model, reference, head, input_precision is not None, output_scale,
                   output_offset, layout["input_perm"], layout["output_perm"])


def annotated_input_type(model: onnx.ModelProto) -> ir.FixedType | None:
    """The fixed-point type of an input that carries a QONNX datatype annotation (``INT8``, ``UINT4``, ``BIPOLAR``,
    ``TERNARY``, ``BINARY``, ``FIXED<W,I>``) and that no quantizer reads first: the firmware's input type, as if
    given with --input-precision. None for a float annotation or none at all."""
    from qonnx.core.datatype import DataType

    initializers = {t.name for t in model.graph.initializer}
    name = next(i.name for i in model.graph.input if i.name not in initializers)
    if any(n.op_type in QUANTIZERS and n.input and n.input[0] == name for n in model.graph.node):
        return None
    text = next((p.value for a in model.graph.quantization_annotation if a.tensor_name == name
                 for p in a.quant_parameter_tensor_names if p.key == "finn_datatype"), None)
    try:
        dt = DataType[text] if text else None
    except (KeyError, AttributeError):
        return None
    if dt is None:
        return None
    if text in ("BIPOLAR", "TERNARY"):
        return ir.FixedType(2, 0, True, narrow=True)
    if dt.is_integer():
        return ir.FixedType(max(dt.bitwidth(), 2 if dt.signed() else 1), 0, dt.signed())
    if dt.is_fixed_point():
        return ir.FixedType(dt.bitwidth(), dt.frac_bits(), True)
    return None


def from_onnx(path: Path, precision: ir.FixedType | None = None, name: str | None = None) -> ir.Graph:
    """Read a QONNX, QCDQ or float ONNX file into the fixed-point graph (ending at the logits)."""
    return read_foreign(path, precision, name).graph
