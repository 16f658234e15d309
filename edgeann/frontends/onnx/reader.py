"""The core of the ONNX front end: the model's constants, the ONNX -> graph tensor aliases, and node emission.

After qonnx's clean-up (shapes inferred, constants folded, names unique, graph sorted), the graph is walked once
in topological order and each node is handed to the function registered for its op type in :data:`OPS`
(``ops_*.py``). Everything outside that set ends in an :class:`~edgeann.errors.EdgeannError` naming the node.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.registry import Registry

OpReader = Callable[["Reader", onnx.NodeProto, str], None]  # (reader, node, where) -> None
OPS = Registry("ONNX op reader")  # ONNX op type -> the function reading it into the graph
op = OPS.register

_AP_TYPE = re.compile(r"^\s*ap_(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*>\s*$")


def parse_precision(text: str, option: str = "--precision") -> ir.FixedType:
    """``ap_fixed<16,6>`` / ``ap_ufixed<8,3>`` -> FixedType."""
    m = _AP_TYPE.match(text)
    if not m:
        raise EdgeannError(f"{option} {text!r}: expected ap_fixed<W,I> or ap_ufixed<W,I>")
    unsigned, width, integer = m.group(1) == "u", int(m.group(2)), int(m.group(3))
    if not 2 <= width <= 24:
        raise EdgeannError(f"{option} {text!r}: width {width} is outside 2-24 bits")
    return ir.FixedType(width, width - integer, not unsigned)


def pow2_frac(scale: np.ndarray, where: str) -> int:
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


def bit_width(value, where: str, lo: int = 1, hi: int = 32) -> int:
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


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Const:
    """A constant of the model: its float ``values`` (as the original computes them) and, once a quantizer typed
    it, its integer codes ``ints`` of ``type``. ``scale`` (float64, broadcastable to the values) is set where the
    quantizer's scale is not one power of two: the value is then ``ints * scale``, and ``type`` has no fraction
    bits (it types the codes)."""

    def __init__(self, values: np.ndarray, ints: np.ndarray | None = None, type: ir.FixedType | None = None,
                 scale: np.ndarray | None = None):
        self.values, self.ints, self.type, self.scale = values, ints, type, scale


QUANTIZERS = ("Quant", "BipolarQuant", "MultiThreshold", "QuantizeLinear", "DequantizeLinear")
QONNX_QUANTIZERS = ("Quant", "BipolarQuant", "MultiThreshold", "Trunc")


class Reader:
    def __init__(self, model: onnx.ModelProto, name: str, precision: ir.FixedType | None,
                 input_precision: ir.FixedType | None = None):
        self.model, self.name, self.precision, self.input_precision = model, name, precision, input_precision
        self.quantized = any(n.op_type in QUANTIZERS for n in model.graph.node)
        self.qonnx = any(n.op_type in QONNX_QUANTIZERS for n in model.graph.node)
        self.output_scale: np.ndarray | None = None  # the output codes' float scale where it is no power of two
        self.output_gain: np.ndarray | None = None  # a trailing affine float chain: output = gain * code + offset
        self.output_offset: np.ndarray | None = None
        self.consts: dict[str, Const] = {t.name: Const(numpy_helper.to_array(t)) for t in model.graph.initializer}
        self.alias: dict[str, str] = {}  # onnx tensor -> ir tensor
        self.relu_of: dict[str, str] = {}  # onnx tensor -> ir tensor it is the ReLU of (not yet emitted)
        self.nodes: list[ir.Node] = []
        self.dense_out: dict[str, ir.Dense] = {}  # onnx tensor that is a bias-less Dense's output
        self.raw_acc: set[str] = set()  # IR tensors that are untruncated Dense results (PTQ only)
        self.pending: dict = {}  # onnx tensor -> a quantizer spread over several nodes, not yet emitted (ops_qcdq)
        self.chains: dict = {}  # onnx tensor -> float elementwise ops on an integer tensor, not yet requantized (ops_requant)
        self.scales: dict[str, np.ndarray] = {}  # IR tensor -> its codes' float scale where it is no power of two
        self.cf: set[str] = set()  # onnx tensors that are channels-first (N, C, ...) while their IR tensor is channels-last
        self.flat_perm: dict[str, np.ndarray] = {}  # flattened channels-first onnx tensor -> IR position of each value
        self.input_perm: tuple[int, ...] | None = None  # firmware-layout input -> the model's layout (channels-first)
        self.output_perm: tuple[int, ...] | None = None  # the model's channels-first output -> the firmware's layout
        self.shape: dict[str, tuple] = {}
        for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shape[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        inputs = [i for i in model.graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(model.graph.output) != 1:
            raise EdgeannError(f"edgeann supports models with one input and one output (this one has {len(inputs)} and {len(model.graph.output)})")
        self.graph_input = inputs[0].name
        self.input_label = next((p.value for p in model.metadata_props if p.key == ORIGINAL_INPUT), self.graph_input)
        self.in_shape = tuple(self.shape[self.graph_input][1:])
        if any(d is None for d in self.in_shape):
            raise EdgeannError(f"input {self.graph_input}: per-sample shape {self.in_shape} is not fully known")
        if self.channels_first_input():
            d = len(self.in_shape) - 1
            self.cf.add(self.graph_input)
            self.in_shape = (*self.in_shape[1:], self.in_shape[0])
            self.input_perm = (0, d + 1, *range(1, d + 1))

    def channels_first_input(self) -> bool:
        """A convolutional model whose (N, C, *spatial) input is not first transposed to channels-last (Keras-style
        exports are): the firmware reads it channels-last, (*spatial, C)."""
        convs = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool"}
        nodes = self.model.graph.node
        if len(self.in_shape) not in (2, 3) or not any(n.op_type in convs for n in nodes):
            return False
        inputs = {self.graph_input}  # the input and its quantized copies (a Quant may come before the Transpose)
        for n in nodes:
            if n.op_type in ELEMENTWISE and n.input and n.input[0] in inputs:
                inputs.add(n.output[0])
        return not any(n.op_type == "Transpose" and n.input[0] in inputs for n in nodes)

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
        if tensor in self.chains:
            from edgeann.frontends.onnx.ops_requant import unended

            raise unended(self, tensor, where)
        if tensor in self.pending:
            self.alias[tensor] = self.pending.pop(tensor).materialize(self, where)
        if tensor in self.relu_of:
            src = self.relu_of.pop(tensor)
            self.alias[tensor] = self.emit(ir.Relu(self.unique(f"relu_{src}"), [src], type=self.relu_passthrough(src)))
        if tensor == self.graph_input and tensor not in self.alias:
            t = self.precision or self.input_precision
            if t is None and self.quantized:
                raise EdgeannError(f"{where}: the model input {self.input_label} enters unquantized; pass "
                                   "--input-precision 'ap_fixed<W,I>' to name the firmware's input type (verification "
                                   "then draws the inputs on that grid)")
            if t is None:
                raise EdgeannError(f"{where}: the model input {self.input_label} is not quantized; pass --precision "
                                   "for its type")
            self.alias[tensor] = self.emit(ir.Input("input", [], shape=self.in_shape, type=t))
        if tensor not in self.alias:
            raise EdgeannError(f"{where}: input {tensor} comes from an unsupported construct")
        return self.alias[tensor]

    def quantizer_on_input(self, where: str) -> None:
        """A quantizer reads the model input: it types the input itself, so --input-precision has no place."""
        if self.input_precision is not None:
            raise EdgeannError(f"{where}: the model input {self.input_label} is quantized here; drop --input-precision")

    def relu_passthrough(self, src: str) -> ir.FixedType:
        if self.precision is not None:
            return self.precision
        t = self.info(src).type
        return ir.FixedType(max(t.width - 1, 1), t.frac, signed=False)

    def info(self, tensor: str) -> ir.TensorInfo:
        return ir.Graph(self.name, list(self.nodes), [tensor]).infos()[tensor]

    def const(self, tensor: str, where: str) -> Const:
        if tensor not in self.consts:
            raise EdgeannError(f"{where}: expected a constant for {tensor}")
        return self.consts[tensor]

    def finish(self) -> ir.Graph:
        out = self.model.graph.output[0].name
        if out in self.flat_perm:
            raise EdgeannError(f"output {out}: a flattened channels-first feature map is not supported as the model's "
                               "output; end the model with a Gemm/MatMul, or with the feature map itself")
        shape = self.shape.get(out)
        if out in self.cf and shape and len(shape) in (3, 4) and int(np.prod(shape[2:])) > 1:
            # the firmware's output is channels-last: the original's is transposed by this before comparing
            self.output_perm = (0, *range(2, len(shape)), 1)
        if out in self.chains:
            from edgeann.frontends.onnx.ops_requant import end_trailing

            end_trailing(self, out, f"output {out}")
        src = self.dynamic(out, f"output {out}")
        self.output_scale = self.output_gain if self.output_gain is not None else self.scales.get(src)
        if self.output_perm is not None:  # per-channel scale and offset of a channels-last feature map, flattened
            spatial = int(np.prod(self.info(src).shape[:-1]))
            tile = lambda v: v if v is None or np.size(v) == 1 else np.tile(np.ravel(v), spatial)  # noqa: E731
            self.output_scale, self.output_offset = tile(self.output_scale), tile(self.output_offset)
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


ORIGINAL_NAME = "edgeann.original_name"  # node metadata: the name a node had before qonnx renamed it
ORIGINAL_INPUT = "edgeann.original_input"  # model metadata: the input's name before qonnx renamed it


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """qonnx's clean-up: shapes inferred, constants folded, names unique, graph sorted. Each node keeps the name
    it had in the user's file (for the messages) in its metadata."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    for node in model.graph.node:
        if node.name:
            node.metadata_props.add(key=ORIGINAL_NAME, value=node.name)
    initializers = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in initializers:
            model.metadata_props.add(key=ORIGINAL_INPUT, value=i.name)
            break
    _initializers_are_not_inputs(model)
    if not any(n.op_type in QUANTIZERS or n.op_type in QONNX_QUANTIZERS for n in model.graph.node):
        from edgeann.frontends.onnx.fold_bn import fold_batchnorms

        fold_batchnorms(model)  # a float model: batch norms into the products before them, as PTQ does
    _bypass_identities(model)
    try:
        return cleanup_model(ModelWrapper(model)).model
    except Exception as e:
        raise EdgeannError(f"qonnx could not clean up the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def _initializers_are_not_inputs(model: onnx.ModelProto) -> None:
    """Models of ONNX IR version 3 (PyTorch's old exporter) list every initializer as a graph input too; qonnx's
    clean-up removes unused initializers (BatchNorm's ``num_batches_tracked``) but keeps such inputs, which then
    look like more model inputs. From IR version 4 on an initializer need not be an input."""
    initializers = {t.name for t in model.graph.initializer}
    if not initializers & {i.name for i in model.graph.input}:
        return
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)


