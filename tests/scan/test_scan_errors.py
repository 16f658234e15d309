"""Bad input to `edgeann scan`: one line, exit 2, before any trial, and nothing of an existing scan lost."""

from __future__ import annotations

import copy
import json
import socket
import sys

import pytest
import yaml

from edgeann.cli import main

from .test_scan import TINY_SCAN_FLOW, TINY_SPACE


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("edgeann: error: ") and "\n" not in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def flow(tmp_path):
    path = tmp_path / "tiny_scan.yaml"
    path.write_text(yaml.safe_dump(TINY_SCAN_FLOW, sort_keys=False))
    return path


def space_file(tmp_path, text_or_tree) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text_or_tree if isinstance(text_or_tree, str) else yaml.safe_dump(text_or_tree, sort_keys=False))
    return str(path)


def with_parameter(key, dim):
    tree = copy.deepcopy(TINY_SPACE)
    tree["parameters"][key] = dim
    return tree


@pytest.mark.parametrize("space, fragments", [
    ("parameters: [a, b\n", ["malformed YAML"]),
    ("", ["the space file is empty"]),
    ({"parameters": {}}, ["parameters", "at least 1 item"]),
    ({**TINY_SPACE, "objective": []}, ["objective", "unknown key"]),
    (with_parameter("quantization.wieght_bits", {"choices": [4, 6]}),
     ["parameters.quantization.wieght_bits = 4", "unknown key quantization.wieght_bits"]),
    (with_parameter("quantization.weight_bits", {"choices": []}), ["parameters.quantization.weight_bits", "at least 1"]),
    (with_parameter("quantization.weight_bits", {"type": "int", "low": 4, "high": 12}),
     ["parameters.quantization.weight_bits = 12", "less than or equal to 8"]),
    (with_parameter("pruning.target_sparsity", {"type": "float", "low": 0.0, "high": 0.5}),
     ["parameters.pruning.target_sparsity = 0.0", "needs a target_sparsity"]),
    (with_parameter("quantization.weight_bits", {"type": "int", "low": 8, "high": 4}),
     ["parameters.quantization.weight_bits", "high (4) is below low (8)"]),
    (with_parameter("quantization.layers.fc9.weight_bits", {"choices": [4, 8]}),
     ["parameters.quantization.layers.fc9.weight_bits = 4", "fc9"]),
    ({**TINY_SPACE, "constraints": ["luts <= 3"]}, ["unknown name 'luts'", "lut, ff, latency_cycles"]),
    ({**TINY_SPACE, "objectives": [{"maximize": "accuracy", "minimize": "bops"}]}, ["exactly one of maximize or minimize"]),
])
def test_bad_space_files(capsys, tmp_path, flow, space, fragments):
    out = tmp_path / "s"
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, space), "--out", out, "-q")
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_missing_space_file(capsys, tmp_path, flow):
    code, err = run_cli(capsys, "scan", flow, "--space", tmp_path / "nope.yaml", "--out", tmp_path / "s")
    assert_one_line_error(code, err, "space file", "nope.yaml not found")


@pytest.mark.parametrize("args, fragments", [
    (["--trials", "0"], ["--trials 0: give at least 1"]),
    (["--workers", "999"], ["--workers 999 is more than the"]),
])
def test_bad_counts(capsys, tmp_path, flow, args, fragments):
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, TINY_SPACE), "--out", tmp_path / "s", *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "s").exists()


def test_ray_missing_says_how_to_install_it(capsys, tmp_path, flow, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, TINY_SPACE), "--out", tmp_path / "s",
                        "--ray")
    assert_one_line_error(code, err, "pip install -e '.[ray]'")
    assert not (tmp_path / "s").exists()


def test_unreachable_ray_address(capsys, tmp_path, flow):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e '.[ray]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, TINY_SPACE), "--out", tmp_path / "s",
                        "--ray", f"127.0.0.1:{port}")
    assert_one_line_error(code, err, f"cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert not (tmp_path / "s").exists()


def test_a_folder_holding_another_study_is_left_alone(capsys, tmp_path, flow):
    out = tmp_path / "s"
    out.mkdir()
    meta = {"flow_path": str(flow), "overrides": [], "flow": {"name": "other"}, "space": {}}
    (out / "scan.json").write_text(json.dumps(meta))
    (out / "journal.log").write_text("precious")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, TINY_SPACE), "--out", out)
    assert_one_line_error(code, err, f"{out} holds another study", "choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "scan.json").unlink()  # a folder that is no scan at all
    code, err = run_cli(capsys, "scan", flow, "--space", space_file(tmp_path, TINY_SPACE), "--out", out)
    assert_one_line_error(code, err, "is not a scan folder")
    assert (out / "journal.log").read_text() == "precious"
