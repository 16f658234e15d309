"""Recurrent layers in firmware: edgeann's own GRU and LSTM (``templates/nnet_edgeann_recurrent.h``),
registered with hls4ml through its extension API.

Why not hls4ml's GRU and LSTM: its frontends take only float, single-layer ones; its sigmoid and tanh are
tables of float values filled at run time (neither matches a trained fixed-point model), its input glue
transposed the sequence, and its types are rules of thumb. Here a layer is the fixed-point graph's
:class:`edgeann.ir.GRU` or :class:`edgeann.ir.LSTM`, every type explicit:

* :class:`EdgeannGRU`, :class:`EdgeannLSTM`: hls4ml ``Layer`` classes (``hls4ml.model.layers.register_layer``)
  holding the two weight matrices, their biases and the activation tables as weight variables (written
  verbatim into ``firmware/weights/*.h``), and the accumulator, gate, cell and state types as hls4ml types;
* a configuration template and a function-call template, registered with the Vivado and Vitis backends
  (``backend.register_template``), and the C++ header (``backend.register_source``), which hls4ml then
  copies into every project's ``firmware/nnet_utils/``;
* :func:`_lower_recurrent`, the firmware lowering of both node types (:func:`edgeann.backends.hls.hls.lowering`).

Supported: ``io_parallel`` and ``io_stream``; strategies ``Latency`` (any reuse factor) and ``Resource``
(the reuse factors hls4ml's dense kernels accept for both matrices; others stop with the valid ones). The
matrix products are hls4ml's ``nnet::dense`` with exact accumulators; the step loop is sequential.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hls4ml.backends import get_backend
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model.attributes import Attribute, TypeAttribute, WeightAttribute
from hls4ml.model.layers import Layer, register_layer

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.backends.hls.hls import HlsLayer, LoweringContext, lowering, sat, wrap

HEADER = Path(__file__).parent / "templates" / "nnet_edgeann_recurrent.h"
BACKENDS = ("Vivado", "Vitis")

# weight variable -> its C++ name ({index} is the layer's); edgeann.backends.hls.hls keeps graph node names off these
MATRICES = {"weight": "w{index}", "bias": "b{index}", "recurrent_weight": "wr{index}", "recurrent_bias": "br{index}"}


def _attributes(weights: dict[str, str], types: tuple[str, ...]) -> list:
    return [*(WeightAttribute(name) for name in weights), *(TypeAttribute(name) for name in (*weights, *types))]


class _EdgeannRecurrent(Layer):
    """hls4ml's view of :class:`edgeann.ir.Recurrent`: input (n_sequence, n_in), output (n_state,) or
    (n_sequence, n_state); the matrices, biases and tables are weight variables."""

    tables: dict[str, str] = {}  # noqa: RUF012  table weight variable -> C++ name, in the C++ function's order
    requantized: tuple[str, ...] = ()  # gate, cell and state types (each floors and saturates)
    function = ""  # the C++ function in HEADER

    _expected_attributes = [
        Attribute("n_in"),
        Attribute("n_state"),
        Attribute("n_sequence"),
        Attribute("return_sequences", value_type=bool),
        TypeAttribute("accum"),
        TypeAttribute("recurrent_accum"),
        *_attributes(MATRICES, ()),
    ]

    def initialize(self):
        config = self.model.config
        self.set_attr("strategy", config.get_strategy(self).lower())
        self.set_attr("reuse_factor", config.get_reuse_factor(self))
        if self.get_attr("strategy") == "resource":  # hls4ml's resource kernels read the matrices transposed
            for name in ("weight", "recurrent_weight"):
                self.set_attr(f"{name}_data", np.ascontiguousarray(self.get_attr(f"{name}_data").T))
        steps, n_state = self.get_attr("n_sequence"), self.get_attr("n_state")
        self.add_output_variable([steps, n_state] if self.get_attr("return_sequences") else [n_state])
        for name, var_name in {**MATRICES, **self.tables}.items():
            self.add_weights_variable(name=name, var_name=var_name)
        for name in ("recurrent_accum", *self.requantized):
            self._set_type_t(name)

    @classmethod
    def weight_names(cls) -> list[str]:
        """The weight variables in the order the C++ function takes them."""
        return [*MATRICES, *cls.tables]


class EdgeannGRU(_EdgeannRecurrent):
    tables = {"sigmoid_r_table": "tr{index}", "sigmoid_z_table": "tz{index}", "tanh_table": "tn{index}"}  # noqa: RUF012
    requantized = ("gate_r", "gate_z", "gate_n", "state")
    function = "edgeann_gru"
    _expected_attributes = _attributes(tables, requantized)


class EdgeannLSTM(_EdgeannRecurrent):
    tables = {"sigmoid_i_table": "ti{index}", "sigmoid_f_table": "tf{index}", "tanh_g_table": "tg{index}",  # noqa: RUF012
              "sigmoid_o_table": "to{index}", "tanh_c_table": "tc{index}"}
    requantized = ("gate_i", "gate_f", "gate_g", "gate_o", "cell", "state")
    function = "edgeann_lstm"
    _expected_attributes = _attributes(tables, requantized)


LAYERS = {ir.GRU: EdgeannGRU, ir.LSTM: EdgeannLSTM}

_DENSE = """struct config{index}_{which} : nnet::dense_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned strategy = nnet::{strategy};
    static const unsigned reuse_factor = {reuse};
    static const unsigned n_zeros = {nzeros};
    static const unsigned n_nonzeros = {nonzeros};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {accum_t} accum_t;
    typedef {bias_t} bias_t;
    typedef {weight_t} weight_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = {kernel}<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""

