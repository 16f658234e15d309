"""The ``report`` stage: cost of the firmware without vendor tools, and their numbers when present.

* per layer: BOPs (Hawks et al. 2021), weights, accumulator type, ``multiplications`` left after
  pruning (a zero weight needs none, a +-2^k weight is a shift) and the ``multipliers`` that compute
  them: ``ceil(multiplications / reuse_factor)`` per weight matrix (a GRU's or LSTM's gate products are
  unrolled, one multiplier each);
* an analytical latency estimate for the ``Latency`` strategy: each dense layer takes one
  cycle per reuse for its multipliers and ``ceil(depth / adds_per_cycle)`` cycles for its adder
  tree (depth = ``ceil(log2(fan-in + 1))``, the +1 for the bias), with ``adds_per_cycle =
  max(1, floor(clock_period / 1.5 ns))``; each activation takes one cycle. A convolution repeats
  its multiplications for every output position (``io_parallel``) or input pixel (``io_stream``,
  where every layer on an image takes a cycle per pixel and the layers overlap). It is a
  first-order estimate to compare designs, not a synthesis result;
* ``--synth``: hls4ml's build (C synthesis) when Vitis or Vivado HLS is on PATH, its report parsed.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgeann import ir
from edgeann.metrics import layer_table, weighted

ADD_NS = 1.5  # assumed delay of one narrow adder level on a current FPGA fabric


RECURRENT_CYCLES_MODEL = ("recurrent step: reuse + ceil(adder-tree depth / adds per cycle) for both matrices (in "
                          "parallel), then five one-cycle stages (GRU: gate sums + requantize, sigmoid tables, "
                          "r * gh_n + sum + requantize, tanh table, update + requantize; LSTM: gate sums + requantize, "
                          "tables, f * c + i * g + requantize, tanh(c) table, o * tanh(c) + requantize); steps one after "
                          "the other")


def recurrent_step_cycles(node: ir.Recurrent, reuse_factor: int, adds_per_cycle: int) -> int:
    """Cycles of one GRU or LSTM step (see ``RECURRENT_CYCLES_MODEL``): the matrix products, then five stages."""
    fan_in = max(int(np.count_nonzero(w, axis=1).max(initial=0)) for w in (node.w_ih, node.w_hh)) + 1
    return reuse_factor + math.ceil(math.ceil(math.log2(fan_in + 1)) / adds_per_cycle) + 5


def latency_estimate(graph: ir.Graph, options) -> dict:
    if options.strategy != "Latency":
        return {"cycles": None, "reason": "the analytical estimate covers the Latency strategy only"}
    adds_per_cycle = max(1, math.floor(options.clock_period / ADD_NS))
    stream = options.io_type == "io_stream"
    infos = graph.infos()
    per_layer, total, interval = {}, 0, 1
    recurrent = {}
    for node in graph.nodes[1:]:
        if isinstance(node, ir.Recurrent):  # its steps run one after the other: each needs the previous state
            per_step = recurrent_step_cycles(node, options.reuse_factor, adds_per_cycle)
            steps = infos[node.inputs[0]].shape[0]
            recurrent[node.name] = {"steps": steps, "cycles_per_step": per_step}
            per_layer[node.name] = steps * per_step
            total += steps * per_step
            interval = max(interval, steps * per_step)
            continue
        x = infos[node.inputs[0]]
        pixels = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 1
        w = weighted(node, infos)
        if stream:  # a layer on an image reads one pixel per step
            steps = pixels if len(x.shape) > 1 else 1
        else:  # a convolution computes its output positions one after the other (ParallelizationFactor 1)
            steps = w["positions"] if w is not None and isinstance(node, ir.Conv) else 1
        if w is not None:
            fan_in = int(np.count_nonzero(w["weight"], axis=0).max(initial=0)) + 1
            busy = steps * options.reuse_factor
            cycles = busy + math.ceil(math.ceil(math.log2(max(fan_in, 1) + 1)) / adds_per_cycle)
        else:
            busy = cycles = steps
        per_layer[node.name] = cycles
        total += cycles
        interval = max(interval, busy)
    layers = ("dense, convolution, batch norm: steps x reuse + ceil(adder-tree depth / "
              f"{adds_per_cycle}); other layers: steps (clock {options.clock_period} ns)")
    steps_are = ("steps = input pixels of a layer on an image, else 1; layers overlap (dataflow), so the sum is an "
                 "upper bound and the interval the slowest layer's" if stream else
                 "steps = output positions of a convolution, else 1")
    return {
        "cycles": total,
        "ns": round(total * options.clock_period, 2),
        "initiation_interval": interval,
        "per_layer": per_layer,
        **({"recurrent": recurrent, "recurrent_model": RECURRENT_CYCLES_MODEL} if recurrent else {}),
        "model": f"{options.io_type}: {layers}; {steps_are}",
    }


def instantiated_multipliers(row: dict, reuse_factor: int) -> int:
    """Multipliers the firmware instantiates for a layer row of :func:`edgeann.metrics.layer_table`: each
    multiplier computes ``reuse_factor`` of a weight matrix's products one after the other."""
    if "matrix_multiplications" in row:  # recurrent: two matrices, then gate products in parallel
        return sum(math.ceil(m / reuse_factor) for m in row["matrix_multiplications"]) + row["gate_multiplications"]
    return math.ceil(row["multiplications"] / reuse_factor)


def build_report(graph: ir.Graph, options) -> dict:
    rows = [{**row, "multipliers": instantiated_multipliers(row, options.reuse_factor)} for row in layer_table(graph)]
    return {
        "model": graph.name,
        "options": options.to_dict(),
        "layers": rows,
        "totals": {
            "bops": sum(r["bops"] for r in rows),
            "weights": sum(r["n_weights"] for r in rows),
            "nonzero_weights": sum(r["nonzero_weights"] for r in rows),
            "multiplications": sum(r["multiplications"] for r in rows),
            "multipliers": sum(r["multipliers"] for r in rows),
            "multiplications_saved_by_pruning": sum(r["n_weights"] - r["nonzero_weights"] for r in rows),
            "macs": sum(r["macs"] for r in rows),
            "macs_saved_by_pruning": sum(r["macs_saved_by_pruning"] for r in rows),
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
