"""The ``report`` stage: cost of the firmware without vendor tools, and their numbers when present.

* per layer: BOPs (Hawks et al. 2021), weights, multipliers left after pruning (a zero weight
  needs none, a +-2^k weight is a shift), accumulator type;
* an analytical latency estimate for ``io_parallel`` + ``Latency``: each dense layer takes one
  cycle per reuse for its multipliers and ``ceil(depth / adds_per_cycle)`` cycles for its adder
  tree (depth = ``ceil(log2(fan-in + 1))``, the +1 for the bias), with ``adds_per_cycle =
  max(1, floor(clock_period / 1.5 ns))``; each activation takes one cycle. It is a first-order
  estimate to compare designs, not a synthesis result;
* ``--synth``: hls4ml's build (C synthesis) when Vitis or Vivado HLS is on PATH, its report parsed.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgeann import ir
from edgeann.metrics import layer_table

ADD_NS = 1.5  # assumed delay of one narrow adder level on a current FPGA fabric


def latency_estimate(graph: ir.Graph, options) -> dict:
    if options.io_type != "io_parallel" or options.strategy != "Latency":
        return {"cycles": None, "reason": "the analytical estimate covers io_parallel with the Latency strategy only"}
    adds_per_cycle = max(1, math.floor(options.clock_period / ADD_NS))
    per_layer, total = {}, 0
    for node in graph.nodes[1:]:
        if isinstance(node, ir.Dense):
            fan_in = int(np.count_nonzero(node.weight, axis=1).max(initial=0)) + 1
            cycles = options.reuse_factor + math.ceil(math.ceil(math.log2(max(fan_in, 1) + 1)) / adds_per_cycle)
        else:
            cycles = 1
        per_layer[node.name] = cycles
        total += cycles
    return {
        "cycles": total,
        "ns": round(total * options.clock_period, 2),
        "initiation_interval": options.reuse_factor,
        "per_layer": per_layer,
        "model": f"dense: reuse + ceil(adder-tree depth / {adds_per_cycle}); activation: 1 (clock {options.clock_period} ns)",
    }


def build_report(graph: ir.Graph, options) -> dict:
    rows = layer_table(graph)
    return {
        "model": graph.name,
        "options": options.to_dict(),
        "layers": rows,
        "totals": {
            "bops": sum(r["bops"] for r in rows),
            "weights": sum(r["n_weights"] for r in rows),
            "nonzero_weights": sum(r["nonzero_weights"] for r in rows),
            "multipliers": sum(r["multipliers"] for r in rows),
            "multipliers_saved_by_pruning": sum(r["n_weights"] - r["nonzero_weights"] for r in rows),
        },
        "types": {name: info.type.hls() for name, info in graph.infos().items()},
        "latency_estimate": latency_estimate(graph, options),
        "synthesis": {"status": "not requested"},
    }


HLS_TOOLS = {"Vitis": ("vitis_hls", "vitis-run"), "Vivado": ("vivado_hls",)}


def synthesize(project_dir: Path, options, timeout_s: int = 6 * 3600) -> dict:
    """Run C synthesis with the vendor tool if it is installed; otherwise say so."""
    tools = HLS_TOOLS.get(options.backend, ())
    exe = next((shutil.which(t) for t in tools if shutil.which(t)), None)
    if exe is None:
        return {"status": "skipped",
                "reason": f"{' / '.join(tools)} not found on PATH; the project in {project_dir} is complete: "
                          f"run `{tools[0]} -f build_prj.tcl` there on a machine with {options.backend} HLS"}
    script = "build_prj.tcl"
    cmd = [exe, "-f", script] if "vitis-run" not in exe else [exe, "--mode", "hls", "--tcl", script]
    proc = subprocess.run(cmd, cwd=project_dir, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        return {"status": "failed", "returncode": proc.returncode, "log_tail": proc.stdout[-2000:] + proc.stderr[-2000:]}
    try:
        import hls4ml

        parsed = hls4ml.report.parse_vivado_report(str(project_dir))
    except Exception as e:  # the tool ran, but its report is not where hls4ml expects it
        return {"status": "done", "report": None, "parse_error": str(e)}
    return {"status": "done", "report": parsed}