_RECURRENT = """struct config{index} : nnet::edgeann_recurrent_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_state = {n_state};
    static const unsigned n_sequence = {n_sequence};
    static const unsigned n_out = {n_out};
    static const bool return_sequences = {return_sequences};
    static const unsigned reuse_factor = {reuse};
    typedef {weight_t.name} weight_t;
    typedef {bias_t.name} bias_t;
    typedef {recurrent_weight_t.name} recurrent_weight_t;
    typedef {recurrent_bias_t.name} recurrent_bias_t;
    typedef {accum_t.name} accum_t;
    typedef {recurrent_accum_t.name} recurrent_accum_t;
{types}
    typedef config{index}_ih mult_config_ih;
    typedef config{index}_hh mult_config_hh;
}};
"""


class RecurrentConfigTemplate(LayerConfigTemplate):
    def __init__(self):
        super().__init__((EdgeannGRU, EdgeannLSTM))

    def _dense(self, node, which: str, data_type, weight: str, bias: str, accum, n_in: int) -> str:
        w = node.get_weights(weight)
        product = get_backend("vivado").product_type(data_type.precision, w.type.precision)
        if product != "mult":  # e.g. 'weight_ternary' for ap_int<2> weights computes -2 * x as +x
            raise EdgeannError(f"hls4ml would use the {product} product in {node.name}; only the plain multiply is exact")
        n_out = w.data_length // n_in
        strategy, reuse = node.get_attr("strategy"), node.get_attr("reuse_factor")
        if strategy == "resource":
            valid = node.model.config.backend.get_valid_reuse_factors(n_in, n_out)
            if reuse not in valid:
                raise EdgeannError(f"reuse_factor {reuse} is not valid for the {n_in}x{n_out} {which} matrix of {node.name} "
                                   f"with strategy Resource; valid: {','.join(map(str, valid))}")
            kernel = "nnet::DenseResource_rf_leq_nin" if reuse <= n_in else "nnet::DenseResource_rf_gt_nin_rem0"
        else:
            kernel = "nnet::DenseLatency"
        return _DENSE.format(index=node.index, which=which, n_in=n_in, n_out=n_out, strategy=strategy, reuse=reuse,
                             nzeros=w.nzeros, nonzeros=w.nonzeros, accum_t=accum.name,
                             bias_t=node.get_weights(bias).type.name, weight_t=w.type.name, kernel=kernel)

    def format(self, node):
        params = self._default_config_params(node)
        params["n_out"] = node.get_output_variable().size()
        types = [f"    typedef {node.get_attr(f'{t}_t').name} {t}_t;" for t in node.requantized]
        for table in node.tables:  # sigmoid_r_table -> sigmoid_r_t, sigmoid_r_size
            stem = table.removesuffix("_table")
            types.append(f"    typedef {node.get_attr(f'{table}_t').name} {stem}_t;")
            types.append(f"    static const unsigned {stem}_size = {node.get_weights(table).data_length};")
        ih = self._dense(node, "ih", node.get_input_variable().type, "weight", "bias", node.get_attr("accum_t"),
                         node.get_attr("n_in"))
        hh = self._dense(node, "hh", node.get_attr("state_t"), "recurrent_weight", "recurrent_bias",
                         node.get_attr("recurrent_accum_t"), node.get_attr("n_state"))
        return ih + hh + _RECURRENT.format(**params, types="\n".join(types))


