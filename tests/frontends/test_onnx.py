"""The ONNX front end on its own: foreign graphs read into the fixed-point graph, equal to the original model
(cut at the logits) on 10,000 vectors, and refusals that name the node and the reason."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeann.cli import main
from edgeann.errors import EdgeannError
from edgeann.export import run_qonnx
from edgeann.frontends.onnx import parse_precision, read_foreign
from edgeann.frontends.onnx.heads import run_all
from edgeann.verify import verification_inputs
from tests.frontends.foreign_models import brevitas_export, brevitas_mlp, qcdq_column_matmul, qcdq_mlp, qkeras_like_qonnx


def _graph_equals_original(path, tmp_path, precision=None, input_precision=None):
    foreign = read_foreign(path, parse_precision(precision) if precision else None,
                           input_precision=parse_precision(input_precision) if input_precision else None)
    x, _ = verification_inputs(foreign.graph, None, 10_000, on_grid=foreign.input_on_grid)
    onnx.save(foreign.reference, str(tmp_path / "cut.onnx"))
    graph = foreign.graph.predict(x).reshape(len(x), -1)
    ref = run_qonnx(tmp_path / "cut.onnx", x).reshape(len(x), -1)
    if foreign.kind != "qonnx":
        assert np.array_equal(run_all(tmp_path / "cut.onnx", x, qonnx=False)[0].reshape(len(x), -1), ref)
    if foreign.output_scale is not None:  # codes of a float scale: the original's outputs as codes
        offset = 0 if foreign.output_offset is None else foreign.output_offset
        graph = foreign.graph.execute(x)[foreign.graph.outputs[0]].reshape(len(x), -1)
        ref = np.rint((ref - offset) / foreign.output_scale)
    assert len(x) >= 10_000 and np.array_equal(graph, ref)
    return foreign


@pytest.mark.parametrize("head", ["Softmax", "ArgMax", "TopK", "Sigmoid", "none"])
def test_handmade_qcdq_with_gemm_alpha_beta_transpose_dropout_and_a_head(tmp_path, head):
    foreign = _graph_equals_original(qcdq_mlp(tmp_path / "m.onnx", head), tmp_path)
    assert foreign.kind == "qcdq" and [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense", "Relu", "Dense"]
    assert (foreign.head is None) == (head == "none")
    if foreign.head:
        assert foreign.head.logits == "logits" and foreign.head.ops[-1] == head


def test_constant_times_a_column_vector(tmp_path):
    foreign = _graph_equals_original(qcdq_column_matmul(tmp_path / "m.onnx"), tmp_path)
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense"]


@pytest.mark.parametrize("fmt", ["qcdq", "qonnx"])
def test_brevitas_power_of_two_exports_with_a_softmax(tmp_path, fmt):
    foreign = _graph_equals_original(brevitas_export(brevitas_mlp(), tmp_path / "b.onnx", fmt, softmax=True), tmp_path)
    assert foreign.kind == fmt and foreign.head.ops == ("Softmax",)


def test_float_model_with_a_dynamic_batch_shape_subgraph(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (torch's x.view(x.size(0), -1), dynamic batch) is folded
    by qonnx's clean-up."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(12, 3)

        def forward(self, x):
            return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)

    torch.manual_seed(0)
    torch.onnx.export(Net(), torch.zeros(1, 3, 4), str(tmp_path / "f.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    assert "Shape" in {n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node}
    foreign = read_foreign(tmp_path / "f.onnx", parse_precision("ap_fixed<16,6>"))
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Flatten", "Dense", "Quantize"]
    assert foreign.head.ops == ("Softmax",)


def _unsupported_op(path):
    m = onnx.load(str(qcdq_mlp(path, head="none")))
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Tanh", "squash"
    onnx.save(m, str(path))
    return path


def _trans_a(path):
    m = onnx.load(str(qcdq_mlp(path, head="none")))
    fc2 = next(n for n in m.graph.node if n.name == "fc2")
    fc2.attribute.append(helper.make_attribute("transA", 1))
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("kw", [{"act_scale": 0.1}, {"zero_point": 3}, {"act_scale": 0.07, "zero_point": 5}])
def test_qcdq_float_scales_and_zero_points_become_thresholds(tmp_path, kw):
    """An activation quantizer with a scale that is no power of two, or a zero point: exact thresholds (these were
    refused before edgeann.ir.Threshold)."""
    foreign = _graph_equals_original(qcdq_mlp(tmp_path / "m.onnx", "none", **kw), tmp_path)
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense", "Threshold", "Dense"]


@pytest.mark.parametrize("make, fragment", [
    (_unsupported_op, "node squash (Tanh): op Tanh is not supported"),
    (_trans_a, "node fc2 (Gemm): Gemm with transA=1"),
])
def test_refusals_name_the_node_in_one_line(tmp_path, capsys, make, fragment):
    src = make(tmp_path / "m.onnx")
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not (tmp_path / "p").exists()


def test_unquantized_input_typed_by_input_precision(tmp_path):
    foreign = _graph_equals_original(qkeras_like_qonnx(tmp_path / "m.onnx"), tmp_path, input_precision="ap_fixed<8,3>")
    assert foreign.input_on_grid and str(foreign.graph.input.type) == "ap_fixed<8,3>"
    assert [type(n).__name__ for n in foreign.graph.nodes] == ["Input", "Dense", "Relu", "Dense"]


@pytest.mark.parametrize("datatype, type_", [("BIPOLAR", "ap_fixed<2,2>"), ("INT4", "ap_fixed<4,4>"),
                                             ("UINT3", "ap_ufixed<3,3>"), ("FIXED<6,2>", "ap_fixed<6,2>")])
def test_input_annotated_with_a_qonnx_datatype_is_typed_by_it(tmp_path, datatype, type_):
    foreign = _graph_equals_original(qkeras_like_qonnx(tmp_path / "m.onnx", input_datatype=datatype), tmp_path)
    assert foreign.input_on_grid and str(foreign.graph.input.type) == type_


@pytest.mark.parametrize("args, fragment", [
    (["--input-precision", "ap_fixed<8,3>"], "node quant_input (QuantizeLinear): the model input x is quantized here; "
                                             "drop --input-precision"),
    (["--input-precision", "ap_fixed<8,3>", "--precision", "ap_fixed<16,6>"], "--precision already types"),
    (["--input-precision", "fixed8"], "--input-precision 'fixed8': expected ap_fixed<W,I>"),
])
def test_input_precision_refusals(tmp_path, capsys, args, fragment):
    src = qcdq_mlp(tmp_path / "m.onnx")
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not (tmp_path / "p").exists()


def test_input_precision_on_a_float_model_is_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "f",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [onnx.numpy_helper.from_array(np.ones((10, 4), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "f.onnx"))
    with pytest.raises(EdgeannError, match="a float model takes --precision"):
        read_foreign(tmp_path / "f.onnx", input_precision=parse_precision("ap_fixed<8,3>"))


def test_qcdq_model_with_precision_is_refused(tmp_path):
    with pytest.raises(EdgeannError, match=r"already quantized \(QCDQ\); drop --precision"):
        read_foreign(qcdq_mlp(tmp_path / "m.onnx"), parse_precision("ap_fixed<16,6>"))


def test_a_non_power_of_two_gemm_alpha_on_quantized_weights_is_refused(tmp_path):
    m = onnx.load(str(qcdq_mlp(tmp_path / "m.onnx", head="none")))
    fc2 = next(n for n in m.graph.node if n.name == "fc2")
    next(a for a in fc2.attribute if a.name == "alpha").f = 0.3
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(EdgeannError, match=r"node fc2 \(Gemm\): alpha 0.3\d* is not a power of two"):
        read_foreign(tmp_path / "m.onnx")


@pytest.mark.parametrize("rounding", ["floor", "half_even"])
def test_model_onnx_round_trip_over_random_graphs(tmp_path, rounding):
    """Any MLP edgeann writes as QCDQ (quantizers of 2-24 bits: int8, int16 after a float Clip, float Clip alone;
    fractions below zero and beyond the width; float64 sums) reads back into a graph computing the same."""
    from edgeann import testing
    from edgeann.backends import onnx_qcdq

    rng = np.random.default_rng(11)
    for k in range(24):
        graph = testing.random_graph(rng, f"g{k}", rounding=rounding, max_bits=24, max_width=12)
        onnx_qcdq.save(graph, tmp_path / "model.onnx")
        back = read_foreign(tmp_path / "model.onnx").graph
        x = testing.random_inputs(graph, rng, 500).astype(np.float32)
        assert np.array_equal(back.predict(x), graph.predict(x)), k
        assert np.array_equal(back.predict(x), onnx_qcdq.run(tmp_path / "model.onnx", x).reshape(len(x), -1)), k


def test_cut_logits_keep_no_second_value_info(tmp_path):
    """Keras exports record the logits' shape in value_info; once the Softmax is cut the logits are the output, and
    a second entry made qonnx's clean-up assert ("Multiple ValueInfoProto", hls4ml's example-models)."""
    src = qkeras_like_qonnx(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    model.graph.value_info.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]))
    onnx.save(model, str(src))
    foreign = read_foreign(src, input_precision=parse_precision("ap_fixed<8,3>"))
    assert foreign.head is not None and not [vi for vi in foreign.reference.graph.value_info if vi.name == "logits"]


def test_run_all_runs_a_model_that_fixes_its_batch_to_one_sample_by_sample(tmp_path):
    """Keras exporters write Reshape(x, (1, n)): onnxruntime refuses a batch, the full model's class agreement must
    still be computed (it once ended export in a traceback)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["p"], axis=-1)],
        "batch_one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3])],
        [onnx.numpy_helper.from_array(np.array([1, 6], np.int64), "shape"), onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    (p,) = run_all(tmp_path / "m.onnx", x, qonnx=False)
    logits = x.reshape(5, 6) @ w
    assert p.shape == (5, 3) and np.array_equal(p.argmax(1), logits.argmax(1))
