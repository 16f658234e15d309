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

from pathlib import Path

from edgeann import ir
from edgeann.frontends.onnx import ops_quant, ops_dense, ops_shape  # noqa: F401, I001  (they register their ops)
from edgeann.frontends.onnx.reader import OPS, clean, exact_fixed, load_onnx, parse_precision, quantize_const, read

SUPPORTED_OPS = tuple(OPS)

__all__ = ["SUPPORTED_OPS", "clean", "exact_fixed", "from_onnx", "load_onnx", "parse_precision", "quantize_const"]


def from_onnx(path: Path, precision: ir.FixedType | None = None, name: str | None = None) -> ir.Graph:
    """Read a QONNX or float ONNX file into the fixed-point graph."""
    path = Path(path)
    return read(clean(load_onnx(path)), name or path.name.split(".")[0], precision)
