"""Bad input ends in one line naming the problem and exit status 2, and nothing is overwritten."""

import subprocess
import sys

import numpy as np
import pytest

from edgeann.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("edgeann: error: ") and "\n" not in err and "Traceback" not in err
    for f in fragments:
        assert f in err, err


def test_unknown_key_from_the_real_entry_point(make_flow, tiny_flow_tree, tmp_path):
    tiny_flow_tree["training"]["epoch"] = 3
    flow = make_flow(tiny_flow_tree)
    proc = subprocess.run([sys.executable, "-m", "edgeann", "train", str(flow), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "unknown key training.epoch" in err and str(flow) in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("tree_edit, fragments", [
    (lambda t: t.update(data={"source": "npz", "path": "/nonexistent/data.npz"}), ["data file /nonexistent/data.npz not found"]),
    (lambda t: t["quantization"].update(weight_bits=12), ["quantization.weight_bits", "less than or equal to 8"]),
    (lambda t: t["pruning"].update(target_sparsity=1.5), ["pruning.target_sparsity"]),
    (lambda t: t.update(extra_section={}), ["unknown key extra_section"]),
])
def test_flow_problems(capsys, make_flow, tiny_flow_tree, tmp_path, tree_edit, fragments):
    tree_edit(tiny_flow_tree)
    code, err = run_cli(capsys, "train", str(make_flow(tiny_flow_tree)), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()


def test_malformed_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {family: mlp\n")
    assert_one_line_error(*run_cli(capsys, "train", str(bad)), "bad.yaml", "malformed YAML")


def test_missing_flow_file(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", str(tmp_path / "nope.yaml")), "nope.yaml not found")


@pytest.mark.parametrize("make_data, fragments", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 17, np.nan, x), y), ["contain NaN or Inf", "row 1"]),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 3, np.inf, x), y), ["NaN or Inf", "row 0"]),
    (lambda x, y: (x, np.where(np.arange(len(y)) == 5, 7, y)), ["label(s) outside 0..4", "row 5"]),
])
def test_bad_data(capsys, make_flow, tiny_flow_tree, tmp_path, make_data, fragments):
    rng = np.random.default_rng(0)
    x, y = make_data(rng.normal(size=(500, 16)), rng.integers(0, 5, 500))
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(list("gqwzt")))
    tiny_flow_tree["data"] = {"source": "npz", "path": str(tmp_path / "d.npz")}
    code, err = run_cli(capsys, "train", str(make_flow(tiny_flow_tree)), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, str(tmp_path / "d.npz"), *fragments)
    assert not (tmp_path / "r").exists()


def test_corrupt_data_file(capsys, make_flow, tiny_flow_tree, tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 garbage")
    tiny_flow_tree["data"] = {"source": "npz", "path": str(tmp_path / "d.npz")}
    code, err = run_cli(capsys, "train", str(make_flow(tiny_flow_tree)), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "not a readable .npz file")


def test_existing_run_directory_needs_force(capsys, tiny_flow, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.json").write_text("precious")
    assert_one_line_error(*run_cli(capsys, "train", str(tiny_flow), "--out", str(run), "-q"), "already exists", "--force")
    assert (run / "metrics.json").read_text() == "precious"


def test_resume_without_checkpoint_and_force_with_resume(capsys, tiny_flow, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", str(tiny_flow), "--out", str(tmp_path / "r"), "--resume"),
                          "cannot resume")
    assert_one_line_error(*run_cli(capsys, "train", str(tiny_flow), "--force", "--resume"), "exclude each other")


def test_cuda_requested_without_cuda(capsys, tiny_flow, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = run_cli(capsys, "train", str(tiny_flow), "--device", "cuda", "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "CUDA is not available")
    assert not (tmp_path / "r").exists()


def test_usage_errors_are_one_line(capsys):
    assert_one_line_error(*run_cli(capsys, "train", "--epochs", "zero"), "--epochs")
    assert_one_line_error(*run_cli(capsys, "no-such-command"), "No such command")
    assert_one_line_error(*run_cli(capsys, "train", "--set", "novalue"), "expected key.path=value")


def test_flow_typo_is_reported_before_the_heavy_imports(make_flow, tiny_flow_tree, tmp_path):
    """A typo must come back in about a second: the flow is validated before torch or Brevitas are imported."""
    tiny_flow_tree["data"]["bogus"] = 1
    flow = make_flow(tiny_flow_tree)
    code = ("import sys; from edgeann.cli import main; rc = main(['train', sys.argv[1], '--out', sys.argv[2]]); "
            "print(rc, sorted(m for m in ('torch', 'brevitas', 'onnxruntime', 'hls4ml') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(flow), str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split() == ["2", "[]"], proc.stdout + proc.stderr
    assert "unknown key data.bogus" in proc.stderr


@pytest.mark.parametrize("override, fragments", [
    ("quantization.layers.fc9.weight_bits=8", ["quantization.layers: no layer named fc9", "fc1, fc2, fc3"]),
    ("pruning.exclude=[fc9]", ["pruning.exclude: no layer named fc9", "fc1, fc2, fc3"]),
])
def test_unknown_layer_names_are_refused_before_anything_is_written(capsys, tiny_flow, tmp_path, override, fragments):
    code, err = run_cli(capsys, "train", str(tiny_flow), "--set", override, "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()


def test_known_layer_names_are_accepted(tiny_flow):
    from edgeann.config import load_flow
    from edgeann.models import check_layer_names, create_model

    flow = load_flow(tiny_flow, ["quantization.layers.fc2.weight_bits=3", "pruning.exclude=fc1,fc3"])
    model = create_model(flow.model, (16,), 5, flow.quantization)
    check_layer_names(model, flow.quantization, flow.pruning)
    assert flow.pruning.exclude == ["fc1", "fc3"] and model.quant_layer_names == ["fc1", "fc2", "fc3"]
    assert model.layers.fc2.quant_weight().bit_width.item() == 3


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edgeann {version('edgeann')}"


def test_flow_key_reference_command(capsys):
    assert main(["keys", "pruning"]) == 0
    out = capsys.readouterr().out
    assert "`pruning.target_sparsity`" in out and "`training.lr`" not in out
    assert_one_line_error(*run_cli(capsys, "keys", "prunning"), "no flow section 'prunning'", "pruning")


def test_examples_writes_the_foreign_models_and_keeps_existing_ones(tmp_path, capsys):
    assert main(["examples", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert files == ["brevitas_float_scales.onnx", "finn_binary.onnx", "finn_thresholds.onnx", "keras_cnn.onnx",
                     "qkeras_mlp.onnx"]
    assert f"edgeann export {tmp_path / 'ex' / 'qkeras_mlp.onnx'} --fpga --input-precision 'ap_fixed<8,3>'" in out
    before = (tmp_path / "ex" / "qkeras_mlp.onnx").read_bytes()
    assert main(["examples", str(tmp_path / "ex")]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists; use --force" in err and "\n" not in err
    assert (tmp_path / "ex" / "qkeras_mlp.onnx").read_bytes() == before
