"""The ``verify`` stage: the firmware's C simulation against the reference, output by output.

Equality is ``np.array_equal``; anything else is reported as the number of mismatching outputs
and the largest difference in LSBs, and the first layer where firmware and reference diverge
is located by tracing the firmware against the fixed-point graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeann import ir
from edgeann.export import compare

MIN_VECTORS = 10_000


def edge_vectors(graph: ir.Graph, float64: bool = False, mixed: int = 2000, on_grid: bool = False) -> np.ndarray:
    """Inputs at the edges of the input type: grid points and values just off them, min/max codes,
    saturating, huge, infinite and subnormal values; each value on every input, then ``mixed``
    vectors drawing a value per input. float32 unless ``float64`` (onnxruntime reads float32).
    ``on_grid``: only the input type's own values (every code of a type up to 8 bits, else every
    64th and the extremes), for a reference that reads any float where the firmware reads the type.
    """
    t, n = graph.input.type, int(np.prod(graph.input.shape))
    lsb = t.scale
    lo, hi = t.int_min * lsb, t.int_max * lsb
    grid = np.arange(t.int_min, t.int_max + 1, max(1, (t.int_max - t.int_min) // 64)) * lsb
    eps = np.array([0.0, 1e-12, -1e-12, lsb / 2, -lsb / 2, lsb * (1 - 2**-20), -lsb * 2**-20])
    values = np.concatenate([
        (grid[:, None] + eps[None, :]).ravel(),
        [lo, hi, lo - lsb, hi + lsb, hi + lsb * (1 - 2**-20), -1e-45, 1e-45, -0.0],
        [1e30, -1e30, 2.0**70, -(2.0**70), 2.0**40, -(2.0**40), np.inf, -np.inf],
    ])
    if on_grid:
        step = 1 if t.int_max - t.int_min < 256 else (t.int_max - t.int_min) // 64
        values = np.concatenate([np.arange(t.int_min, t.int_max + 1, step), [t.int_min, t.int_max, 0, 1, -1]])
        values = values[(values >= t.int_min) & (values <= t.int_max)] * lsb
    dtype = np.float64 if float64 else np.float32
    values = np.unique(values.astype(dtype))
    rows = [np.full(n, v) for v in values]
    rng = np.random.default_rng(7)
    rows += [rng.choice(values, size=n) for _ in range(mixed)]
    return np.array(rows, dtype=dtype).reshape(-1, *graph.input.shape)


def random_vectors(graph: ir.Graph, n: int, seed: int = 0, on_grid: bool = False) -> np.ndarray:
    """Uniform over the input range, on and between grid points (so truncation is exercised), or only on them."""
    t = graph.input.type
    rng = np.random.default_rng(seed)
    codes = rng.integers(t.int_min, t.int_max + 1, (n, *graph.input.shape))
    offset = 0.0 if on_grid else rng.choice([0.0, 0.25, 0.5, 0.999], size=codes.shape)
    return ((codes + offset) * t.scale).astype(np.float32)


def verification_inputs(graph: ir.Graph, data: np.ndarray | None, minimum: int = MIN_VECTORS, seed: int = 0,
                        on_grid: bool = False):
    """The data (e.g. the whole test split), edge vectors, and random vectors up to ``minimum``; ``on_grid``: only
    values of the input type (see :func:`edge_vectors`)."""
    parts, desc = [], {}
    if data is not None and len(data):
        parts.append(np.asarray(data, np.float32).reshape(-1, *graph.input.shape))
        desc["data"] = len(parts[-1])
    parts.append(edge_vectors(graph, on_grid=on_grid))
    desc["edge"] = len(parts[-1])
    missing = minimum - sum(len(p) for p in parts)
    if missing > 0:
        parts.append(random_vectors(graph, missing, seed, on_grid))
        desc["random"] = missing
    if on_grid:
        desc["on_grid"] = f"every value is one of the input type's ({graph.input.type})"
    return np.concatenate(parts), desc


class HlsSimulation:
    """The hls4ml project's g++ C simulation behind the simulator contract :func:`verify` reads: ``predict(x)``,
    ``sha256()``, ``first_divergence(graph, rows)``, ``backend`` and ``description``."""

    backend = "hls4ml"
    description = "firmware C simulation"

    def __init__(self, project_dir: Path):
        from edgeann.backends.hls import compile_csim

        self.project_dir = Path(project_dir).resolve()
        self.csim = compile_csim(self.project_dir)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.csim.predict(x)

    def sha256(self) -> str:
        from edgeann.backends.hls import firmware_sha256

        return firmware_sha256(self.project_dir)

    def first_divergence(self, graph: ir.Graph, rows: np.ndarray):
        from edgeann.backends.hls import first_divergence

        return first_divergence(graph, self.project_dir, rows)


VECTORS_ARRAYS = {"x": "the input vectors (float32, as given to the simulation and the references)",
                  "firmware": "the simulation's outputs, one row per vector",
                  "reference": "the primary reference's outputs, one row per vector"}


def verify(graph: ir.Graph, project_dir: Path, x: np.ndarray, references: dict[str, Callable[[np.ndarray], np.ndarray]],
           inputs_description: dict | None = None, simulation=None, vectors_file: Path | None = None) -> dict:
    """Run a back end's simulation on ``x`` (by default the hls4ml C simulation of ``project_dir``) and compare it
    with each reference; the first one is primary. With ``vectors_file`` (inside ``project_dir``) the inputs, the
    simulation's outputs and the primary reference's outputs are kept there in one ``.npz``, named in the result,
    so that anyone can recompute the comparison without a compiler."""
    lsb = graph.infos()[graph.outputs[0]].type.scale
    t0 = time.perf_counter()
    sim = simulation if simulation is not None else HlsSimulation(project_dir)
    t_compile = time.perf_counter() - t0 + getattr(sim, "compile_seconds", 0.0)
    t0 = time.perf_counter()
    fw = sim.predict(x).reshape(len(x), -1)
    t_csim = time.perf_counter() - t0
    comparisons, outputs = {}, {}
    for name, reference in references.items():
        t0 = time.perf_counter()
        outputs[name] = ref = np.asarray(reference(x), np.float64).reshape(len(x), -1)
        comparisons[name] = {**compare(fw, ref, lsb), "seconds": round(time.perf_counter() - t0, 3)}
    primary_name = next(iter(references))
    primary = comparisons[primary_name]
    result = {
        "n_samples": primary["n_samples"],
        "n_outputs": primary["n_outputs"],
        "exact": primary["exact"],
        "exact_fraction": primary["exact_fraction"],
        "mismatches": primary["mismatches"],
        "max_abs_diff": primary["max_abs_diff"],
        "max_lsb_diff": primary["max_lsb_diff"],
        "reference": primary_name,
        "comparisons": comparisons,
        "backend": sim.backend,
        "simulation": sim.description,
        "firmware_sha256": sim.sha256(),
        "inputs": inputs_description or {"given": len(x)},
        "csim_seconds": round(t_csim, 3),
        "csim_vectors_per_second": round(len(x) / max(t_csim, 1e-9)),
        "compile_seconds": round(t_compile, 1),
        "first_divergence": None,
    }
    if vectors_file is not None:
        vectors_file = Path(vectors_file)
        np.savez_compressed(vectors_file, x=np.asarray(x, np.float32), firmware=np.asarray(fw, np.float64),
                            reference=outputs[primary_name])
        result["vectors"] = {"file": vectors_file.resolve().relative_to(Path(project_dir).resolve()).as_posix(),
                             "arrays": {**VECTORS_ARRAYS,
                                        "reference": f"{primary_name}: its outputs, one row per vector"},
                             "recompute": "np.array_equal(firmware, reference)"}
    if not all(c["exact"] for c in comparisons.values()):
        bad = np.flatnonzero(np.any(fw != outputs[primary_name], axis=1))
        rows = x[bad[:256]] if len(bad) else x[:256]
        div = sim.first_divergence(graph, rows)
        result["first_divergence"] = None if div is None else {"layer": div.layer, "samples": div.n_mismatch,
                                                               "max_lsb_diff": div.max_lsb_diff}
    ties = {n.name: int(n.near_ties) for n in graph.nodes if getattr(n, "near_ties", 0)}
    if ties:  # exact requantization of a foreign model: where the original's own float32 rounding decides
        result["near_float_ties"] = {
            "steps": ties,
            "note": "threshold steps where the original model's value is within 4 float32 units in the last place of "
                    "a quantizer's rounding boundary: it sums products with scales that are no power of two in "
                    "float32, so its summation order decides the output on inputs that reach them; the firmware "
                    "follows the exact value (code x scale)"}
    result["summary"] = summary(result)
    if ties:
        result["summary"] += (f"; {sum(ties.values())} threshold steps lie within float32 rounding of the original's "
                              "sums (near_float_ties)")
    return result


def summary(v: dict) -> str:
    head = (f"{v['n_samples']} vectors x {v['n_outputs'] // max(v['n_samples'], 1)} outputs: "
            f"{v.get('simulation', 'firmware C simulation')} vs {v['reference']}: ")
    if v["exact"]:
        text = head + "bit-exact (all outputs equal)"
    else:
        text = head + (f"NOT bit-exact: {v['mismatches']} outputs differ "
                       f"({100 * (1 - v['exact_fraction']):.4f}%), max {v['max_lsb_diff']:g} LSB")
        if v.get("first_divergence"):
            d = v["first_divergence"]
            text += f"; first divergence at layer {d['layer']} ({d['samples']} samples, max {d['max_lsb_diff']:g} LSB)"
    others = [f"{k}: {'exact' if c['exact'] else str(c['mismatches']) + ' mismatches'}"
              for k, c in v["comparisons"].items() if k != v["reference"]]
    return text + (f" [{'; '.join(others)}]" if others else "")
