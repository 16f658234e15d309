"""Graph -> hls4ml project -> g++ C simulation, compared bit for bit with the graph's integer golden model.

Every ``csim`` test compiles real firmware with g++ (about 8 s a project on 2 cores); compiled projects
are shared through module-scoped fixtures.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import time

import numpy as np
import pytest

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.backends.hls import (
    CSimCompileError,
    HlsOptions,
    HlsProject,
    compile_csim,
    firmware_files,
    firmware_sha256,
    first_divergence,
    write_project,
)
from edgeann.backends.hls.hls import build_model


def assert_bit_exact(csim, graph: ir.Graph, x: np.ndarray) -> None:
    y, want = csim.predict(x), graph.predict(x)
    assert y.dtype == np.float64
    bad = np.flatnonzero((y != want).reshape(len(x), -1).any(axis=1))
    if bad.size:
        i = bad[0]
        pytest.fail(f"{bad.size} of {len(x)} samples differ, first: x={x[i]} csim={y[i]} graph={want[i]}")
    assert np.array_equal(csim.predict_codes(x), graph.execute(x)[graph.outputs[0]])


@pytest.fixture(scope="module")
def jet_project(tmp_path_factory, jet_graph) -> HlsProject:
    return write_project(jet_graph, tmp_path_factory.mktemp("jet") / "prj")


@pytest.fixture(scope="module")
def jet_csim(jet_project):
    return compile_csim(jet_project)


# --------------------------------------------------------------------------------------------
# Options and project writing (no compiler)


@pytest.mark.parametrize(
    "kw",
    [
        {"backend": "Quartus"},
        {"io_type": "io_serial"},
        {"strategy": "Unrolled"},
        {"reuse_factor": 0},
        {"reuse_factor": 1.5},
        {"reuse_factor": True},
        {"clock_period": 0},
        {"clock_period": "5"},
        {"part": ""},
        {"part": "xc; rm -rf /"},
        {"project_name": "my-project"},
        {"project_name": "int"},
    ],
)
def test_options_reject_bad_values(kw):
    with pytest.raises(EdgeannError) as e:
        HlsOptions(**kw)
    assert "\n" not in str(e.value)


def test_options_canonical_spelling():
    o = HlsOptions(backend="vivado", io_type="IO_STREAM", strategy="resource", reuse_factor=np.int64(2), clock_period=4)
    assert (o.backend, o.io_type, o.strategy, o.reuse_factor, o.clock_period) == ("Vivado", "io_stream", "Resource", 2, 4.0)


def test_refuses_non_empty_outdir(tmp_path, jet_graph):
    (tmp_path / "prj").mkdir()
    (tmp_path / "prj" / "keep.txt").write_text("mine")
    with pytest.raises(EdgeannError, match="not empty"):
        write_project(jet_graph, tmp_path / "prj")
    assert [p.name for p in (tmp_path / "prj").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    write_project(jet_graph, tmp_path / "empty")  # an existing empty directory is fine


def test_deterministic(tmp_path, jet_graph, jet_project):
    again = write_project(copy.deepcopy(jet_graph), tmp_path / "again")
    assert firmware_sha256(again.path) == firmware_sha256(jet_project.path) == again.firmware_sha256()
    # not only the hashed firmware: every file hls4ml and edgeann write is byte-identical
    files = sorted(p.relative_to(again.path) for p in again.path.rglob("*") if p.is_file())
    first = sorted(p.relative_to(jet_project.path) for p in jet_project.path.rglob("*") if p.is_file())
    assert files == [f for f in first if f.parts[0] != "csim"]
    for rel in files:
        assert (again.path / rel).read_bytes() == (jet_project.path / rel).read_bytes(), rel
    hashed = {p.relative_to(again.path).as_posix() for p in firmware_files(again.path)}
    assert {"firmware/myproject.cpp", "firmware/defines.h", "firmware/parameters.h", "project.tcl"} <= hashed
    assert not any(h.startswith(("csim/", "tb_data/")) or h.endswith(".so") for h in hashed)


def test_types_in_generated_headers(jet_graph, jet_project):
    """defines.h spells exactly the graph's types: saturating input/activations, exact wrapping accumulators."""
    defines = (jet_project.path / "firmware" / "defines.h").read_text()
    typedefs = dict((name, t) for t, name in re.findall(r"typedef (.+) (\w+);", defines))
    infos = jet_graph.infos()
    assert typedefs["input_t"] == "ap_fixed<8,3,AP_TRN,AP_SAT,0>"
    assert typedefs["result_t"] == "ap_fixed<8,5,AP_TRN,AP_SAT,0>"
    for i in range(1, 5):
        node = jet_graph.node(f"fc{i}")
        acc = infos[f"fc{i}"].type
        assert typedefs[f"fc{i}_accum_t"] == f"ap_fixed<{acc.width},{acc.integer}>"  # AP_TRN, AP_WRAP
        assert typedefs[f"fc{i}_weight_t"] == node.weight_type.hls()
        assert typedefs[f"fc{i}_bias_t"] == node.bias_type.hls()
    for i in range(1, 4):
        assert typedefs[f"layer{2 * i + 1}_t"] == "ap_ufixed<6,3,AP_TRN,AP_SAT,0>"
    params = (jet_project.path / "firmware" / "parameters.h").read_text()
    assert params.count("using product = nnet::product::mult<x_T, y_T>;") == 4
    # pruned weights: hls4ml counts them (n_zeros lowers multiplier_limit) but keeps them as 0 constants
    # in the weight arrays; with io_parallel/Latency the arrays are constants and HLS drops x*0.
    for i, idx in zip(range(1, 5), (2, 4, 6, 8)):
        zeros = int((jet_graph.node(f"fc{i}").weight == 0).sum())
        assert f"static const unsigned n_zeros = {zeros};" in params
        weights = (jet_project.path / "firmware" / "weights" / f"w{idx}.h").read_text()
        assert weights.count("0.00000") >= zeros


