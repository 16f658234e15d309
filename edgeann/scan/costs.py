"""What a scan can optimize: qualities (maximized) and costs (minimized), each read from a finished run folder.

A cost is one function ``(run_dir, metrics) -> float`` registered in :data:`COSTS`. BOPs come from the
exported fixed-point graph (``metrics.json``); LUTs and latency cycles from the RTL generator's estimate
will be one more entry each once ``edgeann export --rtl`` exists, e.g.::

    COSTS["luts"] = lambda run_dir, metrics: rtl_estimate(run_dir)["luts"]

and the space file names them like ``bops`` (``{minimize: luts}``, ``"latency_cycles <= 20"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# test accuracy and AUC are those of model.onnx, the exact fixed-point model (what the firmware computes)
QUALITIES: dict[str, Callable[[dict], float]] = {
    "accuracy": lambda m: float(m["test"]["accuracy"]),
    "auc": lambda m: float(m["test"]["roc_auc_mean"]),
    "sparsity": lambda m: float(m["sparsity"]["total"]),
}

COSTS: dict[str, Callable[[Path, dict], float]] = {
    "bops": lambda run_dir, m: float(m["bops"]),
}


def measure(run_dir: Path, metrics: dict, costs: list[str]) -> dict[str, float]:
    """Every quality and the named costs of one finished run."""
    values = {name: read(metrics) for name, read in QUALITIES.items()}
    values.update({name: COSTS[name](run_dir, metrics) for name in costs})
    return values
