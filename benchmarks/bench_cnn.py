"""Compile time and C-simulation throughput of the jet CNN: edgeann's batched bridge vs hls4ml's predict() vs onnxruntime.

    python benchmarks/bench_cnn.py [--n 20000] [--n-hls4ml 1000] [--threads N] [--io-type io_stream] [--workdir DIR]

The CNN of flows/jet_cnn.yaml with random weights (edgeann.testing.jet_cnn: 16x16x1 image, conv 3x3 'same' x8,
batch norm, max pool, conv 3x3 x16, max pool, dense 16, dense 5; 6-bit weights ~50% pruned), written as an hls4ml
project (io_stream, as the flow builds it, unless --io-type), compiled with g++ and run in one process by edgeann's
bridge, by hls4ml's own compile()/predict() and, from the same graph, by onnxruntime; every output is checked
against the graph's golden model. The measurement is bench_csim.py's, on this graph.
"""

from __future__ import annotations

import sys

import bench_csim

from edgeann.backends.hls import HlsOptions
from edgeann.testing import jet_cnn


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = list(sys.argv[1:] if argv is None else argv)
    io_type = "io_stream"
    if "--io-type" in argv:
        i = argv.index("--io-type")
        io_type = argv[i + 1]
        del argv[i : i + 2]
    print(f"jet CNN, {io_type}")
    return bench_csim.main(argv, graph=jet_cnn(), options=HlsOptions(io_type=io_type), n_default=20_000,
                           description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
