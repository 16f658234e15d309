"""The exported project as a whole: test bench data, the input-scaling header, default names, publishing only
complete projects, and `edgeann verify` refusing incomplete ones. Reuses one compiled export (``exported_project``)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeann import ir
from edgeann.cli import main
from edgeann.files import current_umask
from edgeann.backends.hls import compile_csim
from edgeann.backends.hls.input_scaling import InputScaling, agreement, float_path_codes
from edgeann.backends.hls.testbench import port_values, read_dat, select_rows
from edgeann.pipeline import default_project_dir, export_firmware

pytestmark = pytest.mark.csim

CXXFLAGS = ["-std=c++17", "-O0", "-w", "-Wno-free-nonheap-object"]


def _manifest(project):
    return json.loads((project / "edgeann_project.json").read_text())


def test_default_project_name_follows_the_run_folder(exported_project, trained_run):
    assert exported_project.parent.name == "hls_projects" and exported_project.name == trained_run.name
    assert default_project_dir(Path("runs/rf/")) == Path("hls_projects/rf")
    assert default_project_dir(Path("models/model.qonnx.onnx")) == Path("hls_projects/model.qonnx")
    assert [p.name for p in exported_project.parent.iterdir()] == [trained_run.name]  # no staging folder left
    mode = 0o777 & ~current_umask()  # the user's umask, not mkdtemp's 0700 / mkstemp's 0600
    assert exported_project.stat().st_mode & 0o777 == mode
    assert (exported_project / "report.json").stat().st_mode & 0o777 == mode & 0o666


def test_testbench_data_is_the_firmwares_own_io(exported_project):
    graph = ir.Graph.load(exported_project / "edgeann" / "graph.npz")
    x = np.load(exported_project / "edgeann" / "verification.npz")["x"]
    tb = json.loads((exported_project / "verification.json").read_text())["testbench"]
    inputs = read_dat(exported_project / "tb_data" / "tb_input_features.dat")
    outputs = read_dat(exported_project / "tb_data" / "tb_output_predictions.dat")
    assert tb["written"] and tb["vectors"] == tb["of"] == len(x) == len(inputs) == len(outputs)  # 10,600 x 16 fits
    assert np.array_equal(inputs, port_values(graph, x).reshape(len(x), -1))
    assert np.array_equal(inputs.astype(np.float32), inputs)  # the test bench reads floats
    csim = compile_csim(exported_project)
    assert np.array_equal(outputs, csim.predict(inputs).reshape(len(x), -1))
    assert np.array_equal(outputs, csim.predict(x).reshape(len(x), -1))  # line by line the verification vectors'


def test_testbench_rows_are_thinned_evenly():
    rows = select_rows(10_000, 261, 250_000)
    assert len(rows) == 957 and rows[0] == 0 and rows[-1] == 9_999 and np.all(np.diff(rows) > 0)
    assert np.array_equal(select_rows(100, 21), np.arange(100))


def test_hls4ml_testbench_reproduces_the_predictions_in_a_moved_project(exported_project, tmp_path):
    # a copy elsewhere: a published project holds no path of the folder it was built in
    moved = tmp_path / "elsewhere"
    shutil.copytree(exported_project, moved)
    top = _manifest(moved)["top_function"]
    tb = moved / "tb_data"
    for name in ("tb_input_features.dat", "tb_output_predictions.dat"):  # 1,500 vectors keep the run short
        (tb / name).write_text("".join((tb / name).read_text().splitlines(keepends=True)[:1500]))
    fw = moved / "firmware"
    subprocess.run(["g++", *CXXFLAGS, f"-I{fw}", f"-I{fw / 'ap_types'}", f"{top}_test.cpp", f"firmware/{top}.cpp",
                    "-o", "tb"], cwd=moved, check=True)
    subprocess.run(["./tb"], cwd=moved, check=True, capture_output=True)
    got, want = read_dat(tb / "csim_results.log"), read_dat(tb / "tb_output_predictions.dat")
    assert len(want) == 1500 and np.array_equal(got, want)


DRIVER = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include "defines.h"
#include "input_scaling.h"
static_assert(std::is_same<input_t, edgeann_input::scaled_t>::value, "the header's scaled_t is the firmware's input_t");
// n x N_INPUTS raw doubles in argv[1] -> the int64 codes of scaled_t in argv[2]
int main(int argc, char **argv) {
    using namespace edgeann_input;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    double buf[N_INPUTS];
    while (fread(buf, sizeof(double), N_INPUTS, in) == N_INPUTS) {
        raw_t raw[N_INPUTS];
        scaled_t scaled[N_INPUTS];
        for (unsigned i = 0; i < N_INPUTS; i++) raw[i] = buf[i];
        standardize_all(raw, scaled);
        for (unsigned i = 0; i < N_INPUTS; i++) {
            int64_t code = std::llround(std::ldexp(scaled[i].to_double(), scaled_t::width - scaled_t::iwidth));
            fwrite(&code, sizeof code, 1, out);
        }
    }
    fclose(in);
    fclose(out);
    return 0;
}
"""


