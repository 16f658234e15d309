"""Fixed-point graph -> hls4ml project, with every type taken from the graph so the firmware is the golden model.

The hls4ml ``ModelGraph`` is built directly from :class:`edgeann.ir.Graph` (``ModelGraph.from_layer_list``),
not through hls4ml's ONNX/QONNX frontend. Each node type has one small lowering function in
:data:`LOWERINGS` that turns the node into typed :class:`HlsLayer` records; new node types (Conv, pooling,
GRU, ...) register theirs with :func:`lowering`.

Types (``ir.FixedType.hls``):
* input: the Input node's type with ``AP_TRN, AP_SAT``, so the C++ ``double -> input_t`` conversion is
  exactly the Input node's floor + saturate (``AP_RND_CONV`` where a node asks for ``half_even``);
* Dense: weight and bias types exact; ``accum_t`` and the result are the graph's exact accumulator type
  (``graph.infos()``) with ``AP_WRAP``: products and partial sums may wrap, but two's-complement wrapping is
  modular, so the final sum, which is known to fit, is exact;
* Relu / Quantize (a linear Activation): their ``type`` with ``AP_TRN, AP_SAT`` (``AP_SAT_SYM`` if narrow).
* Conv1D / Conv2D (channels-last, Keras kernel layout), BatchNormalization, Merge (the residual add): exact
  like Dense; MaxPooling and Flatten (a Reshape hls4ml does in place) keep their input's type; AveragePooling
  sums in an ``accum_t`` with log2(window area) more fraction bits, where its division by the area is exact.
  io_stream limits of hls4ml 1.3 that would compute wrongly (or stop on an assert) are refused up front.

hls4ml's optimizer passes cannot be switched off one by one in 1.3 (``SkipOptimizers`` is parsed but never
used), so the default flow runs and ``_check_model`` then checks every type of every layer against what the
graph asked for, that no layer was dropped (but an identity), that every Dense uses the plain multiply and
that the reuse factor was not moved; it raises otherwise. ``BitExact`` is set to False explicitly so
hls4ml's own bit-width flow never rewrites types.

A written project is deterministic: hls4ml's random library stamp is replaced by one derived from the
firmware hash, and the absolute output path in ``hls4ml_config.yml`` by ``.``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.registry import Registry

MANIFEST = "edgeann_project.json"

# --------------------------------------------------------------------------------------------
# Options

_BACKENDS = ("Vitis", "Vivado")
_IO_TYPES = ("io_parallel", "io_stream")
_STRATEGIES = ("Latency", "Resource")


def _canonical(value: Any, allowed: tuple[str, ...], what: str) -> str:
    for a in allowed:
        if isinstance(value, str) and value.lower() == a.lower():
            return a
    raise EdgeannError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class HlsOptions:
    """How the hls4ml project is generated. Strings are matched case-insensitively and stored canonically."""

    backend: str = "Vitis"
    io_type: str = "io_parallel"
    strategy: str = "Latency"
    reuse_factor: int = 1
    clock_period: float = 5.0  # ns
    part: str = "xcvu13p-flga2577-2-e"
    project_name: str = "myproject"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "backend", _canonical(self.backend, _BACKENDS, "backend"))
        set_(self, "io_type", _canonical(self.io_type, _IO_TYPES, "io_type"))
        set_(self, "strategy", _canonical(self.strategy, _STRATEGIES, "strategy"))
        rf = self.reuse_factor
        if isinstance(rf, bool) or not isinstance(rf, (int, np.integer)) or rf < 1:
            raise EdgeannError(f"reuse_factor must be an integer >= 1, got {self.reuse_factor!r}")
        set_(self, "reuse_factor", int(self.reuse_factor))
        clock = self.clock_period
        if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not 0 < clock < 1000:
            raise EdgeannError(f"clock_period must be a number of ns in (0, 1000), got {self.clock_period!r}")
        set_(self, "clock_period", float(self.clock_period))
        if not isinstance(self.part, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.part):
            raise EdgeannError(f"part must be an FPGA part name like 'xcvu13p-flga2577-2-e', got {self.part!r}")
        if not isinstance(self.project_name, str) or not is_safe_identifier(self.project_name):
            raise EdgeannError(f"project_name must be a C identifier that is not a C++ keyword, got {self.project_name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Lowering: one function per node type

_CPP_KEYWORDS = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
    compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
    default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
    int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
    reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
    this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
    while xor xor_eq std nnet hls main""".split()
)


