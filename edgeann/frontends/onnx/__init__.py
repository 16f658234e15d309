"""Read a foreign model (QONNX, or float ONNX with a chosen precision) into the fixed-point graph.

QONNX files from other tools (Brevitas/FINN, QKeras through qonnx, ...) carry ``Quant`` /
``BipolarQuant`` nodes. After qonnx's clean-up, the graph is walked once in topological order
(:mod:`~edgeann.frontends.onnx.reader`), each op read by the function its ``ops_*`` module registers:
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

import copy
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeann import ir
from edgeann.frontends.onnx import ops_quant, ops_qcdq, ops_dense, ops_shape  # noqa: F401, I001  (they register their ops)
from edgeann.frontends.onnx.heads import Head, cut_head
from edgeann.frontends.onnx.reader import OPS, clean, exact_fixed, load_onnx, parse_precision, quantize_const, read

SUPPORTED_OPS = tuple(OPS)

__all__ = ["SUPPORTED_OPS", "Foreign", "clean", "exact_fixed", "from_onnx", "load_onnx", "model_kind", "parse_precision",
           "quantize_const", "read_foreign"]


def model_kind(model: onnx.ModelProto) -> str:
    """``qonnx`` (Quant nodes), ``qcdq`` (QuantizeLinear / DequantizeLinear) or ``float``."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"Quant", "BipolarQuant", "Trunc"}:
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


def read_foreign(path: Path, precision: ir.FixedType | None = None, name: str | None = None) -> Foreign:
    """Read a QONNX, QCDQ or float ONNX file into the fixed-point graph, ending at the logits."""
    path = Path(path)
    model = load_onnx(path)
    reference, head = cut_head(model)
    graph = read(clean(copy.deepcopy(reference)), name or path.name.split(".")[0], precision)
    return Foreign(graph, model_kind(model), model, reference, head)


def from_onnx(path: Path, precision: ir.FixedType | None = None, name: str | None = None) -> ir.Graph:
    """Read a QONNX, QCDQ or float ONNX file into the fixed-point graph (ending at the logits)."""
    return read_foreign(path, precision, name).graph
