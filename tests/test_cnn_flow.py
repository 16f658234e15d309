"""The jet CNN flow end to end on a small generated sample: QAT + pruning -> exact ONNX/QONNX -> io_stream firmware
-> g++ C simulation bit-exact against onnxruntime -> report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeann.config import load_flow
from edgeann.pipeline import export_firmware, train_run

N_PER_CLASS = 30  # jets per class: 150 generated jets, 30 in the test split


@pytest.fixture(scope="module")
def jet_file(tmp_path_factory):
    from edgeann.data.jets import generate_jets

    return generate_jets(tmp_path_factory.mktemp("jets") / "jets.h5", N_PER_CLASS, seed=4, workers=2, progress=False)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, jet_file):
    overrides = [f"data.path={jet_file}", f"data.n_per_class={N_PER_CLASS}", "training.batch_size=32"]
    flow = load_flow("jet_cnn", overrides, epochs=2, device="cpu")
    return train_run(flow, tmp_path_factory.mktemp("cnn") / "run", progress=False)


def test_training_exports_exactly(cnn_run):
    m = json.loads((cnn_run / "metrics.json").read_text())
    assert m["family"] == "cnn" and m["test"]["n_samples"] == N_PER_CLASS
    for check in ("onnxruntime_vs_pytorch", "graph_vs_pytorch", "qonnx_vs_pytorch"):
        assert m["export"][check]["exact"], check
    assert np.load(cnn_run / "test_data.npz")["x"].shape[1:] == (16, 16, 1)  # channels-last images
    assert m["sparsity"]["total"] == pytest.approx(0.5, abs=0.01)
    assert m["sparsity"]["layers"]["conv2"] > 0  # convolution kernels are pruned too
    assert m["bit_widths"]["conv1"]["weight"] == 6


@pytest.mark.csim
def test_firmware_is_bit_exact_and_reported(tmp_path, cnn_run):
    project, result = export_firmware(cnn_run, tmp_path / "prj", min_vectors=2000, echo=lambda *a: None)
    assert result["exact"] and result["exact_fraction"] == 1.0 and result["mismatches"] == 0
    assert result["n_samples"] >= 2000 and result["inputs"]["data"] == N_PER_CLASS
    assert json.loads((project / "verification.json").read_text())["firmware_sha256"] == result["firmware_sha256"]
    twin = result["distance_to_float_twin"]  # what fixed point costs, against float convolutions with the same weights
    assert twin["available"] and twin["n_samples"] == N_PER_CLASS
    assert 0 < twin["mean_abs_diff"] <= twin["max_abs_diff"] and 0 <= twin["accuracy_float"] <= 1
    report = json.loads((project / "report.json").read_text())
    assert report["options"]["io_type"] == "io_stream"
    rows = {r["layer"]: r for r in report["layers"]}
    assert rows["conv2"]["op"] == "Conv" and rows["conv2"]["positions"] == 36
    assert report["totals"]["macs_saved_by_pruning"] > 0 and report["totals"]["multiplications_saved_by_pruning"] > 0
    assert report["latency_estimate"]["cycles"] > 16 * 16