def is_safe_identifier(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)) and name not in _CPP_KEYWORDS and not keyword.iskeyword(name)


# ir rounding -> ap_fixed quantization mode: floor is AP_TRN (edgeann's own models); round half to even,
# which foreign models may ask for, is AP_RND_CONV.
AP_ROUNDING = {"floor": "AP_TRN", "half_even": "AP_RND_CONV"}


def sat(t: ir.FixedType, rounding: str = "floor") -> str:
    """A requantizing type: round (truncate by default), then saturate (symmetrically if narrow)."""
    try:
        return t.hls(AP_ROUNDING[rounding], "AP_SAT")
    except KeyError:
        expected = ", ".join(AP_ROUNDING)
        raise EdgeannError(f"no ap_fixed rounding mode for rounding={rounding!r}; expected one of {expected}") from None


def _rounding(node: ir.Node) -> str:
    return getattr(node, "rounding", "floor")


def _requantized(node: ir.Relu | ir.Quantize, x: ir.TensorInfo) -> str:
    """The saturating result type of a node that requantizes its input ``x`` onto ``node.type``."""
    rounding = _rounding(node)
    dropped = x.type.frac - node.type.frac
    if rounding != "floor" and dropped > x.type.width:
        # ap_types reads the rounding bit at position ``dropped - 1`` of the source even when it lies beyond
        # the source's MSB, which fails an assertion in C simulation (and the result would be 0 anyway).
        raise EdgeannError(
            f"node {node.name!r}: rounding {rounding} from {x.type} to {node.type} drops {dropped} fractional bits "
            f"of a {x.type.width}-bit value, which ap_types cannot simulate (the output would always be 0)"
        )
    return sat(node.type, rounding)


def wrap(t: ir.FixedType) -> str:
    """A type that never needs to saturate (exact accumulators, weights): the cheap ``AP_WRAP``."""
    return t.hls("AP_TRN", "AP_WRAP")


@dataclass(frozen=True)
class HlsLayer:
    """One hls4ml layer as the lowering of a graph node produces it.

    ``precision`` maps hls4ml's type variables (``result``, ``accum``, ``weight``, ``bias``, ...) to the exact
    ``ap_fixed`` spelling; every one is checked after hls4ml's passes have run.
    """

    class_name: str
    name: str
    inputs: tuple[str, ...]
    precision: Mapping[str, str]
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def layer_dict(self) -> dict[str, Any]:
        d = {"class_name": self.class_name, "name": self.name, **self.attributes}
        if self.inputs:
            d["inputs"] = list(self.inputs)
        return d


@dataclass(frozen=True)
class LoweringContext:
    """What a lowering may read: the graph's tensor infos and the hls4ml name of every graph tensor."""

    infos: Mapping[str, ir.TensorInfo]
    names: Mapping[str, str]
    results: dict[str, str] = field(default_factory=dict)  # graph tensor -> result type of the layer that wrote it

    def inputs(self, node: ir.Node) -> tuple[str, ...]:
        return tuple(self.names[i] for i in node.inputs)

    def result(self, tensor: str) -> str:
        """The ``ap_fixed`` spelling a graph tensor has in the firmware (for layers that pass their input's type on)."""
        return self.results[tensor]


N = TypeVar("N", bound=ir.Node)
Lowering = Callable[[Any, LoweringContext], list[HlsLayer]]  # (node, context) -> its hls4ml layers
LOWERINGS = Registry("firmware lowering")  # graph node type (exact, not subclasses) -> its hls4ml layers
lowering = LOWERINGS.register


@lowering(ir.Input)
def _lower_input(node: ir.Input, ctx: LoweringContext) -> list[HlsLayer]:
    result = sat(node.type, _rounding(node))
    return [HlsLayer("InputLayer", ctx.names[node.name], (), {"result": result}, {"input_shape": list(node.shape)})]


