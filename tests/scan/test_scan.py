"""`edgeann scan` on the tiny synthetic flow: outputs, a killed worker, determinism, Ray, export of a trial."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeann.cli import main
from edgeann.scan import run_scan

REPO = Path(__file__).resolve().parents[2]
TINY_SCAN_FLOW = {
    "name": "tiny_scan",
    "seed": 3,
    "data": {"source": "synthetic", "n_samples": 1200},
    "model": {"family": "mlp", "hidden": [16, 8]},
    "quantization": {"input_bits": 8, "weight_bits": 6, "activation_bits": 6, "output_bits": 8},
    "pruning": {"method": "iterative", "target_sparsity": 0.5, "step": 0.25, "start": 0.0, "end": 0.5},
    "training": {"epochs": 2, "batch_size": 128, "lr": 0.005, "device": "cpu"},
}
TINY_SPACE = {
    "parameters": {
        "quantization.weight_bits": {"type": "int", "low": 3, "high": 8},
        "pruning.target_sparsity": {"type": "float", "low": 0.25, "high": 0.75, "step": 0.25},
        "model.hidden": {"choices": [[16, 8], [8]]},
    },
    "objectives": [{"maximize": "accuracy"}, {"minimize": "bops"}],
    "constraints": ["bops <= 12000"],
    "seed": 3,  # its first draws differ, and both feasible and infeasible trials come out
}


@pytest.fixture
def tiny(tmp_path):
    flow, space = tmp_path / "tiny_scan.yaml", tmp_path / "space.yaml"
    flow.write_text(yaml.safe_dump(TINY_SCAN_FLOW, sort_keys=False))
    space.write_text(yaml.safe_dump(TINY_SPACE, sort_keys=False))
    return flow, space


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def scan_command(flow, space, out, trials, workers, *extra):
    return [sys.executable, "-m", "edgeann", "scan", str(flow), "--space", str(space), "--trials", str(trials),
            "--workers", str(workers), "--out", str(out), "-q", *extra]


def scan_env():
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="module")
def two_worker_scan(tmp_path_factory) -> Path:
    """A 3-trial scan with 2 worker processes, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("scan")
    (root / "tiny_scan.yaml").write_text(yaml.safe_dump(TINY_SCAN_FLOW, sort_keys=False))
    (root / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE, sort_keys=False))
    return run_scan(root / "tiny_scan.yaml", root / "space.yaml", 3, workers=2, out=root / "s", progress=False,
                    echo=lambda *a: None)["folder"]


