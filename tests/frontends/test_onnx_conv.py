"""Convolutional foreign models read into the channels-last graph: the graph equals the original model (qonnx's
executor on the model's own, channels-first layout), Keras-style Transpose pairs keep the input channels-last,
and what is not supported is refused in one line."""

import numpy as np
import pytest

from edgeann import ir
from edgeann.backends import onnx_qcdq
from edgeann.cli import main
from edgeann.export import run_qonnx
from edgeann.frontends.onnx import parse_precision, read_foreign
from tests.frontends.conv_models import brevitas_cnn_export, brevitas_cnn_qcdq_export, float_pool_cnn, keras_float_cnn


@pytest.mark.parametrize("kw, kinds", [
    (dict(d=2), [ir.Input, ir.Conv, ir.Relu, ir.MaxPool, ir.Flatten, ir.Dense]),
    (dict(d=1), [ir.Input, ir.Conv, ir.Relu, ir.MaxPool, ir.Flatten, ir.Dense]),
    (dict(d=2, residual=True), None),
])
def test_brevitas_cnn_graph_equals_the_qonnx_executor(tmp_path, kw, kinds):
    """Channels-first input (N, C, *spatial) -> IR input (*spatial, C); the NCHW flatten before the QuantLinear is
    matched by permuting the Dense's weight columns."""
    src = brevitas_cnn_export(tmp_path / "m.onnx", **kw)
    f = read_foreign(src)
    d = kw["d"]
    assert f.input_perm == ((0, 3, 1, 2) if d == 2 else (0, 2, 1))
    assert f.graph.input.shape == ((6, 6, 2) if d == 2 else (8, 2))
    if kinds:
        assert [type(n) for n in f.graph.nodes] == kinds
    else:
        assert sum(isinstance(n, ir.Add) for n in f.graph.nodes) == 1
    x = np.random.default_rng(1).normal(0, 2, (1000, *f.graph.input.shape)).astype(np.float32)
    ref = run_qonnx(src, np.transpose(x, f.input_perm)).reshape(len(x), -1)
    assert np.array_equal(f.graph.predict(x).reshape(len(x), -1), ref)


def test_brevitas_qcdq_cnn_graph_equals_the_qonnx_executor(tmp_path):
    src = brevitas_cnn_qcdq_export(tmp_path / "m.onnx", d=2)
    f = read_foreign(src)
    assert f.kind == "qcdq" and f.input_perm == (0, 3, 1, 2)
    x = np.random.default_rng(2).normal(0, 2, (1000, 6, 6, 2)).astype(np.float32)
    ref = run_qonnx(src, np.transpose(x, f.input_perm)).reshape(len(x), -1)
    assert np.array_equal(f.graph.predict(x).reshape(len(x), -1), ref)


@pytest.mark.parametrize("d", [1, 2])
def test_keras_style_float_cnn_keeps_its_channels_last_input(tmp_path, d):
    src = keras_float_cnn(tmp_path / "k.onnx", d=d)
    f = read_foreign(src, parse_precision("ap_fixed<16,6>"))
    assert f.input_perm is None and f.graph.input.shape == ((6, 6, 2) if d == 2 else (8, 2))
    assert any(isinstance(n, ir.Conv) for n in f.graph.nodes)
    x = np.random.default_rng(0).normal(0, 1, (500, *f.graph.input.shape)).astype(np.float32)
    assert np.abs(f.graph.predict(x) - onnx_qcdq.run_any(src, x)).max() < 0.05  # post-training fixed point


def test_keras_style_quantized_input_before_the_transpose_stays_channels_last(tmp_path):
    """A Quant on the input, then the Transpose to channels-first (QKeras through qonnx): no input permutation."""
    src = keras_float_cnn(tmp_path / "k.onnx", d=2, quant_input=True)
    f = read_foreign(src)
    assert f.kind == "qonnx" and f.input_perm is None and f.graph.input.shape == (6, 6, 2)
    x = np.random.default_rng(3).normal(0, 2, (1000, 6, 6, 2)).astype(np.float32)
    assert np.array_equal(f.graph.predict(x).reshape(len(x), -1), run_qonnx(src, x).reshape(len(x), -1))


@pytest.mark.parametrize("attrs, fragment", [
    (dict(group=2), "node conv (Conv): group 2 is not supported"),
    (dict(dilations=[2, 2]), "node conv (Conv): dilations [2, 2] is not supported"),
])
def test_conv_refusals_name_the_node_in_one_line(tmp_path, capsys, attrs, fragment):
    src = keras_float_cnn(tmp_path / "m.onnx", **attrs)
    assert main(["export", str(src), "--fpga", "--precision", "ap_fixed<16,6>", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not (tmp_path / "p").exists()


def test_same_auto_padding_is_made_explicit(tmp_path):
    """auto_pad SAME_UPPER (the ONNX model zoo's MNIST, Keras 'same'): the same graph as explicit pads."""
    same = read_foreign(keras_float_cnn(tmp_path / "s.onnx", auto_pad="SAME_UPPER"), parse_precision("ap_fixed<16,6>"))
    src = keras_float_cnn(tmp_path / "m.onnx", pads=[1, 1, 1, 1])
    f = read_foreign(src, parse_precision("ap_fixed<16,6>"))
    x = np.random.default_rng(0).normal(0, 1, (200, *f.graph.input.shape)).astype(np.float32)
    assert np.array_equal(same.graph.predict(x), f.graph.predict(x))
    assert np.abs(f.graph.predict(x) - onnx_qcdq.run_any(src, x)).max() < 0.05


@pytest.mark.parametrize("pool, attrs", [
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[2, 4], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[1, 1])),
    ("GlobalAveragePool", {}),
])
def test_channels_first_float_cnn_with_pooling(tmp_path, pool, attrs):
    """A channels-first float model: the IR input is (8, 8, 2), the model is fed the transposed inputs."""
    src = float_pool_cnn(tmp_path / "m.onnx", pool, **attrs)
    f = read_foreign(src, parse_precision("ap_fixed<16,6>"))
    assert f.input_perm == (0, 3, 1, 2) and f.graph.input.shape == (8, 8, 2)
    x = np.random.default_rng(0).normal(0, 1, (300, 8, 8, 2)).astype(np.float32)
    ref = onnx_qcdq.run_any(src, np.transpose(x, f.input_perm))
    assert np.abs(f.graph.predict(x) - ref).max() < 0.05


@pytest.mark.parametrize("pool, attrs, fragment", [
    ("AveragePool", dict(kernel_shape=[3, 3]), "node pool (AveragePool): average pooling over 9 values is not exact; use a window whose area is a power of two"),
    ("AveragePool", dict(kernel_shape=[2, 2], pads=[1, 1, 1, 1]), "node pool (AveragePool): padded average pooling is not supported"),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2]), "node pool (MaxPool): dilations [2, 2] is not supported"),
])
def test_pooling_refusals_name_the_node_in_one_line(tmp_path, capsys, pool, attrs, fragment):
    src = float_pool_cnn(tmp_path / "m.onnx", pool, **attrs)
    assert main(["export", str(src), "--fpga", "--precision", "ap_fixed<16,6>", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not (tmp_path / "p").exists()
