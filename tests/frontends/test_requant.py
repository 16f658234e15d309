"""Exact elementwise requantization (edgeann.frontends.onnx.ops_requant, edgeann.ir.Threshold): a float chain
between an integer tensor and its quantizer becomes per-channel thresholds that reproduce the original's own
arithmetic on every reachable integer, whatever the scales, zero points and bit widths."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from qonnx.custom_op.general.intquant import int_quant

from edgeann import ir
from edgeann.cli import main
from edgeann.errors import EdgeannError
from edgeann.export import run_qonnx
from edgeann.frontends.onnx import parse_precision, read_foreign
from edgeann.frontends.onnx.ops_requant import tabulate
from tests.frontends.conv_models import brevitas_float_cnn
from tests.frontends.foreign_models import (QONNX_DOMAIN, brevitas_binary_mlp, brevitas_float_scaled_mlp, brevitas_qonnx,
                                            finn_multithreshold_mlp)

chains = st.fixed_dictionaries({
    "channels": st.integers(1, 4),
    "lo": st.integers(-3000, 0),
    "span": st.integers(0, 3000),
    "acc_scale": st.floats(1e-4, 1.0),
    "gain": st.lists(st.floats(0.05, 20.0), min_size=4, max_size=4),
    "negative": st.lists(st.booleans(), min_size=4, max_size=4),
    "offset": st.lists(st.floats(-5.0, 5.0), min_size=4, max_size=4),
    "scale": st.floats(1e-3, 2.0),
    "zero": st.integers(-8, 8),
    "bits": st.integers(1, 8),
    "signed": st.booleans(),
    "narrow": st.booleans(),
    "rounding": st.sampled_from(["ROUND", "FLOOR"]),
})


def _reference(p):
    """The chain in float32 as an ONNX model runs it: code * scale, times a gain, plus an offset, then qonnx's Quant;
    returns codes (m, channels) -> output codes."""
    c = p["channels"]
    gain = np.float32([g * (-1 if n else 1) for g, n in zip(p["gain"], p["negative"])][:c])
    offset = np.float32(p["offset"][:c])
    s = np.float32(p["scale"])
    signed = p["signed"] or p["bits"] == 1

    def f(codes):
        v = (codes.astype(np.float64) * p["acc_scale"]).astype(np.float32)
        y = int_quant(v * gain + offset, s, np.float32(p["zero"]), np.float32(p["bits"]), signed, p["narrow"],
                      p["rounding"])
        return np.rint(np.asarray(y, np.float64) / np.float64(s)).astype(np.int64)

    return f


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains)
def test_thresholds_reproduce_any_scale_zero_point_and_bit_width_on_every_integer(p):
    f, c = _reference(p), p["channels"]
    lo, hi = p["lo"], p["lo"] + p["span"]
    thresholds, start, step = tabulate(f, lo, hi, c, "test")
    node = ir.Threshold("t", ["x"], thresholds=thresholds, start=start, step=step, type=ir.FixedType(12, 0))
    x = np.repeat(np.arange(lo, hi + 1, dtype=np.int64)[:, None], c, axis=1)
    assert np.array_equal(node.codes_at(x), f(x))
    form = ir.affine_form(thresholds, start, step, lo, hi)
    if form is not None:  # the line and corrections the firmware computes instead: equal on every integer too
        line = ir.Threshold("a", ["x"], thresholds=thresholds, start=start, step=step, type=ir.FixedType(12, 0),
                            **dict(zip(("multiplier", "offset", "shift", "exact", "line"), form)))
        info = ir.TensorInfo((c,), ir.FixedType(14, 0), lo, hi)
        assert np.array_equal(line.affine_codes(x, info), f(x))
    # a channel with a negative gain counts down (where it is not constant over the range)
    varies = f(x)[0] != f(x)[-1]
    assert np.all((step == np.where(np.asarray(p["negative"][:c]), -1, 1))[varies])
    assert np.all(np.diff(thresholds, axis=1) >= 0)


def test_affine_form_with_corrections_equals_the_thresholds_on_every_accumulator(tmp_path):
    """Brevitas' BatchNorm -> ReLU -> 8-bit quantizer on a +-100k accumulator: float32 rounding in the original moves
    a few of the 255 thresholds off every line; the line plus those corrections equals the thresholds everywhere."""
    foreign = read_foreign(brevitas_qonnx(brevitas_float_scaled_mlp(), tmp_path / "m.onnx", 10),
                           input_precision=parse_precision("ap_fixed<10,2>"))
    node = foreign.graph.nodes[3]
    info = foreign.graph.infos()[node.inputs[0]]
    assert node.op == "Threshold" and node.affine and node.thresholds.shape[1] == 255 and info.hi - info.lo > 200_000
    assert 0 < node.exact.shape[1] <= 4  # corrections: comparisons kept instead of 255 per value
    x = np.repeat(np.arange(info.lo, info.hi + 1)[:, None], node.channels, axis=1)
    assert np.array_equal(node.affine_codes(x, info), node.codes_at(x))


def test_steps_from_codes_and_back():
    x = np.arange(-5, 6)
    codes = np.stack([np.clip(x // 2, -1, 2), -np.clip(x, 0, 3), np.zeros_like(x)], axis=1)
    t, start, step = ir.steps_from_codes(x, codes)
    node = ir.Threshold("t", ["x"], thresholds=t, start=start, step=step, type=ir.FixedType(4, 0))
    assert np.array_equal(node.codes_at(np.repeat(x[:, None], 3, axis=1)), codes)
    assert step.tolist() == [1, -1, 1]
    with pytest.raises(ValueError, match="not monotone"):
        ir.steps_from_codes(x, np.abs(x)[:, None])


def test_threshold_node_checks_its_shape_and_range():
    node = ir.Threshold("t", ["x"], thresholds=np.array([[0, 2]]), start=np.array([0]), step=np.array([1]),
                        type=ir.FixedType(2, 0, signed=False))
    info = node.infer([ir.TensorInfo((3, 1), ir.FixedType(4, 0), -8, 7)])
    assert (info.lo, info.hi, info.shape) == (0, 2, (3, 1))
    with pytest.raises(ValueError, match="channels"):
        node.infer([ir.TensorInfo((3,), ir.FixedType(4, 0), -8, 7)])
    small = ir.Threshold("t", ["x"], thresholds=np.array([[0, 1, 2, 3]]), start=np.array([0]), step=np.array([1]),
                         type=ir.FixedType(2, 0, signed=False))
    with pytest.raises(ValueError, match="do not fit"):
        small.infer([ir.TensorInfo((1,), ir.FixedType(4, 0), -8, 7)])


# --------------------------------------------------------------------------------------------
# Random chains in QONNX graphs: read, then compared with qonnx's executor on every input code


def _chain_graph(path, p, n_in: int = 2) -> None:
    """x (4-bit input on 2^-2) -> MatMul (integer weights) -> Mul (per-channel float) -> Add -> Quant (random)."""
    rng = np.random.default_rng(p["seed"])
    c = p["channels"]
    gain = np.float32([g * (-1 if n else 1) for g, n in zip(p["gain"], p["negative"])][:c])
    inits = {"s_in": np.float32(0.25), "zero": np.float32(0), "bits_in": np.float32(4),
             "w": rng.integers(-5, 6, (n_in, c)).astype(np.float32), "gain": gain.reshape(1, c),
             "offset": np.float32(p["offset"][:c]).reshape(1, c), "s": np.float32(p["scale"]),
             "z": np.float32(p["zero"]), "bits": np.float32(p["bits"])}
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "zero", "bits_in"], ["xq"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                         rounding_mode="ROUND"),
        helper.make_node("MatMul", ["xq", "w"], ["acc"]),
        helper.make_node("Mul", ["acc", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["shifted"]),
        helper.make_node("Quant", ["shifted", "s", "z", "bits"], ["y"], domain=QONNX_DOMAIN,
                         signed=int(p["signed"] or p["bits"] == 1), narrow=int(p["narrow"]), rounding_mode=p["rounding"]),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]),
              str(path))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chains, st.integers(0, 1000))
def test_random_chains_in_qonnx_graphs_equal_the_executor_on_every_input(tmp_path, p, seed):
    path = tmp_path / "chain.onnx"
    _chain_graph(path, {**p, "seed": seed})
    foreign = read_foreign(path)
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense", "Threshold"]
    codes = np.stack(np.meshgrid(np.arange(-8, 8), np.arange(-8, 8)), -1).reshape(-1, 2)  # every input
    x = (codes * 0.25).astype(np.float32)
    ref = run_qonnx(path, x).reshape(len(x), -1)
    out = foreign.graph.infos()[foreign.graph.outputs[0]].type
    scale = foreign.output_scale if foreign.output_scale is not None else out.scale
    got = foreign.graph.execute(x)[foreign.graph.outputs[0]]
    assert np.array_equal(np.rint(ref / scale), got)


# --------------------------------------------------------------------------------------------
# Whole third-party shapes: the fixed-point graph equals the original on the verification's vectors


def _equal_to_original(path, n: int = 5000, input_precision=None):
    foreign = read_foreign(path, input_precision=parse_precision(input_precision) if input_precision else None)
    t = foreign.graph.input.type
    rng = np.random.default_rng(0)
    x = (rng.integers(t.int_min, t.int_max + 1, (n, *foreign.graph.input.shape)) * t.scale).astype(np.float32)
    ref = run_qonnx(path, x).reshape(n, -1)
    out = foreign.graph.infos()[foreign.graph.outputs[0]].type
    scale = foreign.output_scale if foreign.output_scale is not None else out.scale
    assert np.array_equal(np.rint(ref / scale), foreign.graph.execute(x)[foreign.graph.outputs[0]])
    return foreign


def test_brevitas_float_scales_batch_norm_and_input_normalization(tmp_path):
    path = brevitas_qonnx(brevitas_float_scaled_mlp(), tmp_path / "m.onnx", 10)
    foreign = _equal_to_original(path, input_precision="ap_fixed<10,2>")
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Threshold", "Dense", "Threshold", "Dense"]
    assert foreign.output_scale is not None and np.shape(foreign.output_scale) == (4,)  # per-channel weight scales


def test_brevitas_binary_weights_sign_activations_and_zero_points(tmp_path):
    path = brevitas_qonnx(brevitas_binary_mlp(), tmp_path / "m.onnx", 8)
    foreign = _equal_to_original(path, input_precision="ap_fixed<10,4>")
    kinds = [type(n).__name__ for n in foreign.graph.nodes]
    assert kinds.count("Threshold") == 4
    sign = foreign.graph.nodes[3]
    assert foreign.graph.infos()[sign.name].type == ir.FixedType(2, 0, True, narrow=True)  # BipolarQuant: -1 / +1


def test_finn_multithreshold_graph(tmp_path):
    foreign = _equal_to_original(finn_multithreshold_mlp(tmp_path / "m.onnx"))
    assert foreign.output_scale is None and foreign.graph.infos()[foreign.graph.outputs[0]].type == ir.FixedType(3, 0, False)


def test_a_float_input_quantizer_asks_for_the_input_type(tmp_path, capsys):
    path = brevitas_qonnx(brevitas_float_scaled_mlp(), tmp_path / "m.onnx", 10)
    assert main(["export", str(path), "--fpga", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--input-precision 'ap_fixed<W,I>'" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()


def _trailing(tmp_path, relu: bool):
    p = {"channels": 2, "gain": [0.3, 0.7, 1, 1], "negative": [False, True, False, False], "offset": [0.1, 0.2, 0, 0],
         "scale": 0.1, "zero": 0, "bits": 4, "signed": True, "narrow": False, "rounding": "ROUND", "seed": 0}
    _chain_graph(tmp_path / "m.onnx", p)
    model = onnx.load(str(tmp_path / "m.onnx"))
    del model.graph.node[-1]  # ends at the float Add (FINN's TensorNorm, a dequantizing scale and offset)
    model.graph.output[0].name = "shifted"
    if relu:
        model.graph.node.append(helper.make_node("Relu", ["shifted"], ["y"]))
        model.graph.output[0].name = "y"
    onnx.save(model, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def test_a_trailing_affine_float_chain_ends_at_the_accumulator_with_its_scale_and_offset(tmp_path):
    path = _trailing(tmp_path, relu=False)
    foreign = read_foreign(path)
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense"]
    codes = np.stack(np.meshgrid(np.arange(-8, 8), np.arange(-8, 8)), -1).reshape(-1, 2)
    x = (codes * 0.25).astype(np.float32)
    ref = run_qonnx(path, x).reshape(len(x), -1)
    lsb = foreign.graph.infos()[foreign.graph.outputs[0]].type.scale
    q = (ref - foreign.output_offset) / foreign.output_scale
    assert np.abs(q - np.rint(q)).max() < 1e-3 and np.sign(foreign.output_scale).tolist() == [1, -1]
    assert np.array_equal(np.rint(q), foreign.graph.execute(x)[foreign.graph.outputs[0]])
    assert lsb == 2.0**-2


def test_a_trailing_float_chain_that_is_not_affine_is_refused(tmp_path):
    with pytest.raises(EdgeannError, match=r"float arithmetic \(Mul, Add, Relu\).*without a quantizer"):
        read_foreign(_trailing(tmp_path, relu=True))


def test_brevitas_cnn_with_batchnorm2d_between_conv_and_relu_quantizer(tmp_path):
    """QuantConv2d -> BatchNorm2d -> QuantReLU (power-of-two quantizers): the batch norm and the quantizer become
    one per-channel Threshold on the channels-last convolution output; equal to qonnx's executor."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias,
                                Uint8ActPerTensorFixedPoint)

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
        qnn.QuantConv2d(2, 4, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint),
        torch.nn.BatchNorm2d(4),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        qnn.QuantLinear(36, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int16Bias))
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, 2, 8, 8))
    from brevitas.export import export_qonnx

    export_qonnx(net.eval(), torch.randn(1, 2, 8, 8), export_path=str(tmp_path / "c.onnx"), dynamo=False)
    f = read_foreign(tmp_path / "c.onnx")
    assert [n.op for n in f.graph.nodes] == ["Input", "Conv", "Threshold", "MaxPool", "Flatten", "Dense"]
    t = f.graph.input.type
    x = (np.random.default_rng(0).integers(t.int_min, t.int_max + 1, (3000, 8, 8, 2)) * t.scale).astype(np.float32)
    ref = run_qonnx(tmp_path / "c.onnx", np.transpose(x, f.input_perm)).reshape(len(x), -1)
    assert np.array_equal(f.graph.predict(x).reshape(len(x), -1), ref)


