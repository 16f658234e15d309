"""Scan throughput: trials per hour with 2 local workers against 1, and the scan's own overhead.

    python benchmarks/bench_scan.py [--flow flows/jet_mlp.yaml] [--trials 4] [--epochs 2] [--workers 2]

The same scan (scans/jet_mlp.yaml, a fixed seed) runs once with 1 worker and once with ``--workers``; the
figures of merit are the ratio of trials per hour (goal >= 1.7 with 2 workers on 2 cores), each scan one
``edgeann scan`` command in a fresh process as a user runs it, and the overhead of
the 1-worker scan: its wall time minus the time its trials spent in ``train_run`` (training and ONNX export),
per trial, as a fraction of a trial (goal <= 10%). The overhead includes the one-off work of a scan (checking
the space, preparing the data once, writing trials.csv, pareto.png, summary.md). On a shared machine the
ratio depends on what else runs: say so when quoting it.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]


def timed_scan(flow: str, space: str, trials: int, workers: int, epochs: int, root: Path) -> dict:
    """One ``edgeann scan`` command in a fresh process, as a user runs it (imports included)."""
    out = root / f"w{workers}"
    command = [sys.executable, "-m", "edgeann", "scan", flow, "--space", space, "--trials", str(trials), "--workers",
               str(workers), "--out", str(out), "--set", f"training.epochs={epochs}", "-q"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - t0
    with open(out / "trials.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["state"] == "COMPLETE"]
    in_trials = sum(float(r["seconds"]) for r in rows)
    # from the study's own clock: the time from the first trial's start to the last one's end; what is outside it
    # is the scan's one-off work (checks, data, outputs)
    from optuna.trial import TrialState

    from edgeann.scan.study import Scan

    done = Scan.load(out).study().get_trials(states=(TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"wall": wall, "trials": len(rows), "per_hour": 3600 * len(rows) / wall, "trial_s": in_trials / len(rows),
            "overhead_per_trial_s": (wall - in_trials / workers) / len(rows),
            "per_trial_overhead_s": (span - in_trials / workers) / len(rows), "one_off_s": wall - span,
            "per_hour_running": 3600 * len(rows) / span}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flow", default=str(REPO / "flows" / "jet_mlp.yaml"))
    ap.add_argument("--space", default=str(REPO / "scans" / "jet_mlp.yaml"))
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        one = timed_scan(args.flow, args.space, args.trials, 1, args.epochs, Path(tmp))
        many = timed_scan(args.flow, args.space, args.trials, args.workers, args.epochs, Path(tmp))
    for name, r in (("1 worker", one), (f"{args.workers} workers", many)):
        print(f"{name:>10}: {r['trials']} trials in {r['wall']:.1f} s = {r['per_hour']:.0f} trials/hour "
              f"(a trial: {r['trial_s']:.1f} s in train_run)")
    print(f"speed-up {args.workers} workers / 1 worker: {many['per_hour'] / one['per_hour']:.2f}x (goal >= 1.7x on 2 cores); "
          f"{many['per_hour_running'] / one['per_hour_running']:.2f}x from the first trial's start to the last one's end "
          f"(one-off work outside that span: {one['one_off_s']:.1f} s with 1 worker, {many['one_off_s']:.1f} s with "
          f"{args.workers}: Python, imports, checks, data, outputs)")
    print(f"scan overhead, 1 worker: {one['overhead_per_trial_s']:.2f} s per trial = "
          f"{100 * one['overhead_per_trial_s'] / one['trial_s']:.1f}% of a trial (goal <= 10%): "
          f"{one['per_trial_overhead_s']:.2f} s in every trial ({100 * one['per_trial_overhead_s'] / one['trial_s']:.1f}%: "
          f"asking, telling, loading the flow) and {one['one_off_s']:.1f} s once per scan (checks, data, outputs)")


if __name__ == "__main__":
    main()
