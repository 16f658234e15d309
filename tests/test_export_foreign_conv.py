"""edgeann export --fpga on foreign convolutional models: the firmware's C simulation equals the original model on
>= 10,000 vectors, fed in the model's own layout (a channels-first model gets the firmware's channels-last inputs
transposed, as ``source.json`` records)."""

import json

import numpy as np
import pytest

from edgeann.cli import main
from edgeann.pipeline import export_firmware
from tests.frontends.conv_models import brevitas_cnn_export, float_pool_cnn, keras_float_cnn

pytestmark = pytest.mark.csim


def _exact(v: dict, reference: str) -> None:
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    assert v["reference"] == reference and all(c["exact"] for c in v["comparisons"].values())


def test_brevitas_qonnx_cnn_is_bit_exact_and_verify_reuses_the_layout(tmp_path):
    src = brevitas_cnn_export(tmp_path / "cnn.onnx", d=2)
    proj, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert json.loads((proj / "edgeann" / "source.json").read_text())["input_perm"] == [0, 3, 1, 2]
    firmware_input = json.loads((proj / "report.json").read_text())["input"]["firmware_input"]
    assert "read channels-last (6, 6, 2) (the model's channels-first input transposed by (0, 3, 1, 2))" in firmware_input
    assert main(["verify", str(proj)]) == 0
    assert json.loads((proj / "verification.verify.json").read_text())["exact"]


@pytest.mark.parametrize("kw", [dict(d=1), dict(d=2, residual=True)], ids=["conv1d", "residual"])
def test_brevitas_qonnx_conv1d_and_residual_are_bit_exact(tmp_path, kw):
    src = brevitas_cnn_export(tmp_path / "cnn.onnx", **kw)
    _, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")


def test_keras_style_float_cnn_with_precision(tmp_path):
    src = keras_float_cnn(tmp_path / "k.onnx", d=2)
    proj, v = export_firmware(src, tmp_path / "p", precision="ap_fixed<16,6>", echo=lambda *a: None)
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    assert json.loads((proj / "edgeann" / "source.json").read_text())["input_perm"] is None
    dist = v["distance_to_float_model"]
    assert dist["precision"] == "ap_fixed<16,6>" and 0 <= dist["max_abs_diff"] < 0.1


def test_channels_first_float_cnn_with_precision(tmp_path):
    """Conv (pads) -> Relu -> GlobalAveragePool -> Gemm, input (N, 2, 8, 8): the firmware reads (8, 8, 2), the
    float model is fed the transposed vectors, also for the distance to the float model."""
    src = float_pool_cnn(tmp_path / "m.onnx", "GlobalAveragePool")
    proj, v = export_firmware(src, tmp_path / "p", precision="ap_fixed<16,6>", echo=lambda *a: None)
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    assert json.loads((proj / "edgeann" / "source.json").read_text())["input_perm"] == [0, 3, 1, 2]
    assert 0 <= v["distance_to_float_model"]["max_abs_diff"] < 0.1


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_brevitas_cnn_with_float_scales_is_bit_exact(tmp_path, io_type):
    """Brevitas' default float scales (per-channel weights), BatchNorm2d, MaxPool and AvgPool, float biases: integer
    convolutions, Threshold layers on their channels-last outputs (in io_stream: one pixel's channels per pack),
    outputs as codes of a float scale."""
    from tests.frontends.conv_models import brevitas_float_cnn

    src = brevitas_float_cnn(True, tmp_path / "cnn.onnx")
    _, v = export_firmware(src, tmp_path / "p", {"io_type": io_type}, input_precision="ap_fixed<10,3>",
                           echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    assert v["output_codes"]["offset"] is not None


def test_a_channels_first_feature_map_output_is_compared_channels_last(tmp_path):
    """An output feature map (N, C, H, W): the firmware's is channels-last (H, W, C); the original's outputs are
    transposed by the output_perm in source.json before the comparison. (It was refused.)"""
    from tests.frontends.conv_models import brevitas_feature_map_cnn

    src = brevitas_feature_map_cnn(tmp_path / "fm.onnx")
    proj, v = export_firmware(src, tmp_path / "p", input_precision="ap_fixed<10,3>", echo=lambda *a: None)
    _exact(v, "qonnx executor on the QONNX model")
    meta = json.loads((proj / "edgeann" / "source.json").read_text())
    assert meta["output_perm"] == [0, 2, 3, 1] and meta["input_perm"] == [0, 3, 1, 2]
