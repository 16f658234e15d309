"""The threshold layer in firmware: :class:`edgeann.ir.Threshold` (``templates/nnet_edgeann_threshold.h``),
registered with hls4ml through its extension API like the recurrent layers (:mod:`edgeann.backends.hls.recurrent`).

hls4ml has no layer that compares and counts; its own requantization of a foreign model's float chain (a
``BatchNormalization`` with float scale and bias, an ``ApplyAlpha``) computes in fixed point and rounds, so it is
not exact. Here the thresholds come from the graph, which found them with the original's arithmetic, and the layer
only compares, counts and adds. Supported: ``io_parallel`` (arrays) and ``io_stream`` (streams of packs, one
pixel's channels per pack after a convolution): the header overloads each function for both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hls4ml.backends import get_backend
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model.attributes import Attribute, TypeAttribute, WeightAttribute
from hls4ml.model.layers import Layer, register_layer

from edgeann import ir
from edgeann.backends.hls.hls import HlsLayer, LoweringContext, lowering, wrap

HEADER = Path(__file__).parent / "templates" / "nnet_edgeann_threshold.h"
BACKENDS = ("Vivado", "Vitis")
WEIGHTS = {"thresholds": "t{index}", "start": "s{index}", "step": "d{index}"}  # in the C++ function's order


class EdgeannThreshold(Layer):
    """hls4ml's view of :class:`edgeann.ir.Threshold`: ``n_in`` values, ``n_chan`` channels (the last axis),
    ``n_steps`` thresholds per channel; the thresholds, start and step codes are weight variables."""

    _expected_attributes = [
        Attribute("n_in"),
        Attribute("n_chan"),
        Attribute("n_steps"),
        TypeAttribute("count"),
        *(WeightAttribute(name) for name in WEIGHTS),
        *(TypeAttribute(name) for name in WEIGHTS),
    ]

    def initialize(self):
        self.add_output_variable(list(self.get_input_variable().shape))
        for name, var_name in WEIGHTS.items():
            self.add_weights_variable(name=name, var_name=var_name)
        self._set_type_t("count")


_CONFIG = """struct config{index} : nnet::edgeann_threshold_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const unsigned n_steps = {n_steps};
    typedef {thresholds_t} threshold_t;
    typedef {start_t} start_t;
    typedef {step_t} step_t;
    typedef {count_t} count_t;
}};
"""


class ThresholdConfigTemplate(LayerConfigTemplate):
    def __init__(self):
        super().__init__(EdgeannThreshold)

    def format(self, node):
        types = {f"{name}_t": node.get_weights(name).type.name for name in WEIGHTS}
        return _CONFIG.format(index=node.index, n_in=node.get_attr("n_in"), n_chan=node.get_attr("n_chan"),
                              n_steps=node.get_attr("n_steps"), count_t=node.get_attr("count_t").name, **types)


class ThresholdFunctionTemplate(FunctionCallTemplate):
    def __init__(self):
        super().__init__(EdgeannThreshold, include_header=[f"nnet_utils/{HEADER.name}"])

    def format(self, node):
        p = self._default_function_params(node)
        weights = ", ".join(node.get_weights(name).name for name in WEIGHTS)
        return f"nnet::edgeann_threshold<{p['input_t']}, {p['output_t']}, {p['config']}>({p['input']}, {p['output']}, {weights});"


@lowering(ir.Threshold)
def _lower_threshold(node: ir.Threshold, ctx: LoweringContext) -> list[HlsLayer]:
    if node.affine:
        return _lower_affine(node, ctx)
    x, y = ctx.infos[node.inputs[0]], ctx.infos[node.name]
    out = y.type
    k = node.thresholds.shape[1]
    start = np.asarray(node.start, np.int64)
    # start and step as values on the result's grid: exact in float64 and printed exactly by hls4ml
    start_type = ir.FixedType.covering(int(start.min(initial=0)), int(start.max(initial=0)), out.frac)
    step_type = ir.FixedType(2, out.frac)
    precision = {
        "thresholds": wrap(node.threshold_type(x)),
        "start": wrap(start_type),
        "step": wrap(step_type),
        "count": f"ap_uint<{max(k.bit_length(), 1)}>",
        "result": wrap(out),
    }
    attrs = {
        "n_in": int(np.prod(x.shape)),
        "n_chan": node.channels,
        "n_steps": k,
        "thresholds_data": np.asarray(node.thresholds, np.int64).ravel().astype(np.float64) * x.type.scale,
        "start_data": start.astype(np.float64) * out.scale,
        "step_data": np.asarray(node.step, np.int64).astype(np.float64) * out.scale,
    }
    return [HlsLayer(EdgeannThreshold.__name__, ctx.names[node.name], ctx.inputs(node), precision, attrs)]


AFFINE_WEIGHTS = {"multiplier": "m{index}", "offset": "o{index}", "low": "lo{index}", "high": "hi{index}",
                  "step": "d{index}", "exact": "te{index}", "line": "tl{index}", "unit": "u{index}"}


class EdgeannAffineRequant(Layer):
    """hls4ml's view of :class:`edgeann.ir.Threshold` with an affine form: a multiply, an add, a floor and a clip
    per value, and ``n_corrections`` pairs of comparisons per channel."""

    _expected_attributes = [
        Attribute("n_in"),
        Attribute("n_chan"),
        Attribute("n_corrections"),
        TypeAttribute("floor"),
        *(WeightAttribute(name) for name in AFFINE_WEIGHTS),
        *(TypeAttribute(name) for name in AFFINE_WEIGHTS),
    ]

    def initialize(self):
        self.add_output_variable(list(self.get_input_variable().shape))
        for name, var_name in AFFINE_WEIGHTS.items():
            self.add_weights_variable(name=name, var_name=var_name)
        self._set_type_t("floor")


_AFFINE_CONFIG = """struct config{index} : nnet::edgeann_affine_requant_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const unsigned n_corrections = {n_corrections};
    typedef {multiplier_t} multiplier_t;
    typedef {offset_t} offset_t;
    typedef {low_t} code_t;
    typedef {step_t} step_t;
    typedef {exact_t} threshold_t;
    typedef {unit_t} unit_t;
    typedef {floor_t} floor_t;
}};
"""


class AffineConfigTemplate(LayerConfigTemplate):
    def __init__(self):
        super().__init__(EdgeannAffineRequant)

    def format(self, node):
        types = {f"{name}_t": node.get_weights(name).type.name for name in AFFINE_WEIGHTS}
        return _AFFINE_CONFIG.format(index=node.index, n_in=node.get_attr("n_in"), n_chan=node.get_attr("n_chan"),
                                     n_corrections=node.get_attr("n_corrections"),
                                     floor_t=node.get_attr("floor_t").name, **types)


class AffineFunctionTemplate(FunctionCallTemplate):
    def __init__(self):
        super().__init__(EdgeannAffineRequant, include_header=[f"nnet_utils/{HEADER.name}"])

    def format(self, node):
        p = self._default_function_params(node)
        weights = ", ".join(node.get_weights(name).name for name in AFFINE_WEIGHTS)
        return (f"nnet::edgeann_affine_requant<{p['input_t']}, {p['output_t']}, {p['config']}>({p['input']}, "
                f"{p['output']}, {weights});")


def register() -> None:
    """Make both forms of the threshold layer known to hls4ml (idempotent): layer classes, templates and header."""
    for layer in (EdgeannThreshold, EdgeannAffineRequant):
        register_layer(layer.__name__, layer)
    for name in BACKENDS:
        backend = get_backend(name)
        for template in (ThresholdConfigTemplate, ThresholdFunctionTemplate, AffineConfigTemplate,
                         AffineFunctionTemplate):
            backend.register_template(template)
        backend.register_source(HEADER)


register()


def _lower_affine(node: ir.Threshold, ctx: LoweringContext) -> list[HlsLayer]:
    x, y = ctx.infos[node.inputs[0]], ctx.infos[node.name]
    low, high = node.ends(x)
    m = np.asarray(node.multiplier, np.int64)
    b = np.asarray(node.offset, np.int64)
    s, f_in = int(node.shift), x.type.frac
    n_corr = int(node.exact.shape[1])
    # floor((M x + B) / 2^s) over the input's range, per channel: the floor type holds it (and the clip bounds)
    ends = [(int(mm) * v + int(bb)) >> s for mm, bb in zip(m, b) for v in (x.lo, x.hi)]
    floor_type = ir.FixedType.covering(min(*ends, int(low.min())), max(*ends, int(high.max())), 0)
    code_type = ir.FixedType.covering(int(low.min()) - n_corr, int(high.max()) + n_corr, 0)
    corrections = np.concatenate([node.exact.ravel(), node.line.ravel()]) if n_corr else np.zeros(1, np.int64)
    threshold_type = ir.FixedType.covering(int(min(corrections.min(), x.lo)), int(max(corrections.max(), x.hi)), f_in)
    multiplier_type = ir.FixedType.covering(int(m.min(initial=0)), int(m.max(initial=0)), s - f_in)
    offset_type = ir.FixedType.covering(int(b.min(initial=0)), int(b.max(initial=0)), s)
    unit_type = ir.FixedType(2, y.type.frac)

    def values(codes, t: ir.FixedType) -> np.ndarray:  # exact in float64, printed exactly by hls4ml
        return np.asarray(codes, np.int64).astype(np.float64) * t.scale

    pad = np.zeros(1, np.int64)  # C++ arrays of at least one element
    precision = {
        "multiplier": wrap(multiplier_type), "offset": wrap(offset_type), "low": wrap(code_type),
        "high": wrap(code_type), "step": wrap(ir.FixedType(2, 0)), "exact": wrap(threshold_type),
        "line": wrap(threshold_type), "unit": wrap(unit_type), "floor": floor_type.hls("AP_TRN", "AP_WRAP"),
        "result": wrap(y.type),
    }
    attrs = {
        "n_in": int(np.prod(x.shape)), "n_chan": node.channels, "n_corrections": n_corr,
        "multiplier_data": values(m, multiplier_type), "offset_data": values(b, offset_type),
        "low_data": low.astype(np.float64), "high_data": high.astype(np.float64),
        "step_data": np.asarray(node.step, np.float64),
        "exact_data": values(node.exact.ravel() if n_corr else pad, threshold_type),
        "line_data": values(node.line.ravel() if n_corr else pad, threshold_type),
        "unit_data": np.array([1.0]) * unit_type.scale,
    }
    return [HlsLayer(EdgeannAffineRequant.__name__, ctx.names[node.name], ctx.inputs(node), precision, attrs)]
