"""`edgeann run` ends with the summary table and writes report.md, a page for a trigger review."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from types import SimpleNamespace

import pytest

from edgeann.cli import main

pytestmark = pytest.mark.csim


def run_cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ran(trained_run, tmp_path_factory):
    """`edgeann run` on the tiny flow with FPGA options from the command line."""
    root = tmp_path_factory.mktemp("run")
    code, out = run_cli("run", str(trained_run / "flow.yaml"), "--out", str(root / "r"), "--project", str(root / "p"),
                        "--reuse-factor", "2", "--clock-period", "4", "--io-type", "IO_PARALLEL", "-q")
    assert code == 0, out
    return SimpleNamespace(root=root, run=root / "r", project=root / "p", out=out)


def test_run_ends_with_the_summary_table(ran):
    table = ran.out[ran.out.index("  model "):]
    for label in ("test accuracy", "mean AUC", "BOPs", "multipliers", "latency", "resources", "bit-exact", "report"):
        assert re.search(rf"^  {label} +\S", table, re.M), label
    metrics = json.loads((ran.run / "metrics.json").read_text())
    assert f"{metrics['test']['accuracy']:.4f} on {metrics['test']['n_samples']} test samples" in table
    report = json.loads((ran.project / "report.json").read_text())
    lat = report["latency_estimate"]
    assert f"{lat['cycles']} cycles = {lat['ns']:g} ns at 4 ns" in table
    assert re.search(r"^  bit-exact +yes: 1\d,\d{3} vectors x 5 outputs", table, re.M)


def test_fpga_options_of_run_reach_the_firmware(ran):
    options = json.loads((ran.project / "report.json").read_text())["options"]
    assert (options["reuse_factor"], options["clock_period"], options["io_type"]) == (2, 4.0, "io_parallel")


def test_report_md_holds_the_tables_and_its_plots(ran):
    md = (ran.project / "report.md").read_text()
    assert md.startswith("# tiny: firmware report")
    for heading in ("## Firmware options", "## Cost per layer", "## Verification", "## Plots"):
        assert heading in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"plots/learning_curves.png", "plots/roc_curves.png", "plots/layer_costs.png"} <= set(images)
    for image in images:
        assert (ran.project / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    layers = json.loads((ran.project / "report.json").read_text())["layers"]
    for row in layers:  # every layer of report.json has its row
        assert re.search(rf"^\| {row['layer']} \| {row['op']} \|", md, re.M)


def test_run_resumes_and_builds_firmware_again(ran):
    code, out = run_cli("run", str(ran.run / "flow.yaml"), "--out", str(ran.run), "--resume", "--epochs", "7",
                        "--project", str(ran.root / "p2"), "-q")
    assert code == 0, out
    history = json.loads((ran.run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 8))
    assert (ran.root / "p2" / "report.md").is_file() and "bit-exact" in out


def test_run_refuses_an_existing_project_before_training(ran, capsys):
    before = (ran.project / "report.md").read_text()
    code = main(["run", str(ran.run / "flow.yaml"), "--out", str(ran.root / "r3"), "--project", str(ran.project), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "\n" not in err.strip()
    assert not (ran.root / "r3").exists() and (ran.project / "report.md").read_text() == before
