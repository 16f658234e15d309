"""CNN firmware: random small CNNs through hls4ml and g++, bit for bit against the graph's golden model and
onnxruntime; the io_stream limits edgeann refuses; tracing a CNN project.

Every ``csim`` test compiles real firmware (5-15 s a project on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeann import ir, testing
from edgeann.backends import onnx_qcdq
from edgeann.errors import EdgeannError
from edgeann.backends.hls import HlsOptions, compile_csim, first_divergence, write_project


def assert_bit_exact(csim, graph: ir.Graph, x: np.ndarray, threads: int | None = None) -> None:
    y, want = csim.predict(x, threads=threads), graph.predict(x)
    bad = np.flatnonzero((y != want).reshape(len(x), -1).any(axis=1))
    if bad.size:
        pytest.fail(f"{bad.size} of {len(x)} samples differ, first at {bad[0]}: csim={y[bad[0]]} graph={want[bad[0]]}")
    assert np.array_equal(csim.predict_codes(x, threads=threads), graph.execute(x)[graph.outputs[0]])


# --------------------------------------------------------------------------------------------
# Properties without a compiler: the ONNX reference is the golden model on random CNNs


def test_random_cnns_onnx_equals_graph():
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        g = testing.random_cnn(rng, dims=1 + seed % 2, stream=bool(seed % 3 == 0))
        x = testing.random_inputs(g, rng, 100).astype(np.float32).astype(np.float64)  # onnxruntime reads float32
        got = onnx_qcdq.run(onnx_qcdq.to_onnx(g), x)
        assert np.array_equal(got.reshape(len(x), -1), g.predict(x).reshape(len(x), -1)), f"seed {1000 + seed}"


def test_io_stream_limits_are_refused_with_the_layer_name(tmp_path):
    t = ir.FixedType(6, 3)
    one_row = ir.Graph("g", [
        ir.Input("x", [], shape=(6, 6, 1), type=t),
        ir.Conv("c", ["x"], weight=np.ones((1, 2, 1, 2), np.int64), weight_type=ir.FixedType(3, 1),
                bias=np.zeros(2, np.int64), bias_type=ir.FixedType(4, 4), stride=(2, 1)),
        ir.Flatten("f", ["c"]),
    ], ["f"])
    with pytest.raises(EdgeannError, match="layer c: io_stream firmware does not support a kernel one row high"):
        write_project(one_row, tmp_path / "a", HlsOptions(io_type="io_stream"))
    overlapping = ir.Graph("g", [
        ir.Input("x", [], shape=(6, 6, 1), type=t),
        ir.MaxPool("p", ["x"], pool=(2, 2), stride=(1, 1)),
        ir.Flatten("f", ["p"]),
    ], ["f"])
    with pytest.raises(EdgeannError, match="layer p: io_stream firmware does not support pooling whose stride"):
        write_project(overlapping, tmp_path / "b", HlsOptions(io_type="io_stream"))
    write_project(overlapping, tmp_path / "c", HlsOptions(io_type="io_parallel"))  # fine there


# --------------------------------------------------------------------------------------------
# C simulation of random CNNs (edgeann.testing.random_cnn); seeds picked so a handful of compiles covers
# 1-D and 2-D inputs with 1-3 channels, kernels 1-3 with strides and zero padding, max and average pooling,
# batch normalization, a residual block, 2-8-bit types on odd grids, io_parallel and io_stream, Latency and Resource.

RANDOM_CASES = [
    (7, HlsOptions(io_type="io_stream")),  # 2-D: conv, bn, avg pool, residual
    (8, HlsOptions()),  # 2-D, 3 channels: bn, max pools, two convs, residual
    (9, HlsOptions(io_type="io_stream", strategy="Resource")),  # 1-D, 3 channels: strided conv, bn
    (10, HlsOptions()),  # 2-D, 2 channels: avg pool, residual
    (14, HlsOptions(strategy="Resource")),  # 1-D: two convs, bn
    (3, HlsOptions(io_type="io_stream", strategy="Resource")),  # 2-D, 3 channels: max pool, two convs
]


@pytest.mark.csim
@pytest.mark.parametrize("seed,options", RANDOM_CASES, ids=[f"seed{s}-{o.io_type}-{o.strategy}" for s, o in RANDOM_CASES])
def test_random_cnns_bit_exact(tmp_path, seed, options):
    rng = np.random.default_rng(seed)
    graph = testing.random_cnn(rng, stream=options.io_type == "io_stream")
    project = write_project(graph, tmp_path / "prj", options)
    csim = compile_csim(project)
    x = testing.random_inputs(graph, rng, 1500)
    assert_bit_exact(csim, graph, x)
    if options.io_type == "io_stream":  # stateful streaming firmware: one private library per thread
        assert np.array_equal(csim.predict(x[:600], threads=1), csim.predict(x[:600], threads=3))


@pytest.mark.csim
def test_first_divergence_none_for_a_correct_cnn_project(tmp_path):
    rng = np.random.default_rng(7)
    graph = testing.random_cnn(rng, stream=True)
    project = write_project(graph, tmp_path / "prj", HlsOptions(io_type="io_stream"))
    x = testing.random_inputs(graph, rng, 100)[:200]
    assert first_divergence(graph, project, x) is None