@lowering(ir.Dense)
def _lower_dense(node: ir.Dense, ctx: LoweringContext) -> list[HlsLayer]:
    exact = wrap(ctx.infos[node.name].type)
    # hls4ml wants float data, (n_in, n_out) like a Keras kernel; q * 2**-frac is exact in float64 and
    # hls4ml prints it with exactly ``frac`` decimals, which is again exact.
    weight = node.weight.astype(np.int64).T.astype(np.float64) * node.weight_type.scale
    bias = node.bias.astype(np.int64).astype(np.float64) * node.bias_type.scale
    precision = {"weight": wrap(node.weight_type), "bias": wrap(node.bias_type), "accum": exact, "result": exact}
    attrs = {"n_in": node.n_in, "n_out": node.n_out, "weight_data": weight, "bias_data": bias}
    return [HlsLayer("Dense", ctx.names[node.name], ctx.inputs(node), precision, attrs)]


@lowering(ir.Relu)
def _lower_relu(node: ir.Relu, ctx: LoweringContext) -> list[HlsLayer]:
    result = _requantized(node, ctx.infos[node.inputs[0]])
    return [HlsLayer("Activation", ctx.names[node.name], ctx.inputs(node), {"result": result}, {"activation": "relu"})]


@lowering(ir.Quantize)
def _lower_quantize(node: ir.Quantize, ctx: LoweringContext) -> list[HlsLayer]:
    # Onto its own type a Quantize is the identity and is spelled AP_WRAP: exact, and (unlike the saturating
    # Input) not the input's spelling, so hls4ml's eliminate_linear_activation cannot drop it right after the
    # Input layer, which makes hls4ml write a top function with the same argument twice.
    identity = ctx.infos[node.inputs[0]].type == node.type
    result = wrap(node.type) if identity else _requantized(node, ctx.infos[node.inputs[0]])
    return [HlsLayer("Activation", ctx.names[node.name], ctx.inputs(node), {"result": result}, {"activation": "linear"})]


# -- CNN layers: hls4ml's channels-last Conv1D/Conv2D, pooling, BatchNormalization, Merge and Reshape layers


def _spatial(names: tuple[str, ...], values) -> dict[str, int]:
    """hls4ml's per-axis attribute names for a 1-D (width) or 2-D (height, width) layer."""
    return {name: int(v) for name, v in zip(names[-len(values):], values)}


@lowering(ir.Conv)
def _lower_conv(node: ir.Conv, ctx: LoweringContext) -> list[HlsLayer]:
    x, y = ctx.infos[node.inputs[0]], ctx.infos[node.name]
    exact = wrap(y.type)
    d = len(node.kernel)
    # (*kernel, c_in, c_out) is the Keras kernel layout hls4ml's channels-last convolutions read
    weight = node.weight.astype(np.int64).astype(np.float64) * node.weight_type.scale
    bias = node.bias.astype(np.int64).astype(np.float64) * node.bias_type.scale
    attrs = {
        "data_format": "channels_last",
        "n_chan": x.shape[-1],
        "n_filt": node.n_out,
        "dilation": 1,
        **_spatial(("in_height", "in_width"), x.shape[:-1]),
        **_spatial(("out_height", "out_width"), y.shape[:-1]),
        **_spatial(("filt_height", "filt_width"), node.kernel),
        **_spatial(("stride_height", "stride_width"), node.stride),
        **_spatial(("pad_top", "pad_left"), node.pads[::2]),
        **_spatial(("pad_bottom", "pad_right"), node.pads[1::2]),
        "weight_data": weight,
        "bias_data": bias,
    }
    precision = {"weight": wrap(node.weight_type), "bias": wrap(node.bias_type), "accum": exact, "result": exact}
    return [HlsLayer(f"Conv{d}D", ctx.names[node.name], ctx.inputs(node), precision, attrs)]