class RecurrentFunctionTemplate(FunctionCallTemplate):
    def __init__(self):
        super().__init__((EdgeannGRU, EdgeannLSTM), include_header=[f"nnet_utils/{HEADER.name}"])

    def format(self, node):
        p = self._default_function_params(node)
        weights = ", ".join(node.get_weights(name).name for name in node.weight_names())
        return f"nnet::{node.function}<{p['input_t']}, {p['output_t']}, {p['config']}>({p['input']}, {p['output']}, {weights});"


def register() -> None:
    """Make the recurrent layers known to hls4ml (idempotent): layer classes, templates and header for each backend."""
    for layer in LAYERS.values():
        register_layer(layer.__name__, layer)
    for name in BACKENDS:
        backend = get_backend(name)
        backend.register_template(RecurrentConfigTemplate)
        backend.register_template(RecurrentFunctionTemplate)
        backend.register_source(HEADER)


register()


@lowering(ir.GRU)
@lowering(ir.LSTM)
def _lower_recurrent(node: ir.Recurrent, ctx: LoweringContext) -> list[HlsLayer]:
    layer = LAYERS[type(node)]
    a = node.arithmetic(ctx.infos[node.inputs[0]])

    def values(codes: np.ndarray, t: ir.FixedType) -> np.ndarray:  # exact in float64, printed exactly by hls4ml
        return codes.astype(np.int64).astype(np.float64) * t.scale

    precision = {
        "weight": wrap(node.w_ih_type),
        "bias": wrap(node.b_ih_type),
        "recurrent_weight": wrap(node.w_hh_type),
        "recurrent_bias": wrap(node.b_hh_type),
        "accum": wrap(a.gi.type),
        "recurrent_accum": wrap(a.gh.type),
        **{t: sat(getattr(node, f"{t}_type")) for t in layer.requantized},  # gates, cell, state: floor, then saturate
        "result": sat(node.state_type),
    }
    attrs = {
        "n_in": node.n_in,
        "n_state": node.hidden,
        "n_sequence": ctx.infos[node.inputs[0]].shape[0],
        "return_sequences": bool(node.return_sequences),
        # (n_in, n_out) like a Keras kernel, as hls4ml's dense kernels read it
        "weight_data": values(node.w_ih.T, node.w_ih_type),
        "bias_data": values(node.b_ih, node.b_ih_type),
        "recurrent_weight_data": values(node.w_hh.T, node.w_hh_type),
        "recurrent_bias_data": values(node.b_hh, node.b_hh_type),
    }
    for table, (entries, _, out_type) in zip(layer.tables, node.tables().values()):  # the same order
        precision[table] = wrap(out_type)
        attrs[f"{table}_data"] = values(entries, out_type)
    return [HlsLayer(layer.__name__, ctx.names[node.name], ctx.inputs(node), precision, attrs)]
