"""The train stage end to end on the tiny synthetic flow (real Brevitas, onnxruntime and qonnx)."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeann.backends import onnx_qcdq
from edgeann.config import load_flow
from edgeann.errors import EdgeannError
from edgeann.export import torch_reference
from edgeann.pipeline import train_run
from edgeann.train import build_model, load_checkpoint


def test_run_directory_has_every_artifact(trained_run):
    for name in ["flow.yaml", "scaler.json", "metrics.json", "history.json", "model.onnx", "model.qonnx.onnx",
                 "graph.npz", "test_data.npz", "learning_curves.png", "roc_curves.png",
                 "checkpoints/best.pt", "checkpoints/last.pt"]:
        assert (trained_run / name).is_file(), name


def test_training_learns_well_above_chance(trained_run):
    m = json.loads((trained_run / "metrics.json").read_text())
    assert m["test"]["accuracy"] > 0.6  # five classes: chance is 0.2
    assert set(m["test"]["roc_auc"]) == {"g", "q", "w", "z", "t"}
    assert m["test"]["roc_auc_mean"] > 0.8
    assert m["sparsity"]["total"] == pytest.approx(0.5, abs=0.01)
    assert set(m["sparsity"]["layers"]) == {"fc1", "fc2", "fc3"}
    assert m["bit_widths"]["fc1"]["weight"] == 6 and m["bops"] > 0
    assert m["best_epoch"] is not None


def test_metrics_record_exact_onnxruntime_agreement(trained_run):
    m = json.loads((trained_run / "metrics.json").read_text())
    check = m["export"]["onnxruntime_vs_pytorch"]
    n_test = len(np.load(trained_run / "test_data.npz")["y"])
    assert m["onnx_exact"] is True and check["exact"] is True
    assert check["n_samples"] == n_test and check["mismatches"] == 0
    assert m["export"]["qonnx_vs_pytorch"]["exact"] is True


def test_onnx_equals_the_best_checkpoint_independently(trained_run):
    flow = load_flow(trained_run / "flow.yaml")
    data = np.load(trained_run / "test_data.npz")
    model = build_model(flow, data["x"].shape[1:], len(data["classes"]))
    model.load_state_dict(load_checkpoint(trained_run / "checkpoints" / "best.pt")["model"])
    ref = torch_reference(model.eval(), data["x"])
    assert np.array_equal(onnx_qcdq.run(trained_run / "model.onnx", data["x"]), ref)


def test_pruned_weights_are_zero_in_every_artifact(trained_run):
    flow = load_flow(trained_run / "flow.yaml")
    data = np.load(trained_run / "test_data.npz")
    model = build_model(flow, data["x"].shape[1:], len(data["classes"]))
    model.load_state_dict(load_checkpoint(trained_run / "checkpoints" / "best.pt")["model"])
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(trained_run / "model.onnx").graph.initializer}
    qonnx_consts = [numpy_helper.to_array(t) for t in onnx.load(trained_run / "model.qonnx.onnx").graph.initializer]
    for name, layer in model.prunable().items():
        pruned = ~layer.weight_mask.numpy()
        assert pruned.any()
        assert np.all(inits[f"{name}/weight_int"][pruned] == 0)
        matches = [c for c in qonnx_consts if c.shape == tuple(layer.weight.shape[::-1]) or c.shape == tuple(layer.weight.shape)]
        assert any(np.all((c.T if c.shape != pruned.shape else c)[pruned] == 0) for c in matches)


def test_existing_run_is_refused_and_left_untouched(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "metrics.json").read_bytes()
    flow = load_flow(run / "flow.yaml")
    with pytest.raises(EdgeannError, match="already exists; use --force"):
        train_run(flow, run, progress=False)
    assert (run / "metrics.json").read_bytes() == before


def test_resume_continues_from_the_last_checkpoint(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    flow = load_flow(run / "flow.yaml", epochs=8)
    train_run(flow, run, resume=True, progress=False)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert json.loads((run / "metrics.json").read_text())["onnx_exact"] is True
    changed = load_flow(run / "flow.yaml", ["model.hidden=[8]"], epochs=9)
    with pytest.raises(EdgeannError, match="model section"):
        train_run(changed, run, resume=True, progress=False)


def test_corrupt_checkpoint_is_named(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    flow = load_flow(run / "flow.yaml", epochs=8)
    with pytest.raises(EdgeannError, match="last.pt is corrupt"):
        train_run(flow, run, resume=True, progress=False)
    torch.save({"something": 1}, run / "checkpoints" / "last.pt")
    with pytest.raises(EdgeannError, match="not an edgeann checkpoint"):
        load_checkpoint(run / "checkpoints" / "last.pt")


def test_float_baseline_trains_without_export(make_flow, tiny_flow_tree, tmp_path, capsys):
    from edgeann.cli import main

    tiny_flow_tree["quantization"] = {"enabled": False}
    tiny_flow_tree["training"]["epochs"] = 3
    run = train_run(load_flow(make_flow(tiny_flow_tree)), tmp_path / "float", progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["quantized"] is False and m["test"]["accuracy"] > 0.5 and not (run / "model.onnx").exists()
    assert main(["export", str(run), "--fpga", "--out", str(tmp_path / "p")]) == 2
    assert "float baseline" in capsys.readouterr().err
