"""edgeann export --fpga on foreign QCDQ / QONNX / ONNX models: the firmware's C simulation equals the original
model (cut at the logits) on >= 10,000 vectors, and the class decision is compared with the full model."""

import json

import numpy as np
import pytest

from edgeann import ir

from edgeann.cli import main
from edgeann.pipeline import export_firmware
from tests.frontends.foreign_models import (brevitas_binary_mlp, brevitas_export, brevitas_float_scaled_mlp, brevitas_mlp,
                                            brevitas_qonnx, finn_multithreshold_mlp, qcdq_column_matmul, qcdq_mlp,
                                            qkeras_like_qonnx)

pytestmark = pytest.mark.csim


def _exact(v: dict, reference: str) -> None:
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    assert v["reference"] == reference and all(c["exact"] for c in v["comparisons"].values())


def test_edgeann_own_model_onnx_comes_back_bit_exact(trained_run, tmp_path, capsys):
    """model.onnx that `edgeann train` writes (QuantizeLinear / Clip / DequantizeLinear after Mul / Floor / Mul)."""
    assert main(["export", str(trained_run / "model.onnx"), "--fpga", "--out", str(tmp_path / "p")]) == 0
    assert "bit-exact" in capsys.readouterr().out
    v = json.loads((tmp_path / "p" / "verification.json").read_text())
    _exact(v, "qonnx executor on the original QCDQ model")
    assert v["onnxruntime_default_session"]["exact_fraction_vs_firmware"] == 1.0 and "class_agreement" not in v
    # the same fixed-point graph as the run's own, up to node names and the (narrowest) weight and bias types
    run, read = ir.Graph.load(trained_run / "graph.npz"), ir.Graph.load(tmp_path / "p" / "edgeann" / "graph.npz")
    assert [type(n) for n in read.nodes] == [type(n) for n in run.nodes]
    x = np.random.default_rng(0).normal(0, 4, (2000, *run.input.shape)).astype(np.float32)
    assert np.array_equal(read.predict(x), run.predict(x))
    assert [i.type for i in read.infos().values()][-1] == [i.type for i in run.infos().values()][-1]


def test_brevitas_qcdq_export_with_a_softmax(tmp_path):
    src = brevitas_export(brevitas_mlp(), tmp_path / "b.onnx", "qcdq", softmax=True)
    proj, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the original QCDQ model")
    assert v["class_agreement"]["head"] == ["Softmax"] and v["class_agreement"]["fraction"] >= 0.99
    assert "the firmware's class (argmax) equals the full model's on 100.000%" in v["summary"]
    assert (proj / "edgeann" / "source_full.onnx").is_file()
    # onnxruntime's default session fuses QDQ into integer kernels: reported beside, never the reference
    assert 0 < v["onnxruntime_default_session"]["exact_fraction_vs_firmware"] <= 1.0
    assert main(["verify", str(proj)]) == 0
    again = json.loads((proj / "verification.verify.json").read_text())
    assert again["exact"] and again["reference"] == v["reference"]
    # the class agreement with the full model and onnxruntime's default session are the export's, kept
    assert again["class_agreement"] == v["class_agreement"]
    assert again["onnxruntime_default_session"] == v["onnxruntime_default_session"]
    assert {"class_agreement", "onnxruntime_default_session"} <= set(again["kept_from_export"])
    with np.load(proj / again["vectors"]["file"]) as vectors:
        assert np.array_equal(vectors["firmware"], vectors["reference"])


def test_brevitas_qonnx_export_with_a_softmax(tmp_path):
    src = brevitas_export(brevitas_mlp(), tmp_path / "b.onnx", "qonnx", softmax=True)
    _, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert v["class_agreement"]["with"].startswith("qonnx executor on the full original")


