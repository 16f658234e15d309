"""Throughput of the jet MLP's C simulation: edgeann's batched bridge vs hls4ml's own predict().

    python benchmarks/bench_csim.py [--n 100000] [--n-hls4ml 2000] [--threads N] [--workdir DIR]

Both run the same written project (16-64-32-32-5, 8-bit input, 6-bit weights ~50% pruned, 6-bit ReLUs),
in the same process, and both outputs are checked against the graph's golden model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeann.backends import onnx_qcdq
from edgeann.backends.hls import compile_csim, write_project
from edgeann.testing import jet_mlp

# A throughput measurement: takes the inputs, returns the outputs (float64, like graph.predict).
Runner = Callable[[np.ndarray], np.ndarray]


def measure(name: str, run: Runner, x: np.ndarray, want: np.ndarray) -> float:
    t0 = time.perf_counter()
    y = run(x)
    dt = time.perf_counter() - t0
    exact = np.array_equal(np.asarray(y, dtype=np.float64).reshape(want.shape), want)
    rate = len(x) / dt
    print(f"{name:<34} {len(x):>8} vectors {dt:8.2f} s {rate:12,.0f} vectors/s  bit-exact: {exact}")
    return rate


def main(argv: list[str] | None = None, extra_runners: dict[str, Runner] | None = None, graph=None, options=None,
         n_default: int = 100_000, description: str | None = None) -> dict[str, float]:
    """Run the benchmark; ``extra_runners`` adds more back ends on the same inputs.

    onnxruntime runs ``model.onnx`` written from the same graph (the reference the firmware is
    verified against), on the full ``--n`` vectors like the bridge. ``graph`` and ``options`` (hls4ml
    project options) default to the jet MLP with io_parallel; ``bench_cnn.py`` passes the jet CNN.
    """
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=n_default, help="vectors for the batched bridge (and extra runners)")
    ap.add_argument("--n-hls4ml", type=int, default=2_000, help="vectors for hls4ml's one-sample-per-call predict()")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for the batched bridge")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the project (default: a temporary directory)")
    args = ap.parse_args(argv)

    graph = graph or jet_mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, size=(args.n, *graph.input.shape)).astype(np.float32).astype(np.float64)  # onnxruntime reads float32
    want = graph.predict(x)
    session = onnx_qcdq.session(onnx_qcdq.to_onnx(graph))
    extra_runners = {"onnxruntime (model.onnx)": lambda v: onnx_qcdq.run(session, v), **(extra_runners or {})}

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        project = write_project(graph, workdir / graph.name, options)
        t1 = time.perf_counter()
        csim = compile_csim(project)
        t2 = time.perf_counter()
        print(f"write_project {t1 - t0:.2f} s, compile_csim (g++) {t2 - t1:.2f} s, {os.cpu_count()} cpus")

        rates = {}
        batched = f"edgeann batched ({args.threads} threads)"
        rates["batched"] = measure(batched, lambda v: csim.predict(v, threads=args.threads), x, want)
        q = args.n // 4
        rates["1 thread"] = measure("edgeann batched (1 thread)", lambda v: csim.predict(v, threads=1), x[:q], want[:q])

        # hls4ml's own compile() rewrites the project (with a new random stamp) and builds its library.
        model = project.hls_model
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model.compile()
        print(f"hls4ml compile() {time.perf_counter() - t0:.2f} s")
        m = args.n_hls4ml
        hls4ml_predict = lambda v: model.predict(np.ascontiguousarray(v))  # noqa: E731
        rates["hls4ml"] = measure("hls4ml predict() (1 call/vector)", hls4ml_predict, x[:m], want[:m])

        for name, run in extra_runners.items():
            rates[name] = measure(name, run, x, want)

    print(f"ratio edgeann batched / hls4ml predict: {rates['batched'] / rates['hls4ml']:.1f}x")
    print(f"ratio edgeann 1 thread / hls4ml predict: {rates['1 thread'] / rates['hls4ml']:.1f}x")
    print(f"ratio edgeann batched / onnxruntime: {rates['batched'] / rates['onnxruntime (model.onnx)']:.2f}x")
    return rates


if __name__ == "__main__":
    main()
