"""Vectors for the project's own test bench (``<project>_test.cpp``, hls4ml's template), which vendor C and
C/RTL co-simulation run: ``tb_data/tb_input_features.dat`` and ``tb_data/tb_output_predictions.dat``.

The format is what hls4ml's writer produces and its test bench reads: one vector per line, values separated
by spaces, each line parsed with ``atof`` into a ``std::vector<float>`` and copied into the input type.
Every input value is written as the value the firmware's input port holds for it, i.e. already floored and
saturated onto the input type exactly as the firmware's ``double -> input_t`` conversion does (huge and
infinite edge values become the saturated end of the range). The port sees the same codes either way, so the
outputs are the firmware's outputs on the verification vectors line by line; and values on the input grid
are dyadic numbers that ``float`` holds exactly (input types of at most 24 bits) and that print exactly, so
the test bench reads back exactly these codes. The predictions are the C simulation's exact outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeann import ir

TB_DIR = "tb_data"
INPUT_FILE = "tb_input_features.dat"
OUTPUT_FILE = "tb_output_predictions.dat"
MAX_VALUES = 250_000  # inputs + outputs written, about 2 MB of text; more vectors are thinned evenly
FLOAT_MANTISSA_BITS = 24  # the test bench reads values into float


def select_rows(n_vectors: int, values_per_vector: int, max_values: int = MAX_VALUES) -> np.ndarray:
    """All vectors if they fit in ``max_values`` values, else evenly spaced ones (first and last included), so
    every part of the verification set (test data, edge vectors, random vectors) keeps its share."""
    keep = max(1, max_values // max(values_per_vector, 1))
    if n_vectors <= keep:
        return np.arange(n_vectors)
    return np.unique(np.linspace(0, n_vectors - 1, keep).round().astype(np.int64))


def port_values(graph: ir.Graph, x: np.ndarray) -> np.ndarray:
    """``x`` as the firmware's input port holds it: floored (or rounded) and saturated onto the input type."""
    t = graph.input.type
    codes = ir.quantize_float(x, t, getattr(graph.input, "rounding", "floor"))
    return codes.astype(np.float64) * t.scale  # exact: codes of at most 53 bits times a power of two


def _format(rows: np.ndarray) -> str:
    # repr of a float64 is the shortest decimal that parses back to exactly that double
    return "".join(" ".join(map(repr, row)) + "\n" for row in rows.tolist())


def write_testbench_data(project_dir: str | Path, graph: ir.Graph, x: np.ndarray, csim) -> dict:
    """Write the test bench's input and expected-output files from the verification vectors ``x``, with the
    outputs of the compiled C simulation ``csim``; returns what was written (for verification.json)."""
    from edgeann.backends.hls.hls import sat

    t, out_t = graph.input.type, graph.infos()[graph.outputs[0]].type
    rounding = getattr(graph.input, "rounding", "floor")
    tb = Path(project_dir) / TB_DIR
    if t.width > FLOAT_MANTISSA_BITS or out_t.width > FLOAT_MANTISSA_BITS:
        return {"written": False, "reason": f"the test bench reads values as float, which cannot hold every value of "
                                            f"{t} (input) or {out_t} (output) exactly"}
    n_in, n_out = int(np.prod(graph.input.shape)), int(np.prod(graph.infos()[graph.outputs[0]].shape))
    rows = select_rows(len(x), n_in + n_out)
    inputs = port_values(graph, x[rows]).reshape(len(rows), *graph.input.shape)
    outputs = csim.predict(inputs).reshape(len(rows), -1)
    if not np.array_equal(outputs, csim.predict(x[rows]).reshape(len(rows), -1)):
        raise RuntimeError("the firmware gives different outputs for a vector and its input-port value")
    tb.mkdir(exist_ok=True)
    (tb / INPUT_FILE).write_text(_format(inputs.reshape(len(rows), -1)))
    (tb / OUTPUT_FILE).write_text(_format(outputs))
    return {
        "written": True,
        "files": [f"{TB_DIR}/{INPUT_FILE}", f"{TB_DIR}/{OUTPUT_FILE}"],
        "vectors": int(len(rows)),
        "of": int(len(x)),
        "selection": "all verification vectors" if len(rows) == len(x) else
                     f"{len(rows)} evenly spaced verification vectors (at most {MAX_VALUES} values in the two files)",
        "inputs": f"as the input port holds them: {'floored' if rounding == 'floor' else 'rounded'} and saturated onto "
                  f"{sat(t, rounding)}",
    }


def read_dat(path: str | Path) -> np.ndarray:
    """A .dat file as written here (or by hls4ml's test bench log): one vector per line."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    return np.array([[float(v) for v in line] for line in lines], dtype=np.float64)