def test_invalid_resource_reuse_factor(tmp_path, jet_graph):
    with pytest.raises(EdgeannError, match="reuse_factor 3 is not valid for fc1"):
        write_project(jet_graph, tmp_path / "prj", HlsOptions(strategy="Resource", reuse_factor=3))


def test_unsupported_graphs(tmp_path, jet_graph):
    class Mystery(ir.Node):
        op = ""

        def infer(self, ins):
            return ins[0]

    g = ir.Graph("m", [jet_graph.input, Mystery("mystery", ["x"])], ["mystery"])
    with pytest.raises(EdgeannError, match="no firmware lowering for Mystery node 'mystery'"):
        write_project(g, tmp_path / "a")
    two = ir.Graph("two", jet_graph.nodes, ["fc1", "out"])
    with pytest.raises(EdgeannError, match="one output"):
        write_project(two, tmp_path / "b")


# --------------------------------------------------------------------------------------------
# C simulation


@pytest.mark.csim
def test_jet_mlp_bit_exact(jet_graph, jet_csim, mlps):
    rng = np.random.default_rng(2024)
    x = np.concatenate([rng.normal(0, 2, (10_000, 16)), rng.uniform(-5, 5, (2_000, 16)), mlps.edge_inputs(jet_graph)])
    assert_bit_exact(jet_csim, jet_graph, x)
    assert np.array_equal(jet_csim.predict(x[:1000], threads=1), jet_csim.predict(x[:1000], threads=3))
    assert jet_csim.predict(x[:0]).shape == (0, 5)
    with pytest.raises(ValueError, match="NaN"):
        jet_csim.predict(np.full((1, 16), np.nan))
    with pytest.raises(ValueError, match="shape"):
        jet_csim.predict(np.zeros((4, 15)))


@pytest.mark.csim
def test_compiled_library_is_cached(jet_project, jet_csim):
    t0 = time.perf_counter()
    again = compile_csim(jet_project.path)  # from the directory alone, as the CLI would
    assert time.perf_counter() - t0 < 2.0
    assert again.library == jet_csim.library
    assert len(list((jet_project.path / "csim").glob("*.so"))) == 1


@pytest.mark.csim
@pytest.mark.parametrize(
    "options",
    [
        HlsOptions(io_type="io_stream"),
        HlsOptions(strategy="Resource", reuse_factor=4),
        HlsOptions(io_type="io_stream", strategy="Resource", reuse_factor=2),
        HlsOptions(backend="Vivado", reuse_factor=2, clock_period=3.3, project_name="jets"),
    ],
    ids=["stream-latency", "parallel-resource-rf4", "stream-resource-rf2", "vivado-latency-rf2"],
)
def test_jet_mlp_variants_bit_exact(tmp_path, jet_graph, options, mlps):
    project = write_project(jet_graph, tmp_path / "prj", options)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 2, size=(3000, 16)), mlps.edge_inputs(jet_graph)])
    assert_bit_exact(compile_csim(project), jet_graph, x)


HAS_ROUNDING = "rounding" in {f.name for f in dataclasses.fields(ir.Input)}

# Seeds picked (conftest.random_graph) so that a handful of compiles covers: depth 1-3, widths 1-40 (a
# width-1 layer, a 1-input net), signed and unsigned types with fractions below zero and beyond the width,
# narrow types, a graph ending in a Dense, sparsity 0.3-0.9, io_stream and Resource.
RANDOM_CASES = [
    (4, "floor", HlsOptions()),  # 38-36-21-38, all type oddities, 72% zeros
    (5, "floor", HlsOptions(io_type="io_stream")),  # 33-1-33-19, 89% zeros
    (15, "floor", HlsOptions(strategy="Resource")),  # 28-29-33-10, ends in a Dense
    (34, "floor", HlsOptions(io_type="io_stream", strategy="Resource")),  # 1-5
    (6, "half_even", HlsOptions()),  # AP_RND_CONV on input, ReLUs and output
]