def _bypass_identities(model: onnx.ModelProto) -> None:
    """Drop ``Identity`` and inference ``Dropout`` nodes (Keras exporters put them after every layer, on tensors of
    any shape and layout), their readers reading the node's input instead. One that writes a graph output stays."""
    outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        used = [o for o in node.output if o]
        if node.op_type in ("Identity", "Dropout") and node.input and not outputs & set(used) and \
                (node.op_type == "Identity" or len(node.input) == 1):
            rename[used[0]] = node.input[0]
            if len(used) == 1:
                continue
        keep.append(node)
    if rename:
        del model.graph.node[:]
        model.graph.node.extend(keep)


# ops that only move values: folding them keeps a quantized constant's integer codes and type
MOVES_VALUES = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout")
_TYPED_CONSTANTS = ("Quant", "BipolarQuant", "DequantizeLinear")  # their readers make typed constants themselves


def fold(r: Reader, node: onnx.NodeProto, where: str) -> None:
    """Evaluate a node whose inputs are all constants (what qonnx's clean-up leaves: a weight ``Transpose`` after
    a ``DequantizeLinear``, say) with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    opset = next((o.version for o in r.model.opset_import if o.domain in ("", "ai.onnx")), 13)
    names = [i for i in node.input if i]

    def run(arrays: dict) -> list[np.ndarray]:
        g = onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o],
                                   [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()])
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return ReferenceEvaluator(model).run(None, {})

    try:
        values = run({k: r.consts[k].values for k in names})
        first = r.consts[node.input[0]]
        ints = None
        if node.op_type in MOVES_VALUES and first.ints is not None:
            ints = run({k: (r.consts[k].ints if k == node.input[0] else r.consts[k].values) for k in names})[0]
    except Exception as e:
        raise EdgeannError(f"{where}: could not fold this constant ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    outputs = [o for o in node.output if o]
    for k, o in enumerate(outputs):
        r.consts[o] = Const(np.asarray(values[k]), *((np.asarray(ints).astype(np.int64), first.type) if k == 0 and ints is not None else ()))


# elementwise ops (with constants for their other operands): they keep their dynamic input's layout
ELEMENTWISE = ("Quant", "Relu", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "BipolarQuant",
               "MultiThreshold", "BatchNormalization", "Mul", "Div", "Add", "Sub", "Neg", "Clip", "Cast")


def read(model: onnx.ModelProto, name: str, precision: ir.FixedType | None,
         input_precision: ir.FixedType | None = None, layout: dict | None = None
         ) -> tuple[ir.Graph, np.ndarray | None, np.ndarray | None]:
    """Walk a cleaned-up model node by node into the fixed-point graph. ``input_precision`` types an input that
    enters a quantized model unquantized (QKeras exports). Returns the graph and, where the output's codes have a
    scale that is no power of two, that scale, and where a trailing affine float chain was left to the reference, its
    offset (value = code * scale + offset, per output or one for all). ``layout``, where given, receives
    ``input_perm``: the axes that take the firmware's (channels-last) inputs into the model's layout, or None where
    they agree, and ``output_perm``: those that take the model's channels-first output feature map to the
    firmware's channels-last one."""
    reader = Reader(model, name, precision, input_precision)
    if input_precision is not None and not reader.quantized:
        raise EdgeannError("--input-precision is for quantized models whose input is not quantized; a float model "
                           "takes --precision")
    for k, node in enumerate(model.graph.node):
        original = next((p.value for p in node.metadata_props if p.key == ORIGINAL_NAME), None)
        where = f"node {original or node.name or k} ({node.op_type})"
        if node.op_type not in _TYPED_CONSTANTS and all(i in reader.consts for i in node.input if i) and node.input:
            fold(reader, node, where)
            continue
        fn = OPS.get(node.op_type)
        if fn is None:
            raise EdgeannError(f"{where}: op {node.op_type} is not supported (supported: {', '.join(OPS)})")
        if precision is not None and node.op_type in QUANTIZERS:
            kind = "QONNX" if node.op_type in ("Quant", "BipolarQuant") else "QCDQ"
            raise EdgeannError(f"{where}: the model is already quantized ({kind}); drop --precision")
        fn(reader, node, where)
        dynamic = [i for i in node.input if i and i not in reader.consts]
        if node.op_type in ELEMENTWISE and len(dynamic) == 1 and dynamic[0] in reader.cf:
            reader.cf.add(node.output[0])
        if node.op_type in ELEMENTWISE and len(dynamic) == 1 and dynamic[0] in reader.flat_perm:
            reader.flat_perm[node.output[0]] = reader.flat_perm[dynamic[0]]
    graph = reader.finish()
    if layout is not None:
        layout["input_perm"], layout["output_perm"] = reader.input_perm, reader.output_perm
    return graph, reader.output_scale, reader.output_offset
