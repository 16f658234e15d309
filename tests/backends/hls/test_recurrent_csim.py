"""edgeann's HLS GRU and LSTM (hls4ml extension API): random small networks compiled with g++ must equal the
golden model and onnxruntime bit for bit; options, types, determinism and tracing.

Property cases: input 1-6 features, hidden 1-12, steps 1-10, every type 2-8 bits on random grids
(edgeann.testing.random_gru), seeded. The ONNX check runs on many graphs (no compiler); the C simulation on a
few (about 10 s each).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from onnx import TensorProto

from edgeann import ir, testing
from edgeann.backends import onnx_qcdq
from edgeann.errors import EdgeannError
from edgeann.backends.hls import HlsOptions, compile_csim, first_divergence, write_project

# non-trivial state ranges, one and two layers, with and without a dense head
CSIM_CASES = [("gru", 1), ("gru", 3), ("gru", 7), ("gru", 16), ("lstm", 0), ("lstm", 9), ("lstm", 13)]


def _graph(cell: str, seed: int) -> tuple[ir.Graph, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return testing.random_gru(rng, name=f"{cell}_{seed}", layers=1 + (seed % 3 == 0), cell=cell), rng


def _assert_exact(csim, graph: ir.Graph, x: np.ndarray) -> None:
    want = graph.predict(x)
    got = csim.predict(x).reshape(want.shape)
    bad = np.flatnonzero((got != want).reshape(len(x), -1).any(axis=1))
    if bad.size:
        pytest.fail(f"{bad.size} of {len(x)} samples differ, first: x={x[bad[0]].tolist()} csim={got[bad[0]]} graph={want[bad[0]]}")
    assert np.array_equal(csim.predict_codes(x).reshape(want.shape), graph.execute(x)[graph.outputs[0]])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_random_networks_onnx_equals_golden(cell):
    """onnxruntime on model.onnx == the integer golden model on 30 random networks, through float32 and float64."""
    wide, varied = 0, 0
    for seed in range(30):
        graph, rng = _graph(cell, seed)
        x = testing.random_inputs(graph, rng, 300).astype(np.float32)  # onnxruntime reads float32
        model = onnx_qcdq.to_onnx(graph)
        want = graph.predict(x)
        assert np.array_equal(onnx_qcdq.run(model, x), want), f"seed {seed}"
        wide += any(n.op_type == "Cast" and n.attribute[0].i == TensorProto.DOUBLE and n.name.startswith(cell)
                    for n in model.graph.node)
        varied += len(np.unique(want)) > 4
    assert wide >= 3 and 30 - wide >= 3  # both exactness regimes exercised
    assert varied >= 3  # outputs that take several values (random heads often collapse them)


@pytest.mark.csim
@pytest.mark.parametrize("cell, seed", CSIM_CASES, ids=[f"{c}{s}" for c, s in CSIM_CASES])
def test_random_networks_bit_exact(tmp_path, cell, seed):
    graph, rng = _graph(cell, seed)
    csim = compile_csim(write_project(graph, tmp_path / "prj"))
    x = testing.random_inputs(graph, rng, 3000)
    _assert_exact(csim, graph, x)
    x32 = x.astype(np.float32)
    want = graph.predict(x32)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(graph), x32).reshape(want.shape), want)
    assert np.array_equal(csim.predict(x32).reshape(want.shape), want)


@pytest.fixture(scope="module")
def stacked_graph() -> ir.Graph:
    """A GRU passing its sequence to an LSTM, trained-like types, and a dense head."""
    rng = np.random.default_rng(11)
    x_type = ir.FixedType(8, 5)
    g1 = testing.random_recurrent_layer(rng, "gru1", "x", x_type, 4, 4, cell="gru", return_sequences=True)
    g2 = testing.random_recurrent_layer(rng, "lstm2", "gru1", g1.state_type, 4, 4, cell="lstm")
    wt = ir.FixedType(6, 5)
    fc = ir.Dense("fc", ["lstm2"], weight=rng.integers(-31, 32, (3, 4)), weight_type=wt,
                  bias=rng.integers(-500, 500, 3), bias_type=ir.FixedType(12, g2.state_type.frac + 5))
    return ir.Graph("stacked", [ir.Input("x", [], shape=(7, 4), type=x_type), g1, g2, fc,
                                ir.Quantize("out", ["fc"], type=ir.FixedType(8, 4))], ["out"])


@pytest.mark.csim
@pytest.mark.parametrize("options", [HlsOptions(io_type="io_stream", reuse_factor=2),
                                     HlsOptions(strategy="Resource", reuse_factor=4)], ids=["stream-rf2", "resource-rf4"])
def test_stacked_options_bit_exact(tmp_path, stacked_graph, options):
    csim = compile_csim(write_project(stacked_graph, tmp_path / "prj", options))
    _assert_exact(csim, stacked_graph, testing.random_inputs(stacked_graph, np.random.default_rng(0), 2000))


def test_invalid_resource_reuse_factor(tmp_path, stacked_graph):
    with pytest.raises(EdgeannError, match=r"reuse_factor 3 is not valid for the 4x12 ih matrix of gru1 .*valid: 1,2,4,8,"):
        write_project(stacked_graph, tmp_path / "prj", HlsOptions(strategy="Resource", reuse_factor=3))


def test_graph_file_round_trip(tmp_path, stacked_graph):
    stacked_graph.save(tmp_path / "g.npz")
    loaded = ir.Graph.load(tmp_path / "g.npz")
    assert loaded.infos() == stacked_graph.infos()
    x = testing.random_inputs(stacked_graph, np.random.default_rng(3), 200)
    assert np.array_equal(loaded.predict(x), stacked_graph.predict(x))
    assert loaded.node("gru1").return_sequences is True and isinstance(loaded.node("lstm2"), ir.LSTM)


def _typedefs(project) -> dict[str, str]:
    defines = (project.path / "firmware" / "defines.h").read_text()
    return {name: t for t, name in re.findall(r"typedef (.+) (\w+);", defines)}


def _table(project, name: str) -> np.ndarray:
    text = (project.path / "firmware" / "weights" / f"{name}.h").read_text()
    return np.array([float(v) for v in re.search(r"\{([^}]*)\}", text).group(1).split(",")])


def test_types_tables_and_determinism(tmp_path, stacked_graph):
    project = write_project(stacked_graph, tmp_path / "a")
    again = write_project(copy.deepcopy(stacked_graph), tmp_path / "b")
    assert project.firmware_sha256() == again.firmware_sha256()
    assert (project.path / "firmware" / "nnet_utils" / "nnet_edgeann_recurrent.h").is_file()
    typedefs, infos = _typedefs(project), stacked_graph.infos()

    def saturating(t: ir.FixedType) -> str:
        return f"ap_fixed<{t.width},{t.integer},AP_TRN,AP_SAT,0>"

    for name, requantized in (("gru1", ("gate_r", "gate_z", "gate_n", "state")),
                              ("lstm2", ("gate_i", "gate_f", "gate_g", "gate_o", "cell", "state"))):
        node = stacked_graph.node(name)
        a = node.arithmetic(infos[node.inputs[0]])
        for t in requantized:
            assert typedefs[f"{name}_{t}_t"] == saturating(getattr(node, f"{t}_type")), (name, t)
        assert typedefs[f"{name}_accum_t"] == f"ap_fixed<{a.gi.type.width},{a.gi.type.integer}>"
        assert typedefs[f"{name}_recurrent_accum_t"] == f"ap_fixed<{a.gh.type.width},{a.gh.type.integer}>"
    gru, lstm = stacked_graph.node("gru1"), stacked_graph.node("lstm2")
    assert np.array_equal(_table(project, "tn2") * 2.0**gru.tanh_type.frac, gru.tanh_table)
    assert np.array_equal(_table(project, "tc3") * 2.0**lstm.tanh_type.frac, lstm.tanh_c_table)
    assert np.array_equal(_table(project, "tf3") * 2.0**lstm.sigmoid_type.frac, lstm.sigmoid_f_table)


@pytest.mark.csim
def test_first_divergence_traces_recurrent_layers(stacked_graph, tmp_path):
    project = write_project(stacked_graph, tmp_path / "prj")
    x = testing.random_inputs(stacked_graph, np.random.default_rng(1), 100)
    assert first_divergence(stacked_graph, project, x) is None
