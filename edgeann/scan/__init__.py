"""Pareto search over bit widths, sparsity and layer sizes: ``edgeann scan`` (see :func:`run_scan`).

space.py (the space file), costs.py (what is optimized), study.py (the Optuna study in the scan folder and the
objective, which calls :func:`edgeann.pipeline.train_run`), run.py (local workers), ray_backend.py (Ray tasks),
outputs.py (trials.csv, pareto.csv, pareto.png, summary.md).
"""

from edgeann.scan.run import default_trial_project, run_scan, trial_run_dir

__all__ = ["run_scan", "trial_run_dir", "default_trial_project"]