def test_input_quantized_per_column_on_the_last_axis_of_a_4d_input(tmp_path):
    """The shape of the QONNX model zoo's KWS MLP: a 4-D input (1, 1, 4, 5) quantized with a float scale (here after
    a normalization with one factor per column: the last axis, shape (5,)), Flatten, Quant weights,
    MatMul, a per-tensor output quantizer. (It was refused: "does not have its 5 channels on axis 1".)"""
    rng = np.random.default_rng(7)
    inits = {"norm": (rng.uniform(0.5, 2.0, 5)).astype(np.float32), "s_in": np.float32(0.83), "z": np.float32(0),
             "b_in": np.float32(4),
             "w": rng.normal(0, 0.5, (20, 3)).astype(np.float32),
             "s_w": np.float32(0.37), "b_w": np.float32(3), "s_out": np.float32(0.61), "b_out": np.float32(5)}
    nodes = [helper.make_node("Mul", ["x", "norm"], ["xn"]),
             helper.make_node("Quant", ["xn", "s_in", "z", "b_in"], ["xq"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Flatten", ["xq"], ["flat"]),
             helper.make_node("Quant", ["w", "s_w", "z", "b_w"], ["wq"], domain=QONNX_DOMAIN, signed=1, narrow=1,
                              rounding_mode="ROUND"),
             helper.make_node("MatMul", ["flat", "wq"], ["acc"]),
             helper.make_node("Quant", ["acc", "s_out", "z", "b_out"], ["y"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                              rounding_mode="ROUND")]
    g = helper.make_graph(nodes, "kws_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]),
              str(tmp_path / "m.onnx"))
    foreign = _equal_to_original(tmp_path / "m.onnx", input_precision="ap_fixed<8,3>")
    first = foreign.graph.nodes[1]
    assert isinstance(first, ir.Threshold) and foreign.graph.input.shape == (1, 4, 5)
    assert len({tuple(t) for t in np.asarray(first.thresholds)}) == 5  # one set of steps per column


@pytest.mark.parametrize("per_channel", [False, True])
def test_brevitas_cnn_with_float_scales(tmp_path, per_channel):
    """The integer convolution keeps its float scale; its bias, the batch norm and the quantizer become one
    Threshold; pooling keeps (max) or divides (average) the scale. Equal to qonnx's executor on every output (no
    step of these 4-bit layers lies within float32 rounding of the original's sums: near_ties 0)."""
    path = brevitas_float_cnn(per_channel, tmp_path / "c.onnx")
    f = read_foreign(path, input_precision=parse_precision("ap_fixed<10,3>"))
    assert [n.op for n in f.graph.nodes] == ["Input", "Threshold", "Conv", "Threshold", "MaxPool", "Conv", "Threshold",
                                             "AvgPool", "Flatten", "Dense"]
    assert all(n.near_ties == 0 for n in f.graph.nodes if isinstance(n, ir.Threshold))
    t = f.graph.input.type
    x = (np.random.default_rng(0).integers(t.int_min, t.int_max + 1, (3000, 8, 8, 2)) * t.scale).astype(np.float32)
    ref = run_qonnx(path, np.transpose(x, f.input_perm)).reshape(len(x), -1)
    scale, offset = f.output_scale, f.output_offset  # the last layer's float bias: a trailing affine chain
    assert scale is not None and offset is not None
    q = (ref - offset) / scale
    assert np.abs(q - np.rint(q)).max() < 0.01
    codes = f.graph.execute(x)[f.graph.outputs[0]].reshape(len(x), -1)
    assert np.array_equal(np.rint(q), codes)


def _normalized_input_mlp(path: Path, add: float, div: float) -> Path:
    """FINN's UNSW-NB15 shape: the input normalized by (x + add) / div in float, then a product with Quant weights
    of a float scale, a bias, BatchNormalization, ReLU and a Quant."""
    rng = np.random.default_rng(3)
    inits = {"a": np.array([add], np.float32), "d": np.float32(div), "w": rng.normal(0, 0.5, (3, 6)).astype(np.float32),
             "s_w": np.float32(0.29), "z": np.float32(0), "b_w": np.float32(2), "bias": rng.normal(0, 0.3, 3).astype(np.float32),
             "g": rng.uniform(0.5, 2, 3).astype(np.float32), "beta": rng.normal(0, 0.2, 3).astype(np.float32),
             "mean": rng.normal(0, 0.2, 3).astype(np.float32), "var": rng.uniform(0.5, 2, 3).astype(np.float32),
             "s_out": np.float32(0.37), "b_out": np.float32(3)}
    nodes = [helper.make_node("Add", ["x", "a"], ["xa"]), helper.make_node("Div", ["xa", "d"], ["xn"]),
             helper.make_node("Quant", ["w", "s_w", "z", "b_w"], ["wq"], domain=QONNX_DOMAIN, signed=1, narrow=1,
                              rounding_mode="ROUND"),
             helper.make_node("Gemm", ["xn", "wq", "bias"], ["acc"], transB=1),
             helper.make_node("BatchNormalization", ["acc", "g", "beta", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Quant", ["r", "s_out", "z", "b_out"], ["y"], domain=QONNX_DOMAIN, signed=0, narrow=0,
                              rounding_mode="ROUND")]
    g = helper.make_graph(nodes, "unsw_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.graph.quantization_annotation.add(tensor_name="x").quant_parameter_tensor_names.add(key="finn_datatype",
                                                                                             value="BIPOLAR")
    onnx.save(model, str(path))
    return path


def test_an_input_normalized_by_exact_fixed_point_arithmetic_enters_the_product(tmp_path):
    """(x + 1) / 2 of a bipolar input is 0 / 1: a power-of-two gain and a whole-code offset, folded into the
    product's weight grid and bias. (It was refused: float arithmetic read without a quantizer after it.)"""
    foreign = _equal_to_original(_normalized_input_mlp(tmp_path / "m.onnx", 1.0, 2.0))
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense", "Threshold"]


def test_an_input_normalization_that_is_not_fixed_point_is_refused_in_one_line(tmp_path):
    with pytest.raises(EdgeannError, match=r"float arithmetic \(Add, Div\) on .* enters this product unquantized, and "
                                           r"it is not exact fixed-point arithmetic"):
        read_foreign(_normalized_input_mlp(tmp_path / "m.onnx", 1.0, 3.0))
