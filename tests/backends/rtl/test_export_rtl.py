"""edgeann export --rtl: the tiny trained run as alkaid Verilog, simulated with Verilator against onnxruntime on
10,000+ vectors; Yosys synthesizes one much smaller model (its first run on a machine prepares a cache for about
two minutes, and it takes minutes on the trained run's 16-32-16-5 MLP)."""

import json

import numpy as np
import pytest

from edgeann import ir, testing
from edgeann.cli import main
from edgeann.backends.rtl import RtlOptions, verilog_sha256, write_project
from edgeann.backends.rtl.report import backend_section
from edgeann.backends.rtl.synth import synthesize, xilinx_family

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl") / "p"
    assert main(["export", str(trained_run), "--rtl", "--no-synth", "--out", str(out)]) == 0
    return out


def test_verilator_equals_onnxruntime_on_every_vector(exported):
    v = json.loads((exported / "verification.json").read_text())
    assert v["backend"] == "rtl" and v["simulation"] == "RTL simulation (Verilator)"
    assert v["exact"] is True and v["exact_fraction"] == 1.0 and v["mismatches"] == 0 and v["max_lsb_diff"] == 0.0
    assert v["n_samples"] >= 10_000 and v["inputs"]["data"] == 600 and v["inputs"]["edge"] > 100
    assert v["reference"].startswith("onnxruntime")
    assert v["firmware_sha256"] == verilog_sha256(exported)
    assert v["summary"].startswith(f"{v['n_samples']} vectors x 5 outputs: RTL simulation (Verilator) vs onnxruntime")


def test_report_without_synthesis_keeps_the_estimate(exported, capsys):
    report = json.loads((exported / "report.json").read_text())
    rtl = report["backends"]["rtl"]
    res, lat, est = rtl["resources"], rtl["latency"], json.loads((exported / "rtl.json").read_text())["estimate"]
    assert res["source"] == "estimate (synthesis skipped)" and res["lut"] == est["lut"] > 0 and res["dsp"] == 0
    assert lat["cycles"] == est["latency_cycles"] >= 1 and lat["ns"] == lat["cycles"] * 5.0
    assert lat["initiation_interval"] == 1 and lat["pipeline_stages"] >= 1
    assert {"fc1", "fc2", "fc3"} == {row["layer"] for row in report["layers"]}


def test_yosys_counts_cells_near_the_estimate(tmp_path):
    """One tiny model (6-8-3) through Yosys: positive LUTs within 25% of alkaid's estimate of the Verilog written."""
    graph = testing.random_mlp(np.random.default_rng(5), (6, 8, 3), input_type=ir.FixedType(8, 5),
                               weight_types=[ir.FixedType(6, 5)] * 2, act_types=[ir.FixedType(6, 3, signed=False)],
                               output_type=ir.FixedType(8, 3), sparsity=0.3, name="tiny")
    manifest = write_project(graph, tmp_path / "p", RtlOptions(project_name="tiny"))
    res = backend_section(manifest, synthesize(tmp_path / "p", "xcvu13p-flga2577-2-e"))["resources"]
    assert res["source"] == "synthesized" and res["tool"] == "yosys synth_xilinx" and res["family"] == "xcup"
    assert res["lut"] > 0 and res["ff"] > 0 and res["carry"] > 0 and res["dsp"] == 0 and res["bram"] == 0
    assert res["lut"] == sum(n for c, n in res["cells"].items() if c.startswith(("LUT", "INV", "SRL")))
    # the Verilog has two-input adders only (RtlOptions.ternary_adders off), which is how Yosys maps adders
    assert res["estimate"]["lut"] == res["estimate"]["lut_two_input_adders"]
    assert 0.75 <= res["lut_over_estimate"] <= 1.25, res
    # one output per LUT, as Yosys maps them (alkaid counts ReLU and mux bits at half a LUT): measured 1.145
    assert res["estimate"]["lut_single_output"] > res["estimate"]["lut"]
    assert 0.8 <= res["lut_over_single_output_estimate"] <= 1.2, res
    print(f"Yosys LUT {res['lut']} / alkaid estimate {res['estimate']['lut']} = {res['lut_over_estimate']}, / its "
          f"single-output-LUT cost {res['estimate']['lut_single_output']} = {res['lut_over_single_output_estimate']}")


def test_xilinx_family_of_parts():
    assert [xilinx_family(p) for p in ("xc7a200t-fbg676-2", "xcku040-ffva1156-2-e", "xcvu13p-flga2577-2-e",
                                       "xczu9eg-ffvb1156-2-e", "xcku15p-ffve1517-2-e")] == ["xc7", "xcu", "xcup", "xcup", "xcup"]


def test_verilog_is_byte_identical_when_written_again(trained_run, exported, tmp_path):
    graph = ir.Graph.load(trained_run / "graph.npz")
    manifest = json.loads((exported / "rtl.json").read_text())
    write_project(graph, tmp_path / "again", RtlOptions(project_name=manifest["options"]["project_name"]))
    assert verilog_sha256(tmp_path / "again") == verilog_sha256(exported)


def test_verify_reruns_the_rtl_simulation(exported, capsys):
    assert main(["verify", str(exported)]) == 0
    assert "RTL simulation (Verilator)" in capsys.readouterr().out


def test_no_compiler_is_one_line_naming_it(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-g++")
    assert main(["export", str(trained_run), "--rtl", "--no-synth", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeann: error: no C++ compiler found (no-such-g++") and "\n" not in err
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []  # no half-written project


def test_unknown_part_for_yosys_keeps_the_fpga_project(trained_run, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["export", str(trained_run), "--fpga", "--rtl", "--part", "xc5vlx50t-ff1136-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "part xc5vlx50t-ff1136-1: Yosys synthesizes for Xilinx" in err and "--no-synth" in err and "\n" not in err
    assert json.loads((out / "verification.json").read_text())["exact"] is True
    assert not (out / "rtl").exists()


def test_threshold_layers_in_rtl_equal_the_original(tmp_path):
    """FINN MultiThreshold activations (edgeann.ir.Threshold): compare-and-count logic in Verilator equals the qonnx
    executor on the original model on 10,000 vectors."""
    from tests.frontends.foreign_models import finn_multithreshold_mlp

    src = finn_multithreshold_mlp(tmp_path / "f.onnx")
    assert main(["export", str(src), "--rtl", "--no-synth", "--out", str(tmp_path / "r")]) == 0
    v = json.loads((tmp_path / "r" / "verification.json").read_text())
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000
    assert v["reference"] == "qonnx executor on the QONNX model"


def test_rtl_of_a_qkeras_model_with_an_input_precision(tmp_path):
    """--rtl with --input-precision: the Verilator simulation equals the qonnx executor on the original on the
    input type's grid."""
    from tests.frontends.foreign_models import qkeras_like_qonnx

    src = qkeras_like_qonnx(tmp_path / "qk.onnx")
    assert main(["export", str(src), "--rtl", "--no-synth", "--input-precision", "ap_fixed<8,3>",
                 "--out", str(tmp_path / "r")]) == 0
    v = json.loads((tmp_path / "r" / "verification.json").read_text())
    assert v["exact"] and v["exact_fraction"] == 1.0 and v["n_samples"] >= 10_000 and "on_grid" in v["inputs"]
    assert v["class_agreement"]["fraction"] == 1.0