def test_input_scaling_header_equals_the_python_path(exported_project, trained_run, tmp_path):
    report = json.loads((exported_project / "report.json").read_text())["input"]
    assert report["scaling_header"] == "edgeann/input_scaling.h" and "(x - mean) / std" in report["firmware_input"]
    with np.load(trained_run / "test_data.npz") as d:
        x_raw, x_scaled = d["x_raw"], d["x"]
    graph = ir.Graph.load(exported_project / "edgeann" / "graph.npz")
    scaler = json.loads((trained_run / "scaler.json").read_text())
    assert report["scaler"] == {"mean": scaler["mean"], "std": scaler["std"]}
    scaling = InputScaling.design(scaler["mean"], scaler["std"], graph.input.type)
    # the float path is what training fed the network
    assert np.array_equal(float_path_codes(scaler["mean"], scaler["std"], graph.input.type, x_raw),
                          ir.quantize_float(x_scaled, graph.input.type))
    # g++ on the project's header, with the ap_types the firmware is built with
    (tmp_path / "driver.cpp").write_text(DRIVER)
    subprocess.run(["g++", *CXXFLAGS, f"-I{exported_project / 'firmware'}", f"-I{exported_project / 'firmware' / 'ap_types'}",
                    f"-I{exported_project / 'edgeann'}", "driver.cpp", "-o", "driver"], cwd=tmp_path, check=True)
    # the test split, plus values that saturate raw_t and the input type
    big = np.float32(2.0 ** (scaling.raw_type.integer + 2))
    rows = np.concatenate([x_raw, np.full((2, x_raw.shape[1]), big) * [[1], [-1]], x_raw[:50] * 37]).astype(np.float64)
    rows.tofile(tmp_path / "raw.bin")
    subprocess.run(["./driver", "raw.bin", "codes.bin"], cwd=tmp_path, check=True)
    cpp = np.fromfile(tmp_path / "codes.bin", dtype=np.int64).reshape(rows.shape)
    assert np.array_equal(cpp, scaling.codes(rows))
    t = graph.input.type
    assert np.all(cpp[len(x_raw)] == t.int_max) and np.all(cpp[len(x_raw) + 1] == t.int_min)
    # the agreement with training's float path recorded in report.json is measured, not assumed
    measured = agreement(scaling, x_raw)
    assert report["agreement_with_float_path"] == {"on": "test split", **measured}
    assert measured["n_values"] == x_raw.size and measured["max_lsb_diff"] <= 1 and measured["equal_fraction"] > 0.99


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupted_export_leaves_nothing_and_keeps_the_old_project(exported_project, trained_run, tmp_path,
                                                                     monkeypatch, capsys):
    import edgeann.backends.hls

    old = tmp_path / "p"
    shutil.copytree(exported_project, old)
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    monkeypatch.setattr(edgeann.backends.hls, "compile_csim", _interrupt)  # Ctrl-C while g++ runs
    with pytest.raises(KeyboardInterrupt):
        export_firmware(trained_run, old, force=True, echo=lambda *a: None)
    assert main(["export", str(trained_run), "--fpga", "--out", str(tmp_path / "new")]) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.undo()
    # a failing export (a reuse factor hls4ml's Resource strategy cannot take) with --force: the old project stays
    assert main(["export", str(trained_run), "--fpga", "--out", str(old), "--force", "--strategy", "Resource",
                 "--reuse-factor", "7"]) == 2
    assert "reuse_factor 7 is not valid" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no new project, no staging folder
    assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("missing", ["report.json", "verification.json", "edgeann/verification.npz", "edgeann/graph.npz",
                                     "edgeann/source.json", "firmware/{top}.cpp", "edgeann_project.json"])
def test_verify_refuses_an_incomplete_project(exported_project, tmp_path, capsys, missing):
    work = tmp_path / "p"
    shutil.copytree(exported_project, work, ignore=shutil.ignore_patterns("csim", "tb_data"))
    name = missing.format(top=_manifest(work)["top_function"])
    os.unlink(work / name)
    assert main(["verify", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeann: error:") and f"{name} is missing" in err and "\n" not in err
    assert not (work / "verification.verify.json").exists()
