"""The onnxruntime reference must equal the exact integer model on every output."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeann import ir
from edgeann.backends import onnx_qcdq


def random_mlp(draw, max_bits=8) -> ir.Graph:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in = draw(st.integers(1, 24))
    rounding = st.sampled_from(["floor", "floor", "half_even"])
    nodes = [ir.Input("x", [], shape=(n_in,), type=ir.FixedType(draw(st.integers(2, max_bits)), draw(st.integers(-2, 12)),
                                                                  draw(st.booleans())), rounding=draw(rounding))]
    width, prev = n_in, "x"
    for i in range(draw(st.integers(1, 3))):
        n_out, wb, bb = draw(st.integers(1, 24)), draw(st.integers(2, max_bits)), draw(st.integers(4, 20))
        w = rng.integers(-(2 ** (wb - 1)) + 1, 2 ** (wb - 1), (n_out, width))
        w[rng.random(w.shape) < draw(st.floats(0, 0.95))] = 0
        nodes.append(ir.Dense(f"fc{i}", [prev], weight=w, weight_type=ir.FixedType(wb, draw(st.integers(-2, 9)), True, True),
                              bias=rng.integers(-(2 ** (bb - 1)) + 1, 2 ** (bb - 1), n_out),
                              bias_type=ir.FixedType(bb, draw(st.integers(0, 22)))))
        ab = draw(st.integers(2, max_bits))
        if draw(st.booleans()):
            nodes.append(ir.Relu(f"act{i}", [f"fc{i}"], type=ir.FixedType(ab, draw(st.integers(-3, 12)), False),
                                 rounding=draw(rounding)))
        else:
            nodes.append(ir.Quantize(f"act{i}", [f"fc{i}"], type=ir.FixedType(ab, draw(st.integers(-3, 12)), True, draw(st.booleans())),
                                     rounding=draw(rounding)))
        width, prev = n_out, f"act{i}"
    return ir.Graph("g", nodes, [prev])


def probe_inputs(g: ir.Graph, rng, n=3000) -> np.ndarray:
    """Random values at several scales, exact grid points, half-LSB neighbours and the extremes."""
    t = g.input.type
    n_in = g.input.shape[0]
    parts = [rng.normal(size=(n, n_in)) * (2.0 ** (t.integer - 1)) * s for s in (0.1, 1.0, 4.0)]
    codes = rng.integers(t.int_min, t.int_max + 1, (n, n_in))
    parts += [codes * t.scale, (codes + 0.5) * t.scale, codes * t.scale - np.float32(1e-6) * t.scale]
    parts += [np.full((1, n_in), t.int_min * t.scale), np.full((1, n_in), t.int_max * t.scale), np.full((1, n_in), 1e30),
              np.full((1, n_in), -1e30), np.full((1, n_in), -1e-45), np.full((1, n_in), 1e-45), np.full((1, n_in), -0.0)]
    return np.concatenate(parts).astype(np.float32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mlps_are_exact(data):
    g = random_mlp(data.draw, max_bits=data.draw(st.sampled_from([8, 16])))
    x = probe_inputs(g, np.random.default_rng(0))
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(g), x), g.predict(x))


def test_wide_layers_switch_to_float64_and_stay_exact():
    rng = np.random.default_rng(1)
    n_in = 200
    g = ir.Graph("wide", [
        ir.Input("x", [], shape=(n_in,), type=ir.FixedType(16, 8)),
        ir.Dense("fc", ["x"], weight=rng.integers(-127, 128, (4, n_in)), weight_type=ir.FixedType(8, 7, True, True),
                 bias=rng.integers(-1000, 1000, 4), bias_type=ir.FixedType(16, 15)),
        ir.Quantize("out", ["fc"], type=ir.FixedType(16, 3)),
    ], ["out"])
    dense = g.nodes[1]
    assert not onnx_qcdq.dense_is_float32_exact(dense, g.infos()["x"])
    model = onnx_qcdq.to_onnx(g)
    assert "MatMul" in {n.op_type for n in model.graph.node}
    x = probe_inputs(g, rng)
    assert np.array_equal(onnx_qcdq.run(model, x), g.predict(x))


def test_weights_wider_than_8_bits_keep_their_codes():
    """Post-training precisions (ap_fixed<16,6>) give weight codes beyond int8: they were once wrapped to int8."""
    rng = np.random.default_rng(3)
    g = ir.Graph("w16", [
        ir.Input("x", [], shape=(6,), type=ir.FixedType(8, 4)),
        ir.Dense("fc", ["x"], weight=rng.integers(-300, 300, (3, 6)), weight_type=ir.FixedType(16, 10),
                 bias=rng.integers(-50, 50, 3), bias_type=ir.FixedType(16, 10)),
        ir.Quantize("out", ["fc"], type=ir.FixedType(16, 10)),
    ], ["out"])
    assert onnx_qcdq.dense_is_float32_exact(g.nodes[1], g.infos()["x"])  # the DequantizeLinear path
    x = probe_inputs(g, rng)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(g), x), g.predict(x))


def test_model_is_qcdq_with_dynamic_batch():
    rng = np.random.default_rng(2)
    g = ir.Graph("g", [
        ir.Input("x", [], shape=(3,), type=ir.FixedType(6, 3)),
        ir.Dense("fc", ["x"], weight=rng.integers(-7, 8, (2, 3)), weight_type=ir.FixedType(4, 2, True, True),
                 bias=np.array([1, -1]), bias_type=ir.FixedType(8, 5)),
        ir.Relu("r", ["fc"], type=ir.FixedType(4, 2, False)),
    ], ["r"])
    model = onnx_qcdq.to_onnx(g)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "Clip", "DequantizeLinear", "Floor", "Gemm", "Relu"} <= ops
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    for n in (1, 7, 1000):
        assert onnx_qcdq.run(model, np.zeros((n, 3), np.float32)).shape == (n, 2)


@pytest.mark.parametrize("rounding", ["floor", "half_even"])
@pytest.mark.parametrize("bits, signed, narrow", [(2, True, False), (3, False, False), (8, True, True), (8, False, False), (12, True, False), (16, False, False), (16, True, True), (22, True, False)])
def test_quantizer_matches_golden_on_every_grid_point(bits, signed, narrow, rounding):
    t = ir.FixedType(bits, 2, signed, narrow)
    g = ir.Graph("q", [ir.Input("x", [], shape=(1,), type=ir.FixedType(20, 5)),
                       ir.Quantize("q", ["x"], type=t, rounding=rounding)], ["q"])
    x = (np.arange(-(2**19), 2**19, 7) / 32.0).astype(np.float32).reshape(-1, 1)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(g), x), g.predict(x))
