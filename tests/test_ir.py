import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeann import ir


def test_fixed_type_ranges_and_spelling():
    t = ir.FixedType(8, 4)
    assert (t.int_min, t.int_max, t.integer, t.scale) == (-128, 127, 4, 1 / 16)
    assert t.hls() == "ap_fixed<8,4>"
    assert t.hls("AP_TRN", "AP_SAT") == "ap_fixed<8,4,AP_TRN,AP_SAT>"
    u = ir.FixedType(6, 3, signed=False)
    assert (u.int_min, u.int_max) == (0, 63) and u.hls() == "ap_ufixed<6,3>"
    n = ir.FixedType(4, 0, narrow=True)
    assert (n.int_min, n.int_max) == (-7, 7) and "AP_SAT_SYM" in n.hls("AP_TRN", "AP_SAT")
    with pytest.raises(ValueError):
        ir.FixedType(1, 0, signed=True)


def test_quantizers_truncate_then_saturate():
    t = ir.FixedType(4, 1)  # values -4.0 .. 3.5 in steps of 0.5
    x = np.array([0.74, 0.5, -0.01, -0.5, -0.51, 3.9, 100.0, -4.0, -100.0])
    assert list(ir.quantize_float(x, t) * t.scale) == [0.5, 0.5, -0.5, -0.5, -1.0, 3.5, 3.5, -4.0, -4.0]
    q = np.array([7, 6, -1, -7, 1000, -1000])  # grid 2**-3 -> grid 2**-1: shift right by 2 (floor)
    assert list(ir.requantize(q, 3, t)) == [1, 1, -1, -2, 7, -8]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_dense_range_bounds_hold(data):
    """The accumulator type derived from the weights can never overflow, whatever the input."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    xt = ir.FixedType(data.draw(st.integers(2, 12)), data.draw(st.integers(-4, 12)), data.draw(st.booleans()))
    wb = data.draw(st.integers(2, 8))
    w = rng.integers(-(2 ** (wb - 1)) + 1, 2 ** (wb - 1), (n_out, n_in))
    dense = ir.Dense("d", ["x"], weight=w, weight_type=ir.FixedType(wb, data.draw(st.integers(-3, 10))),
                     bias=rng.integers(-500, 500, n_out), bias_type=ir.FixedType(12, data.draw(st.integers(0, 20))))
    g = ir.Graph("g", [ir.Input("x", [], shape=(n_in,), type=xt), dense], ["d"])
    info = g.infos()["d"]
    extremes = np.array([[xt.int_min, xt.int_max][i] for i in rng.integers(0, 2, n_in * 64)]).reshape(64, n_in)
    acc = g.execute(extremes * xt.scale, keep=True)["d"]
    assert info.lo <= acc.min() and acc.max() <= info.hi
    assert info.type.int_min <= info.lo and info.hi <= info.type.int_max


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    g = ir.Graph("g", [
        ir.Input("x", [], shape=(5,), type=ir.FixedType(8, 4)),
        ir.Dense("fc", ["x"], weight=rng.integers(-7, 8, (3, 5)), weight_type=ir.FixedType(4, 3, True, True),
                 bias=rng.integers(-9, 9, 3), bias_type=ir.FixedType(16, 7)),
        ir.Relu("r", ["fc"], type=ir.FixedType(6, 3, False)),
        ir.Quantize("out", ["r"], type=ir.FixedType(5, 2)),
    ], ["out"])
    g.save(tmp_path / "g.npz")
    h = ir.Graph.load(tmp_path / "g.npz")
    x = rng.normal(size=(100, 5)) * 4
    assert np.array_equal(g.predict(x), h.predict(x))
    assert g.infos() == h.infos()


def test_graph_rejects_dangling_inputs():
    g = ir.Graph("g", [ir.Input("x", [], shape=(2,), type=ir.FixedType(8, 4)),
                       ir.Relu("r", ["nope"], type=ir.FixedType(6, 3, False))], ["r"])
    with pytest.raises(ValueError, match="reads tensor 'nope'"):
        g.infos()