def test_two_workers_write_every_output(two_worker_scan):
    folder = two_worker_scan
    rows = read_rows(folder)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    for r in rows:
        run = folder / r["run_dir"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert float(r["accuracy"]) == metrics["test"]["accuracy"] and float(r["bops"]) == metrics["bops"]
        assert r["onnx_exact"] == "True" and (run / "model.onnx").is_file() and (run / "graph.npz").is_file()
        assert r["feasible"] == str(metrics["bops"] <= 12000)
        assert (run / "checkpoints").is_dir() == (r["pareto"] == "True")  # checkpoints kept for the front only
    with open(folder / "pareto.csv") as fh:
        front = list(csv.DictReader(fh))
    assert front and all(r["feasible"] == "True" for r in front)
    assert {r["trial"] for r in front} == {r["trial"] for r in rows if r["pareto"] == "True"}
    assert (folder / "pareto.png").stat().st_size > 10_000
    summary = (folder / "summary.md").read_text()
    assert "`bops <= 12000`" in summary and f"edgeann export {folder} --trial" in summary


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_in_a_trial(out: Path) -> int:
    """The pid of the scan's first worker process, once a trial runs in it (each heartbeat file holds the pid of
    the process running its trial)."""
    beats, workers = out / ".heartbeats", out / "workers.json"
    _wait_for(lambda: workers.is_file() and workers.read_text().endswith("\n"), 240, "the worker process started")
    worker = json.loads(workers.read_text())[0]

    def running_pids():
        pids = set()
        for beat in beats.glob("*") if beats.is_dir() else ():
            try:
                pids.add(int(beat.read_text()))
            except (OSError, ValueError):  # the file of a trial that just ended, or one half written
                pass
        return pids

    _wait_for(lambda: worker in running_pids(), 240, f"a trial running in worker {worker}")
    return worker


def test_a_killed_worker_s_trial_is_rerun_and_counted_once(tiny, tmp_path):
    flow, space = tiny
    out = tmp_path / "s"
    # trials long enough that the worker, whose process may start late on a loaded machine, surely gets one
    longer = ("--set", "training.epochs=25", "--set", "training.early_stopping=null")
    proc = subprocess.Popen(scan_command(flow, space, out, 3, 2, *longer), env=scan_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = _worker_in_a_trial(out)
    os.kill(victim, signal.SIGKILL)  # mid-trial: its trial stays RUNNING in the journal
    output, _ = proc.communicate(timeout=300)
    assert f"pid {victim}) ended with signal 9" in output, output
    again = subprocess.run(scan_command(flow, space, out, 3, 2, *longer), env=scan_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    rows = read_rows(out)
    assert sum(r["state"] == "COMPLETE" for r in rows) == 3
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(failed) == 1 and failed[0]["note"].startswith(f"abandoned: its process {victim} is gone")
    retry = next(r for r in rows if r["note"] == f"re-run of trial {failed[0]['trial']}")
    assert retry["state"] == "COMPLETE"
    assert [retry[k] for k in TINY_SPACE["parameters"]] == [failed[0][k] for k in TINY_SPACE["parameters"]]
    assert not (out / f"trials/trial_{int(failed[0]['trial']):04d}").exists()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_killing_the_scan_ends_its_workers(tiny, tmp_path):
    """The workers are forked from a server, not from the scan, which lives as long as any of them: they must
    still end when the scan is SIGKILLed, not train on unattended (trials long enough that they would)."""
    flow, space = tiny
    out = tmp_path / "s"
    long_trials = ("--set", "training.epochs=5000", "--set", "training.early_stopping=null")
    proc = subprocess.Popen(scan_command(flow, space, out, 3, 2, *long_trials), env=scan_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = _worker_in_a_trial(out)
    proc.kill()
    proc.wait()
    try:
        _wait_for(lambda: _gone(worker), 10, f"worker {worker} to end with its scan")
    finally:
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)


def test_one_worker_with_a_fixed_seed_is_deterministic_and_a_rerun_continues_to_the_new_total(tiny, tmp_path):
    flow, space = tiny
    quiet = {"progress": False, "echo": lambda *a: None}
    runs = [read_rows(run_scan(flow, space, 2, out=tmp_path / name, **quiet)["folder"]) for name in ("a", "b")]
    keys = [*TINY_SPACE["parameters"], "accuracy", "auc", "bops", "sparsity", "state"]
    assert [[r[k] for k in keys] for r in runs[0]] == [[r[k] for k in keys] for r in runs[1]]
    params = [tuple(r[k] for k in TINY_SPACE["parameters"]) for r in runs[0]]
    assert len(set(params)) == 2  # the sampler did move

    run_scan(flow, space, 3, out=tmp_path / "b", **quiet)  # the same study, a larger total: one more trial
    rows = read_rows(tmp_path / "b")
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and [[r[k] for k in keys] for r in rows[:2]] == \
        [[r[k] for k in keys] for r in runs[1]]


def test_ray_local_runs_the_same_trials(tiny, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e '.[ray]')")
    flow, space = tiny
    proc = subprocess.run(scan_command(flow, space, tmp_path / "s", 1, 1, "--ray"), env=scan_env(),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_rows(tmp_path / "s")
    assert [r["state"] for r in rows] == ["COMPLETE"]
    assert all(json.loads((tmp_path / "s" / r["run_dir"] / "metrics.json").read_text())["onnx_exact"] for r in rows)


@pytest.mark.csim
def test_export_of_a_pareto_trial_is_bit_exact(two_worker_scan, tmp_path, capsys):
    folder = two_worker_scan
    trial = next(r for r in read_rows(folder) if r["pareto"] == "True")["trial"]
    project = tmp_path / "fw"
    code = main(["export", str(folder), "--trial", trial, "--fpga", "--out", str(project)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads((project / "verification.json").read_text())["exact"] is True
    assert json.loads((project / "edgeann" / "source.json").read_text())["source"] == str(
        (folder / f"trials/trial_{int(trial):04d}").resolve())


def test_export_of_a_trial_the_scan_does_not_have(two_worker_scan, capsys):
    code = main(["export", str(two_worker_scan), "--trial", "99", "--fpga"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("edgeann: error: ") and "no completed trial 99 (completed: 0, 1, 2)" in err


def test_ray_cluster_of_two_nodes_shares_the_trials(tiny, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e '.[ray]')")
    from ray.cluster_utils import Cluster

    from edgeann.scan.study import Scan

    flow, space = tiny
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        proc = subprocess.run(scan_command(flow, space, tmp_path / "s", 2, 2, "--ray", cluster.address),
                              env=scan_env(), capture_output=True, text=True, timeout=400)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = Scan.load(tmp_path / "s").study().get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert len({t.user_attrs["ray_node"] for t in trials}) == 2  # one CPU per node, one trial per CPU


@pytest.mark.rtl
def test_rtl_costs_are_the_estimate_export_rtl_records(tiny, tmp_path, capsys):
    """lut and latency_cycles as objective and constraint: each trial's values are alkaid's estimate of its graph,
    the same numbers `export --trial --rtl` writes into rtl.json (and its Verilator simulation is bit-exact)."""
    flow, space = tiny
    space.write_text(yaml.safe_dump({**TINY_SPACE, "objectives": [{"maximize": "accuracy"}, {"minimize": "lut"}],
                                     "constraints": ["latency_cycles <= 40"]}, sort_keys=False))
    folder = run_scan(flow, space, 2, workers=1, out=tmp_path / "s", progress=False, echo=lambda *a: None)["folder"]
    rows = read_rows(folder)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 2
    assert all(float(r["lut"]) > 0 and float(r["latency_cycles"]) >= 1 for r in rows)
    row = rows[0]
    project = tmp_path / "rtl"
    code = main(["export", str(folder), "--trial", row["trial"], "--rtl", "--no-synth", "--out", str(project)])
    assert code == 0, capsys.readouterr().out
    estimate = json.loads((project / "rtl.json").read_text())["estimate"]
    assert float(row["lut"]) == estimate["lut"] and float(row["latency_cycles"]) == estimate["latency_cycles"]
    assert row["feasible"] == str(estimate["latency_cycles"] <= 40)
    assert json.loads((project / "verification.json").read_text())["exact"] is True


def test_rtl_costs_on_a_recurrent_flow_are_refused_before_any_trial(tiny, tmp_path, capsys):
    flow, space = tiny
    gru = {**TINY_SCAN_FLOW, "data": {"source": "synthetic", "n_samples": 600, "sequence_length": 4},
           "model": {"family": "gru", "hidden": [8]}}
    flow.write_text(yaml.safe_dump(gru, sort_keys=False))
    space.write_text(yaml.safe_dump({"parameters": {"quantization.weight_bits": {"type": "int", "low": 3, "high": 8}},
                                     "objectives": [{"maximize": "accuracy"}, {"minimize": "lut"}]}, sort_keys=False))
    code = main(["scan", str(flow), "--space", str(space), "--trials", "2", "--out", str(tmp_path / "s"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the costs lut come from the RTL back end, which does not build GRU models" in err and "\n" not in err
    assert not (tmp_path / "s" / "trials").exists()