def _pool_attrs(node: ir.MaxPool | ir.AvgPool, x: ir.TensorInfo, y: ir.TensorInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {"data_format": "channels_last", "n_filt": x.shape[-1], "count_pad": False}
    if len(node.pool) == 1:
        attrs.update(n_in=x.shape[0], n_out=y.shape[0], pad_left=0, pad_right=0)
    else:
        attrs.update(_spatial(("in_height", "in_width"), x.shape[:-1]), **_spatial(("out_height", "out_width"), y.shape[:-1]),
                     pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)
    attrs.update(_spatial(("pool_height", "pool_width"), node.pool), **_spatial(("stride_height", "stride_width"), node.stride))
    return attrs


@lowering(ir.MaxPool)
def _lower_max_pool(node: ir.MaxPool, ctx: LoweringContext) -> list[HlsLayer]:
    x, y = ctx.infos[node.inputs[0]], ctx.infos[node.name]
    same = ctx.result(node.inputs[0])  # the largest value of each window, in the input's own type
    return [HlsLayer(f"MaxPooling{len(node.pool)}D", ctx.names[node.name], ctx.inputs(node),
                     {"accum": same, "result": same}, _pool_attrs(node, x, y))]


@lowering(ir.AvgPool)
def _lower_avg_pool(node: ir.AvgPool, ctx: LoweringContext) -> list[HlsLayer]:
    # hls4ml sums in accum_t and divides the sum by the window area in accum_t; with log2(area) more fraction bits
    # than the input (and room for the sum) that division is exact, and so is the mean in the result type.
    x, y = ctx.infos[node.inputs[0]], ctx.infos[node.name]
    k = node.area
    accum = ir.FixedType.covering(min(x.lo, 0) * k * k, max(x.hi, 0) * k * k, y.type.frac)
    return [HlsLayer(f"AveragePooling{len(node.pool)}D", ctx.names[node.name], ctx.inputs(node),
                     {"accum": wrap(accum), "result": wrap(y.type)}, _pool_attrs(node, x, y))]


@lowering(ir.Flatten)
def _lower_flatten(node: ir.Flatten, ctx: LoweringContext) -> list[HlsLayer]:
    # hls4ml makes a flatten in place (no copy, io_parallel and io_stream alike): the input's own type
    return [HlsLayer("Reshape", ctx.names[node.name], ctx.inputs(node), {"result": ctx.result(node.inputs[0])},
                     {"target_shape": [ctx.infos[node.name].shape[0]]})]


@lowering(ir.Add)
def _lower_add(node: ir.Add, ctx: LoweringContext) -> list[HlsLayer]:
    # ap_fixed's + is exact (its result type is wide enough); the exact sum type holds it
    return [HlsLayer("Merge", ctx.names[node.name], ctx.inputs(node), {"result": wrap(ctx.infos[node.name].type)},
                     {"op": "add"})]


@lowering(ir.BatchNorm)
def _lower_batchnorm(node: ir.BatchNorm, ctx: LoweringContext) -> list[HlsLayer]:
    x = ctx.infos[node.inputs[0]]
    attrs = {
        "n_in": int(np.prod(x.shape)),
        "n_filt": x.shape[-1],  # channels-last: the scale of value i is scale[i % n_filt]
        "scale_data": node.scale.astype(np.int64).astype(np.float64) * node.scale_type.scale,
        "bias_data": node.bias.astype(np.int64).astype(np.float64) * node.bias_type.scale,
    }
    precision = {"scale": wrap(node.scale_type), "bias": wrap(node.bias_type), "result": wrap(ctx.infos[node.name].type)}
    return [HlsLayer("BatchNormalization", ctx.names[node.name], ctx.inputs(node), precision, attrs)]


# --------------------------------------------------------------------------------------------
# Building the hls4ml model


def hls_layer_names(graph: ir.Graph, project_name: str) -> dict[str, str]:
    """Graph node name -> hls4ml layer name: the node name where it is a safe C identifier, else a sanitized one.

    Unsafe are: C++ keywords, ``input`` (reserved by hls4ml), the top function's name, names hls4ml gives its
    own globals (``w2``, ``b2``, ``layer2_out``, ``config2``, the recurrent layers' ``wr2``, ``tr2``,
    ``config2_ih``, ...) or that look like its type names (``*_t``), and names equal ignoring case (hls4ml looks
    its per-layer configuration up in lower case).
    """
    taken: set[str] = set()
    names: dict[str, str] = {}
    for node in graph.nodes:
        base = re.sub(r"\W", "_", node.name)
        hazard = (
            not is_safe_identifier(base)
            or base.lower() in ("input", project_name.lower())
            or re.fullmatch(r"(w|b|s|wr|br|t[a-z]|layer|config|\w+_config)\d+(_out|_ih|_hh)?", base.lower())
            or base.lower().endswith("_t")
        )
        name = base if not hazard else f"n_{base}".strip("_")
        k = 1
        while name.lower() in taken:
            k += 1
            name = f"{base}_{k}" if not hazard else f"n_{base}_{k}"
        taken.add(name.lower())
        names[node.name] = name
    return names


def lower_graph(graph: ir.Graph, project_name: str) -> tuple[list[HlsLayer], dict[str, str]]:
    """The hls4ml layers of ``graph`` in order, and the graph-node -> hls4ml-layer name map."""
    if len(graph.outputs) != 1:
        raise EdgeannError(f"firmware supports graphs with one output, {graph.name} has {len(graph.outputs)}")
    if graph.outputs[0] == graph.input.name:
        raise EdgeannError(f"graph {graph.name} has no layer between its input and its output")
    infos = graph.infos()
    names = hls_layer_names(graph, project_name)
    ctx = LoweringContext(infos, names)
    layers: list[HlsLayer] = []
    for node in graph.nodes:
        lower = LOWERINGS.get(type(node))
        if lower is None:
            raise EdgeannError(f"no firmware lowering for {type(node).__name__} node {node.name!r}")
        lowered = lower(node, ctx)
        if lowered and "result" in lowered[-1].precision:
            ctx.results[node.name] = lowered[-1].precision["result"]
        layers.extend(lowered)
    return layers, names


def hls_config(layers: list[HlsLayer], options: HlsOptions, outdir: Path, trace: bool = False) -> dict[str, Any]:
    """The hls4ml configuration dictionary: global options plus every layer's explicit precision."""
    layer_cfg: dict[str, Any] = {}
    for layer in layers:
        cfg: dict[str, Any] = {"Precision": dict(layer.precision)}
        if trace:
            cfg["Trace"] = True
        layer_cfg[layer.name] = cfg
    return {
        "TraceOutput": trace,
        "Backend": options.backend,
        "OutputDir": str(outdir),
        "ProjectName": options.project_name,
        "Part": options.part,
        "ClockPeriod": options.clock_period,
        "IOType": options.io_type,
        "HLSConfig": {
            "Model": {
                # Every layer has its own precision; this default is never used (checked after the passes).
                "Precision": "ap_fixed<16,6>",
                "ReuseFactor": options.reuse_factor,
                "Strategy": options.strategy,
                "BitExact": False,
            },
            "LayerName": layer_cfg,
        },
        # Weights as constants in the headers, as in synthesis: no run-time loading from .txt files
        # (which uses relative paths and a non-thread-safe first-call flag).
        "WriterConfig": {"Namespace": None, "WriteWeightsTxt": False, "WriteTar": False, "TBOutputStream": "both"},
    }


def build_model(graph: ir.Graph, options: HlsOptions, outdir: Path, *, trace: bool = False):
    """The hls4ml ``ModelGraph`` of ``graph`` (not written), with every type checked after hls4ml's passes.

    Returns ``(model, layers, names)``; hls4ml's console chatter is returned in ``model.edgeann_log``.
    """
    from hls4ml.model.graph import ModelGraph

    layers, names = lower_graph(graph, options.project_name)
    if options.io_type == "io_stream":
        _check_stream_limits(layers)
    config = hls_config(layers, options, outdir, trace)
    log = io.StringIO()
    layer_list = [layer.layer_dict() for layer in layers]
    with contextlib.redirect_stdout(log):
        model = ModelGraph.from_layer_list(config, layer_list, outputs=[names[graph.outputs[0]]])
    model.edgeann_log = log.getvalue()
    _check_model(model, layers, options)
    return model, layers, names


def _check_stream_limits(layers: list[HlsLayer]) -> None:
    """Refuse layers hls4ml 1.3's io_stream implementation computes wrongly or asserts against (in C simulation
    an assert would end the process)."""
    for layer in layers:
        a = layer.attributes
        if layer.class_name == "Conv2D" and a["filt_height"] == 1 and a["stride_height"] > 1:
            reason = "a kernel one row high with a row stride above 1 (its line buffer ignores that stride)"
        elif "Pooling" in layer.class_name and any(a[f"stride_{axis}"] != a[f"pool_{axis}"]
                                                   for axis in ("height", "width") if f"pool_{axis}" in a):
            reason = "pooling whose stride differs from its window"
        else:
            continue
        raise EdgeannError(f"layer {layer.name}: io_stream firmware does not support {reason}; use io_parallel")


def _check_model(model, layers: list[HlsLayer], options: HlsOptions) -> None:
    """Raise if hls4ml's passes changed a type, dropped a layer, changed a reuse factor or chose a special product."""
    from hls4ml.backends import get_backend

    backend = model.config.backend
    result = {layer.name: layer.precision.get("result") for layer in layers}
    for layer in layers:
        hl = model.graph.get(layer.name)
        if hl is None:
            # hls4ml's eliminate_linear_activation drops a linear Activation whose input already has its type.
            if layer.attributes.get("activation") == "linear" and result[layer.inputs[0]] == result[layer.name]:
                continue
            # ... and a flatten at the very end (io_parallel arrays are flat anyway; it has its input's type)
            if layer.class_name == "Reshape" and layer is layers[-1] and result[layer.inputs[0]] == result[layer.name]:
                continue
            raise RuntimeError(f"hls4ml removed layer {layer.name} ({layer.class_name}); the firmware would differ")
        for var, expected in layer.precision.items():
            want = backend.convert_precision_string(expected)
            if var == "result":
                got = hl.get_output_variable().type.precision
            else:
                got = hl.get_attr(f"{var}_t").precision
            if got != want:
                raise RuntimeError(f"hls4ml changed {layer.name}.{var} from {expected} to {got}")
        multiplied = {"Dense": "weight", "Conv1D": "weight", "Conv2D": "weight", "BatchNormalization": "scale"}
        if layer.class_name in multiplied:
            # hls4ml picks special products from the types, e.g. 'weight_ternary' for ap_int<2> weights,
            # which computes -2 * x as +x; our weights are ap_fixed, which always gets the plain multiply.
            w_type = hl.get_weights(multiplied[layer.class_name]).type.precision
            product = get_backend("vivado").product_type(hl.get_input_variable().type.precision, w_type)
            if product != "mult":
                raise RuntimeError(f"hls4ml chose the {product} product for {layer.name}; only the plain multiply is exact")
        if layer.class_name in ("Dense", "Conv1D", "Conv2D"):
            # With the Resource strategy hls4ml silently moves an invalid reuse factor to the closest valid one.
            n_in, n_out = backend.get_layer_mult_size(hl)
            if hl.get_attr("reuse_factor") != options.reuse_factor:
                valid = ",".join(map(str, backend.get_valid_reuse_factors(n_in, n_out)))
                raise EdgeannError(
                    f"reuse_factor {options.reuse_factor} is not valid for {layer.name} ({n_in}x{n_out}) "
                    f"with strategy {options.strategy}; valid: {valid}"
                )


# --------------------------------------------------------------------------------------------
# The written project


@dataclass(frozen=True)
class Port:
    """The firmware's input or output: graph tensor name, per-sample shape and type."""

    name: str
    shape: tuple[int, ...]
    type: ir.FixedType

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "type": dataclasses.asdict(self.type)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Port:
        return cls(d["name"], tuple(d["shape"]), ir.FixedType(**d["type"]))


@dataclass
class HlsProject:
    """A written hls4ml project: its directory, options, ports and the graph-node -> hls4ml-layer names."""

    path: Path
    options: HlsOptions
    input: Port
    output: Port
    layer_names: dict[str, str]
    layer_sizes: dict[str, int]  # hls4ml layer -> values in its output, per sample
    stamp: str
    trace: bool = False  # written with hls4ml's per-layer trace hooks (C simulation only)
    hls_model: Any = None  # the hls4ml ModelGraph when the project was written in this process

    def firmware_sha256(self) -> str:
        return firmware_sha256(self.path)

    def manifest(self) -> dict[str, Any]:
        return {
            "format": 1,
            "top_function": self.options.project_name,
            "options": self.options.to_dict(),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "layer_names": self.layer_names,
            "layer_sizes": self.layer_sizes,
            "stamp": self.stamp,
            "trace": self.trace,
        }

    @classmethod
    def load(cls, path: str | Path) -> HlsProject:
        """The project written by :func:`write_project` into ``path`` (without its hls4ml model)."""
        path = Path(path)
        try:
            m = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise EdgeannError(f"{path} is not an edgeann firmware project (no {MANIFEST})") from None
        return cls(
            path,
            HlsOptions(**m["options"]),
            Port.from_dict(m["input"]),
            Port.from_dict(m["output"]),
            dict(m["layer_names"]),
            dict(m["layer_sizes"]),
            m["stamp"],
            m["trace"],
        )


def as_project(project: HlsProject | str | Path) -> HlsProject:
    return project if isinstance(project, HlsProject) else HlsProject.load(project)


def firmware_files(project_dir: str | Path) -> list[Path]:
    """The files whose bytes define the firmware, in hashing order (sorted relative POSIX paths).

    Everything under ``firmware/`` (top function, ``defines.h``, ``parameters.h``, weight headers, the
    ``nnet_utils`` and ``ap_types`` headers hls4ml ships) except compiled libraries, plus ``project.tcl``
    (part, clock period, project name). Not counted: build and test scripts, the test bench, ``tb_data``,
    ``hls4ml_config.yml``, ``edgeann_project.json`` and the C-simulation cache ``csim/``.
    """
    root = Path(project_dir)
    files = [p for p in (root / "firmware").rglob("*") if p.is_file() and p.suffix not in (".so", ".o", ".dylib")]
    files.append(root / "project.tcl")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def firmware_sha256(project_dir: str | Path) -> str:
    """sha256 over :func:`firmware_files`: each file's relative path, length and bytes."""
    return files_sha256(project_dir, firmware_files(project_dir))


def files_sha256(root: str | Path, files: list[Path]) -> str:
    """sha256 over ``files`` in the given order: each file's path relative to ``root``, length and bytes."""
    root = Path(root)
    h = hashlib.sha256()
    for p in files:
        data = p.read_bytes()
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def _normalize(model, outdir: Path) -> str:
    """Replace what hls4ml writes differently each time (random stamp, absolute path) by deterministic values."""
    import yaml

    stamp = firmware_sha256(outdir)[:8]
    model.config.config["Stamp"] = stamp
    build_lib = outdir / "build_lib.sh"
    text = build_lib.read_text()
    text, n = re.subn(r"(?m)^LIB_STAMP=.*$", f"LIB_STAMP={stamp}", text)
    if n != 1:
        raise RuntimeError("unexpected build_lib.sh from hls4ml: no LIB_STAMP line")
    build_lib.write_text(text)
    config = dict(model.config.config)
    config["OutputDir"] = "."
    with open(outdir / "hls4ml_config.yml", "w") as fh:
        yaml.dump(config, fh)
    return stamp


def write_project(
    graph: ir.Graph, outdir: str | Path, options: HlsOptions | None = None, *, trace: bool = False
) -> HlsProject:
    """Write the hls4ml project of ``graph`` into ``outdir`` (which must not exist or be empty).

    ``trace`` adds hls4ml's per-layer output hooks (``#ifndef __SYNTHESIS__``, so C simulation only), which
    :meth:`edgeann.backends.hls.csim.CSim.trace` reads; it is for diagnosis, not for the firmware you ship.
    """
    options = options or HlsOptions()
    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise EdgeannError(f"{outdir} already exists and is not empty")
    outdir = outdir.resolve()
    model, layers, names = build_model(graph, options, outdir, trace=trace)
    outdir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        model.write()
    stamp = _normalize(model, outdir)
    infos = graph.infos()
    inp, out = graph.input.name, graph.outputs[0]
    project = HlsProject(
        outdir,
        options,
        Port(inp, tuple(infos[inp].shape), infos[inp].type),
        Port(out, tuple(infos[out].shape), infos[out].type),
        names,
        {lay.name: model.graph[lay.name].get_output_variable().size() for lay in layers if lay.name in model.graph},
        stamp,
        trace,
        model,
    )
    (outdir / MANIFEST).write_text(json.dumps(project.manifest(), indent=2, sort_keys=True) + "\n")
    return project
