"""edgeann export --fpga / verify: real hls4ml projects compiled with g++, checked bit for bit."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeann.cli import main
from edgeann.errors import EdgeannError
from edgeann.backends.hls import firmware_files
from edgeann.pipeline import export_firmware

pytestmark = pytest.mark.csim


@pytest.fixture(scope="module")
def project(exported_project):
    return exported_project


def test_run_export_is_bit_exact_over_10000_vectors(project):
    v = json.loads((project / "verification.json").read_text())
    assert v["exact"] is True and v["exact_fraction"] == 1.0 and v["mismatches"] == 0
    assert v["n_samples"] >= 10_000 and v["n_outputs"] == v["n_samples"] * 5
    assert v["max_abs_diff"] == 0.0 and v["max_lsb_diff"] == 0.0
    assert v["reference"].startswith("onnxruntime") and len(v["firmware_sha256"]) == 64
    assert v["inputs"]["data"] == 600 and v["inputs"]["edge"] > 100  # the whole test split, plus edges
    assert "bit-exact" in v["summary"]


def test_report_without_vendor_tools(project):
    r = json.loads((project / "report.json").read_text())
    layers = {row["layer"]: row for row in r["layers"]}
    assert set(layers) == {"fc1", "fc2", "fc3"}
    for row in layers.values():
        assert row["bops"] > 0 and row["multiplications"] <= row["nonzero_weights"] < row["n_weights"]
        assert row["multipliers"] == row["multiplications"]  # reuse factor 1: one multiplier per product
    assert r["totals"]["multiplications_saved_by_pruning"] > 0
    lat = r["latency_estimate"]
    assert lat["cycles"] == sum(lat["per_layer"].values()) > 0 and lat["ns"] == lat["cycles"] * 5.0
    assert r["synthesis"] == {"status": "not requested"}


def test_export_is_deterministic(trained_run, project, tmp_path):
    again = tmp_path / "again"
    export_firmware(trained_run, again, echo=lambda *a: None)
    first = json.loads((project / "verification.json").read_text())["firmware_sha256"]
    assert json.loads((again / "verification.json").read_text())["firmware_sha256"] == first
    a, b = firmware_files(project), firmware_files(again)
    assert [p.relative_to(project) for p in a] == [p.relative_to(again) for p in b]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
    # built in a staging folder and renamed: the same firmware as writing the project directly in place
    from edgeann import ir
    from edgeann.backends.hls import firmware_sha256, write_project
    from edgeann.pipeline import hls_options
    from edgeann.config import load_flow

    graph = ir.Graph.load(trained_run / "graph.npz")
    direct = write_project(graph, tmp_path / "direct", hls_options(load_flow(trained_run / "flow.yaml").fpga, graph.name))
    assert firmware_sha256(direct.path) == first


def test_existing_project_is_refused_then_forced(trained_run, project, tmp_path, capsys):
    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    before = (copy / "verification.json").read_bytes()
    assert main(["export", str(trained_run), "--fpga", "--out", str(copy)]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert (copy / "verification.json").read_bytes() == before
    assert main(["export", str(trained_run), "--fpga", "--out", str(copy), "--force", "--synth", "--reuse-factor", "2"]) == 0
    out = capsys.readouterr().out
    assert "synthesis skipped" in out and "bit-exact" in out
    report = json.loads((copy / "report.json").read_text())
    assert report["synthesis"]["status"] == "skipped" and report["options"]["reuse_factor"] == 2
    assert str(copy) in report["synthesis"]["reason"]  # run in the published project, not the staging folder
    reuse1 = json.loads((project / "report.json").read_text())
    assert [r["multiplications"] for r in report["layers"]] == [r["multiplications"] for r in reuse1["layers"]]
    assert [r["multipliers"] for r in report["layers"]] == [-(-r["multiplications"] // 2) for r in reuse1["layers"]]
    assert report["totals"]["multipliers"] == sum(r["multipliers"] for r in report["layers"])
    assert report["totals"]["multipliers"] < reuse1["totals"]["multipliers"] == reuse1["totals"]["multiplications"]


def test_verify_reruns_the_check_into_its_own_record(project, tmp_path, capsys):
    work = tmp_path / "p"
    shutil.copytree(project, work)
    exported = (work / "verification.json").read_bytes()
    assert main(["verify", str(work)]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out and str(work / "verification.verify.json") in out
    again = json.loads((work / "verification.verify.json").read_text())
    first = json.loads(exported)
    assert again["n_samples"] == first["n_samples"] and again["firmware_sha256"] == first["firmware_sha256"]
    # what verify does not recompute is carried over, and said so
    assert again["distance_to_float_twin"] == first["distance_to_float_twin"]
    assert again["testbench"] == first["testbench"]
    assert set(again["kept_from_export"]) == {"distance_to_float_twin", "testbench"}
    assert {k: v for k, v in again.items() if k not in first} == {"kept_from_export": again["kept_from_export"]}
    # each record names the .npz of its inputs and outputs; the comparison recomputes from it alone
    for record in (first, again):
        with np.load(work / record["vectors"]["file"]) as vectors:
            assert set(vectors.files) == {"x", "firmware", "reference"} == set(record["vectors"]["arrays"])
            assert len(vectors["x"]) == len(vectors["firmware"]) == record["n_samples"]
            assert vectors["firmware"].size == record["n_outputs"]
            assert record["exact"] and np.array_equal(vectors["firmware"], vectors["reference"])
    assert first["vectors"]["file"] == "edgeann/verification.npz"
    assert again["vectors"]["file"] == "edgeann/verification.verify.npz"
    with np.load(work / "edgeann" / "verification.npz") as a, np.load(work / "edgeann" / "verification.verify.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("x", "firmware", "reference"))
    x = np.random.default_rng(5).normal(0, 3, (777, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["verify", str(work), "--inputs", str(tmp_path / "x.npy")]) == 0
    assert str(work / "verification.x.json") in capsys.readouterr().out
    v = json.loads((work / "verification.x.json").read_text())
    assert v["n_samples"] == 777 and v["exact"] and v["inputs"]["file"].endswith("x.npy")
    assert v["vectors"]["file"] == "edgeann/verification.x.npz"
    with np.load(work / v["vectors"]["file"]) as vectors:
        assert np.array_equal(vectors["x"], x) and np.array_equal(vectors["firmware"], vectors["reference"])
    # the export's record, with its distance to the float twin and 10,000 vectors, is untouched
    assert (work / "verification.json").read_bytes() == exported and "distance_to_float_twin" in first
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    assert main(["verify", str(work), "--inputs", str(tmp_path / "bad.npy")]) == 2
    assert "do not fit the model input" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2


def test_brevitas_qonnx_as_a_foreign_model(trained_run, tmp_path):
    proj, v = export_firmware(trained_run / "model.qonnx.onnx", tmp_path / "q", echo=lambda *a: None)
    assert v["exact"] and v["reference"].startswith("qonnx executor")
    assert all(c["exact"] for c in v["comparisons"].values()) and len(v["comparisons"]) == 2
    firmware_input = json.loads((proj / "report.json").read_text())["input"]
    assert firmware_input["scaling_header"] is None and "no scaler" in firmware_input["reason"]
    assert not (proj / "edgeann" / "input_scaling.h").exists()


def _qonnx_model(path, scale=0.25, act_bits=6.0, rounding="ROUND"):
    """A small foreign QONNX MLP: ROUND activations, BipolarQuant and 4-bit weights, MatMul + Add."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.normal(size=(8, 6)).astype(np.float32), "w2": rng.normal(size=(6, 3)).astype(np.float32),
        "b1": (rng.integers(-8, 8, 6) / 64).astype(np.float32), "zero": np.float32(0.0),
        "s_in": np.float32(scale), "s_act": np.float32(0.125), "s_w1": np.float32(1.0), "s_w2": np.float32(0.25),
        "bits8": np.float32(8), "bits_act": np.float32(act_bits), "bits4": np.float32(4),
    }
    q = dict(domain="qonnx.custom_op.general")
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "zero", "bits8"], ["xq"], signed=1, narrow=0, rounding_mode=rounding, **q),
        helper.make_node("BipolarQuant", ["w1", "s_w1"], ["w1q"], **q),
        helper.make_node("MatMul", ["xq", "w1q"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Quant", ["r", "s_act", "zero", "bits_act"], ["rq"], signed=0, narrow=0, rounding_mode=rounding, **q),
        helper.make_node("Quant", ["w2", "s_w2", "zero", "bits4"], ["w2q"], signed=1, narrow=1, rounding_mode="ROUND", **q),
        helper.make_node("MatMul", ["rq", "w2q"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)])
    onnx.save(model, path)
    return path


def test_handmade_qonnx_with_round_half_even_and_bipolar_weights(tmp_path):
    src = _qonnx_model(tmp_path / "foreign.onnx")
    _, v = export_firmware(src, tmp_path / "p", echo=lambda *a: None)
    assert v["exact"] and v["n_samples"] >= 10_000
    assert v["comparisons"]["onnxruntime on model.onnx (QCDQ)"]["exact"]


def test_float_onnx_with_post_training_precision(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    torch.onnx.export(net, torch.zeros(1, 10), str(tmp_path / "float.onnx"), dynamo=False)
    _, v = export_firmware(tmp_path / "float.onnx", tmp_path / "p", precision="ap_fixed<16,6>", echo=lambda *a: None)
    assert v["exact"]
    assert 0 < v["distance_to_float_model"]["max_abs_diff"] < 0.05


def test_input_quantizer_with_a_float_scale_follows_the_refusals_advice(tmp_path, capsys):
    """An input Quant whose scale is no power of two: refused in one line naming the scale and --input-precision;
    with that option the quantizer becomes thresholds on the named input type and the export runs."""
    src = _qonnx_model(tmp_path / "m.onnx", scale=0.3)
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "scale 0.30000001192092896" in err and "--input-precision 'ap_fixed<W,I>'" in err and "\n" not in err
    # not bit-exact against the original: exit status 1 (0 only with --allow-mismatch), the project kept
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p"), "--input-precision", "ap_fixed<10,6>"]) == 1
    v = json.loads((tmp_path / "p" / "verification.json").read_text())
    # scale 0.3 with biases on 1/64: x * 0.3 + b lands within float32 rounding of the next quantizer's half-way
    # points, where the original's order of float32 sums decides; the firmware equals the graph exactly, the
    # original on all but those vectors, and the export says why
    assert v["comparisons"]["onnxruntime on model.onnx (QCDQ)"]["exact"] and v["n_samples"] >= 10_000
    assert v["near_float_ties"]["steps"] and 0.99 < v["exact_fraction"] < 1.0
    assert "lie within float32 rounding of the original's sums" in v["summary"]


@pytest.mark.parametrize("make, fragment", [
    (lambda p: _qonnx_model(p, act_bits=2.5), "bit width 2.5 cannot be represented"),
    (lambda p: _qonnx_model(p, rounding="CEIL"), "rounding_mode CEIL is not supported"),
    (lambda p: (p.write_bytes(b"not onnx"), p)[1], "not a valid ONNX model"),
])
def test_bad_foreign_models_end_in_one_line(tmp_path, capsys, make, fragment):
    src = make(tmp_path / "m.onnx")
    assert main(["export", str(src), "--fpga", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not (tmp_path / "p").exists()


def test_onnx_model_zoo_mnist_cnn_is_read(tmp_path):
    """A public third-party model: the ONNX model zoo's MNIST CNN (shipped with qonnx; Conv with SAME_UPPER padding,
    MaxPool, a Reshape that fixes the batch to one) as post-training fixed point. Its firmware export (bit-exact with
    onnxruntime on model.onnx, 4 minutes of g++) is in the README; here the graph against the float original."""
    import qonnx

    from edgeann.backends import onnx_qcdq
    from edgeann.frontends.onnx import parse_precision, read_foreign

    mnist = __import__("pathlib").Path(qonnx.__file__).parent / "data" / "onnx" / "mnist-conv" / "model.onnx"
    foreign = read_foreign(mnist, parse_precision("ap_fixed<16,6>"))
    assert {"Conv", "MaxPool", "Dense"} <= {n.op for n in foreign.graph.nodes} and foreign.input_perm == (0, 3, 1, 2)
    x = np.random.default_rng(0).uniform(0, 1, (200, 28, 28, 1)).astype(np.float32)
    fixed = foreign.graph.predict(x).reshape(len(x), -1)
    original = onnx_qcdq.run_any(mnist, np.transpose(x, foreign.input_perm)).reshape(len(x), -1)
    assert np.abs(fixed - original).max() < 0.5 and np.mean(fixed.argmax(1) == original.argmax(1)) >= 0.98


def test_option_errors(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), "--fpga", "--precision", "ap_fixed<16,6>", "--out", str(tmp_path / "p")]) == 2
    assert "--precision is for float ONNX models" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--fpga", "--input-precision", "ap_fixed<8,3>", "--out", str(tmp_path / "p")]) == 2
    assert "--input-precision is for foreign quantized ONNX models" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--fpga"]) == 2
    assert main(["export", str(trained_run)]) == 2
    assert "add --fpga" in capsys.readouterr().err
    with pytest.raises(EdgeannError, match="expected ap_fixed"):
        export_firmware(tmp_path / "x.onnx", precision="float16")


def test_a_tool_failure_naming_a_log_keeps_the_build_where_the_message_points(tmp_path):
    """A failed build is not published; when the error names a log inside it, the build stays as <name>.failed and
    the message names the log there (so `read <log>` works), and an existing project is untouched."""
    from edgeann.pipeline import _build_and_publish

    project = tmp_path / "proj"
    project.mkdir()
    (project / "keep.txt").write_text("old")

    def failing(staging):
        (staging / "build.log").write_text("the compiler said no")
        raise EdgeannError(f"Verilator failed (exit 2); read {staging / 'build.log'}")

    with pytest.raises(EdgeannError) as e:
        _build_and_publish(project, True, failing)
    log = tmp_path / "proj.failed" / "build.log"
    assert str(e.value) == f"Verilator failed (exit 2); read {log}" and log.read_text() == "the compiler said no"
    assert (project / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "proj.failed"]

    def other(staging):
        raise EdgeannError("something unrelated")

    with pytest.raises(EdgeannError, match="^something unrelated$"):
        _build_and_publish(project, True, other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "proj.failed"]  # no partial folder left
