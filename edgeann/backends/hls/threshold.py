"""The threshold layer in firmware: :class:`edgeann.ir.Threshold` (``templates/nnet_edgeann_threshold.h``),
registered with hls4ml through its extension API like the recurrent layers (:mod:`edgeann.backends.hls.recurrent`).

hls4ml has no layer that compares and counts; its own requantization of a foreign model's float chain (a
``BatchNormalization`` with float scale and bias, an ``ApplyAlpha``) computes in fixed point and rounds, so it is
not exact. Here the thresholds come from the graph, which found them with the original's arithmetic, and the layer
only compares, counts and adds. Supported: ``io_parallel``.
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


def register() -> None:
    """Make the threshold layer known to hls4ml (idempotent): layer class, templates and header for each backend."""
    register_layer(EdgeannThreshold.__name__, EdgeannThreshold)
    for name in BACKENDS:
        backend = get_backend(name)
        backend.register_template(ThresholdConfigTemplate)
        backend.register_template(ThresholdFunctionTemplate)
        backend.register_source(HEADER)


register()


@lowering(ir.Threshold)
def _lower_threshold(node: ir.Threshold, ctx: LoweringContext) -> list[HlsLayer]:
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