@pytest.mark.parametrize("head", ["ArgMax", "TopK", "Sigmoid"])
def test_handmade_qcdq_gemm_graph_with_a_head(tmp_path, head):
    _, v = export_firmware(qcdq_mlp(tmp_path / "m.onnx", head), tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the original QCDQ model")
    agreement = v["class_agreement"]
    assert agreement["head"][-1] == head and agreement["n_samples"] == v["n_samples"] and agreement["fraction"] >= 0.99


def test_constant_times_a_column_vector(tmp_path):
    _, v = export_firmware(qcdq_column_matmul(tmp_path / "m.onnx"), tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the original QCDQ model")


def test_unquantized_input_qkeras_shape_follows_the_refusals_advice(tmp_path, capsys):
    """QKeras quantizes weights and activations, not the input: the refusal names --input-precision, and the
    export that follows it is bit-exact with the qonnx executor on the original, on inputs of that grid."""
    src = qkeras_like_qonnx(tmp_path / "qk.onnx")
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "enters unquantized; pass --input-precision 'ap_fixed<W,I>'" in err and "\n" not in err
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p"), "--input-precision", "ap_fixed<8,3>"]) == 0
    assert "bit-exact" in capsys.readouterr().out
    v = json.loads((tmp_path / "p" / "verification.json").read_text())
    _exact(v, "qonnx executor on the QONNX model")
    assert v["class_agreement"]["head"] == ["Softmax"] and "on_grid" in v["inputs"]
    with np.load(tmp_path / "p" / v["vectors"]["file"]) as vectors:
        x = vectors["x"]
        assert np.array_equal(vectors["firmware"], vectors["reference"])
    assert len(np.unique(x)) == 256 and np.array_equal(np.floor(x * 32) / 32, x) and -4 <= x.min() <= x.max() < 4
    meta = json.loads((tmp_path / "p" / "edgeann" / "source.json").read_text())
    assert meta["input_precision"] == "ap_fixed<8,3>"
    # edgeann verify on other inputs: on the grid they verify, off it they are refused in one line
    np.save(tmp_path / "on.npy", x[:500])
    assert main(["verify", str(tmp_path / "p"), "--inputs", str(tmp_path / "on.npy")]) == 0
    np.save(tmp_path / "off.npy", x[:500] + np.float32(1 / 64))
    assert main(["verify", str(tmp_path / "p"), "--inputs", str(tmp_path / "off.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "4000 values are not values of the firmware's input type ap_fixed<8,3>" in err and "\n" not in err


def test_bipolar_annotated_input_is_the_firmwares_input_type(tmp_path):
    """A QONNX datatype annotation on an unquantized input (FINN's BIPOLAR) types the firmware's input by itself."""
    src = qkeras_like_qonnx(tmp_path / "bnn.onnx", input_datatype="BIPOLAR")
    proj, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    with np.load(proj / v["vectors"]["file"]) as vectors:
        assert set(np.unique(vectors["x"])) == {-1.0, 0.0, 1.0}
    assert json.loads((proj / "edgeann" / "source.json").read_text())["input_precision"] == "ap_fixed<2,2>"


# -- exact elementwise requantization: float scales, batch norm, zero points, signs, FINN thresholds


def test_brevitas_float_scales_batch_norm_and_2x_minus_1_input_are_bit_exact(tmp_path, capsys):
    """Learned float scales, per-channel weight scales, a BatchNorm1d before the ReLU quantizer and an input
    normalized as 2x - 1: refused without an input type (one line naming --input-precision), then, following that
    advice, the firmware equals the qonnx executor on the original on 10,000 vectors; its outputs are codes of a
    per-output float scale, recorded, and edgeann verify recomputes the same."""
    src = brevitas_qonnx(brevitas_float_scaled_mlp(), tmp_path / "b.onnx", 10)
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p")]) == 2
    assert "--input-precision 'ap_fixed<W,I>'" in capsys.readouterr().err
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p"), "--input-precision", "ap_fixed<10,2>"]) == 0
    v = json.loads((tmp_path / "p" / "verification.json").read_text())
    _exact(v, "qonnx executor on the QONNX model")
    codes = v["output_codes"]
    assert len(codes["scale"]) == 4 and 0 <= codes["max_residual_codes"] < 0.1
    graph = ir.Graph.load(tmp_path / "p" / "edgeann" / "graph.npz")
    assert [n.op for n in graph.nodes] == ["Input", "Threshold", "Dense", "Threshold", "Dense"]
    assert main(["verify", str(tmp_path / "p")]) == 0
    again = json.loads((tmp_path / "p" / "verification.verify.json").read_text())
    assert again["exact"] and again["output_codes"]["scale"] == codes["scale"]


def test_brevitas_binary_weights_sign_activations_and_zero_points_are_bit_exact(tmp_path):
    src = brevitas_qonnx(brevitas_binary_mlp(), tmp_path / "b.onnx", 8)
    proj, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None, input_precision="ap_fixed<10,4>")
    _exact(v, "qonnx executor on the QONNX model")
    assert [n.op for n in ir.Graph.load(proj / "edgeann" / "graph.npz").nodes].count("Threshold") == 4


def test_finn_multithreshold_graph_is_bit_exact(tmp_path):
    _, v = export_firmware(finn_multithreshold_mlp(tmp_path / "f.onnx"), tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert "output_codes" not in v  # integer codes of a power-of-two grid: compared as values


def test_brevitas_qcdq_export_with_float_scales_is_bit_exact(tmp_path):
    """The same float-scaled network in Brevitas' QCDQ format (QuantizeLinear / DequantizeLinear with float and
    per-axis scales): bit-exact against the qonnx executor and onnxruntime on the original."""
    src = brevitas_export(brevitas_float_scaled_mlp(), tmp_path / "q.onnx", "qcdq")
    _, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None, input_precision="ap_fixed<10,2>")
    _exact(v, "qonnx executor on the original QCDQ model")
    assert len(v["output_codes"]["scale"]) == 4


def test_trailing_tensornorm_is_left_to_the_reference_with_scale_and_offset(tmp_path):
    """A float Mul + Add after the last product with no quantizer (FINN's TensorNorm): the firmware ends at the
    exact accumulator; its scale and offset are recorded and the original's outputs are compared as codes."""
    from tests.frontends.test_requant import _trailing

    proj, v = export_firmware(_trailing(tmp_path, relu=False), tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert v["output_codes"]["offset"] != [0.0, 0.0] and v["output_codes"]["max_residual_codes"] < 1e-3
    meta = json.loads((proj / "edgeann" / "source.json").read_text())
    assert meta["output_lsb"] == 0.25 and meta["output_offset"] == v["output_codes"]["offset"]


def test_threshold_layers_in_io_stream_are_bit_exact(tmp_path):
    """The threshold layer reads and writes hls4ml's streams of packs too (here packs of a whole Dense output)."""
    src = finn_multithreshold_mlp(tmp_path / "f.onnx")
    proj, v = export_firmware(src, tmp_path / "p", {"io_type": "io_stream"}, echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert json.loads((proj / "report.json").read_text())["options"]["io_type"] == "io_stream"


def test_keras_style_float_cnn_example_is_bit_exact_with_its_distance_to_the_float_model(tmp_path):
    """`edgeann examples`' float Keras CNN (tf2onnx shape: Transpose, SAME Conv, MaxPool, Softmax) with --precision:
    the firmware equals the fixed-point reference, and its distance and class agreement to the float original are
    reported on standard-normal inputs."""
    from edgeann.examples import keras_float_cnn

    proj, v = export_firmware(keras_float_cnn(tmp_path / "k.onnx"), tmp_path / "p", echo=lambda *a: None,
                              precision="ap_fixed<16,6>")
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    d = v["distance_to_float_model"]
    assert d["max_abs_diff"] < 0.1 and d["class_agreement"] >= 0.99 and "the same class on" in v["summary"]
    assert v["class_agreement"]["head"] == ["Softmax"]
    assert [n.op for n in ir.Graph.load(proj / "edgeann" / "graph.npz").nodes].count("Conv") == 2