@pytest.mark.csim
@pytest.mark.parametrize("seed,rounding,options", RANDOM_CASES, ids=[f"seed{s}-{r}" for s, r, _ in RANDOM_CASES])
def test_random_mlps_bit_exact(tmp_path, seed, rounding, options, mlps):
    if rounding != "floor" and not HAS_ROUNDING:
        pytest.skip("this edgeann.ir has no rounding modes")
    rng = np.random.default_rng(seed)
    graph = mlps.random_graph(rng, rounding=rounding)
    project = write_project(graph, tmp_path / "prj", options)
    assert_bit_exact(compile_csim(project), graph, mlps.random_inputs(graph, rng, 3000))


@pytest.mark.skipif(not HAS_ROUNDING, reason="this edgeann.ir has no rounding modes")
def test_refuses_rounding_that_ap_types_cannot_simulate(tmp_path, mlps):
    graph = mlps.random_graph(np.random.default_rng(2), rounding="half_even")
    with pytest.raises(EdgeannError, match="node 'out': rounding half_even from ap_fixed<7,0> to ap_fixed<3,5> drops 9"):
        write_project(graph, tmp_path / "prj")


@pytest.mark.csim
def test_odd_names_and_identity_quantizers(tmp_path, mlps):
    """Names that are not C identifiers or clash with hls4ml's; Quantize onto the type it already has
    (right after the Input, and after a Dense, where hls4ml drops it)."""
    rng = np.random.default_rng(3)
    t_in = ir.FixedType(6, 2, signed=False)
    dense = lambda name, inp, n_out, n_in, frac: ir.Dense(  # noqa: E731
        name, [inp], weight=rng.integers(-8, 8, size=(n_out, n_in)), weight_type=ir.FixedType(4, 2),
        bias=rng.integers(-50, 50, size=n_out), bias_type=ir.FixedType(8, frac),
    )  # fmt: skip
    nodes = [
        ir.Input("input", [], shape=(7,), type=t_in),
        ir.Quantize("int", ["input"], type=t_in),
        dense("w2", "int", 9, 7, 4),
        ir.Relu("1st relu", ["w2"], type=ir.FixedType(5, 1, signed=True, narrow=True)),
        dense("fc/2", "1st relu", 3, 9, 3),
    ]
    g = ir.Graph("odd", nodes, ["fc/2"])
    g = ir.Graph("odd", [*nodes, ir.Quantize("out", ["fc/2"], type=g.infos()["fc/2"].type)], ["out"])
    project = write_project(g, tmp_path / "prj")
    assert set(project.layer_names) == {n.name for n in g.nodes}
    assert all(re.fullmatch(r"[A-Za-z_]\w*", v) for v in project.layer_names.values())
    assert project.layer_names["input"] != "input" and project.layer_names["w2"] != "w2"
    assert project.layer_names["out"] not in project.layer_sizes  # hls4ml dropped the identity after the Dense
    assert_bit_exact(compile_csim(project), g, mlps.random_inputs(g, rng, 2000))


@pytest.mark.csim
def test_compile_error_shows_gcc_output(tmp_path, jet_project):
    broken = tmp_path / "broken"
    shutil.copytree(jet_project.path, broken, ignore=shutil.ignore_patterns("csim"))
    top = broken / "firmware" / "myproject.cpp"
    top.write_text(top.read_text().replace("// fc1", "this is not C++;", 1))
    with pytest.raises(CSimCompileError, match=r"(?s)g\+\+ failed on .*myproject\.cpp.*error"):
        compile_csim(broken)


# --------------------------------------------------------------------------------------------
# Tracing


@pytest.mark.csim
def test_first_divergence_none_for_a_correct_project(jet_graph, jet_project):
    x = np.random.default_rng(9).normal(0, 2, size=(300, 16))
    assert first_divergence(jet_graph, jet_project, x) is None


def test_first_divergence_refuses_a_project_of_another_graph(jet_graph, jet_project):
    other = copy.deepcopy(jet_graph)
    other.node("fc2").weight[3, 5] += 1
    with pytest.raises(EdgeannError, match="not what graph"):
        first_divergence(other, jet_project, np.zeros((2, 16)))


@pytest.mark.csim
def test_first_divergence_finds_the_broken_layer(tmp_path, mlps):
    """hls4ml's own trace on an hls4ml ModelGraph (the path for models converted by hls4ml itself)."""
    rng = np.random.default_rng(4)
    g = mlps.random_mlp(
        rng, (6, 5, 4, 3), input_type=ir.FixedType(8, 4), weight_types=[ir.FixedType(5, 3)] * 3,
        act_types=[ir.FixedType(6, 3, signed=False)] * 2, output_type=ir.FixedType(8, 3), sparsity=0.0,
    )  # fmt: skip
    model, _, names = build_model(g, HlsOptions(), tmp_path / "prj")
    model.graph[names["fc2"]].get_weights("weight").data[1, 2] += 0.125  # one weight LSB: the firmware's bug
    x = mlps.random_inputs(g, rng, 200)
    div = first_divergence(g, model, x, names=names)
    assert div is not None and div.layer == "fc2" and div.n_mismatch > 0 and div.max_lsb_diff >= 1
