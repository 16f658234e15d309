"""What a scan can optimize: qualities (maximized) and costs (minimized), each read from a finished run folder.

A cost is one function ``(run_dir, metrics) -> float`` registered in :data:`COSTS`. BOPs come from the
exported fixed-point graph (``metrics.json``); ``lut``, ``ff`` and ``latency_cycles`` from the RTL generator's
estimate of the run's graph (alkaid, as ``edgeann export --rtl`` records it in ``rtl.json``, at the flow's part
and clock), computed once per run and only when the space names one of them. The space file names them like
``bops`` (``{minimize: lut}``, ``"latency_cycles <= 20"``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

# test accuracy and AUC are those of model.onnx, the exact fixed-point model (what the firmware computes)
QUALITIES: dict[str, Callable[[dict], float]] = {
    "accuracy": lambda m: float(m["test"]["accuracy"]),
    "auc": lambda m: float(m["test"]["roc_auc_mean"]),
    "sparsity": lambda m: float(m["sparsity"]["total"]),
}


@functools.lru_cache(maxsize=8)
def rtl_estimate(run_dir: Path) -> dict:
    """alkaid's estimate of the run's pipelined RTL at the flow's part and clock (see edgeann.backends.rtl)."""
    from edgeann import ir
    from edgeann.backends.rtl import RtlOptions, check_supported, estimate
    from edgeann.config import load_flow

    graph = ir.Graph.load(Path(run_dir) / "graph.npz")
    check_supported(graph)
    fpga = load_flow(Path(run_dir) / "flow.yaml").fpga
    return estimate(graph, RtlOptions(project_name="scan", part=fpga.part, clock_period=fpga.clock_period))


COSTS: dict[str, Callable[[Path, dict], float]] = {
    "bops": lambda run_dir, m: float(m["bops"]),
    "lut": lambda run_dir, m: float(rtl_estimate(Path(run_dir))["lut"]),
    "ff": lambda run_dir, m: float(rtl_estimate(Path(run_dir))["ff"]),
    "latency_cycles": lambda run_dir, m: float(rtl_estimate(Path(run_dir))["latency_cycles"]),
}
RTL_COSTS = ("lut", "ff", "latency_cycles")


def measure(run_dir: Path, metrics: dict, costs: list[str]) -> dict[str, float]:
    """Every quality and the named costs of one finished run."""
    values = {name: read(metrics) for name, read in QUALITIES.items()}
    values.update({name: COSTS[name](run_dir, metrics) for name in costs})
    return values
