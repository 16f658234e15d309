"""Foreign models: edgeann's firmware against hls4ml's own ONNX/QONNX frontend, both checked against the original.

    python benchmarks/bench_foreign.py [--models DIR] [--model PATH[:ap_fixed<W,I>] ...] [--json PATH]

On each example model that ``edgeann examples DIR`` writes (QKeras-, Brevitas- and FINN-style QONNX; without
``--models`` they are written into a temporary folder), two toolchains are run and compared with the ORIGINAL model
run by qonnx's executor (``edgeann.export.run_qonnx``) on the same input vectors:

* edgeann: ``export_firmware`` with the example's ``--input-precision``; its figure is the verification's own
  ``exact_fraction`` over ``n_samples`` vectors (firmware bit-equal to the original, at the logits where the model
  ends in a Softmax, and as integer codes where the original's output scale is no power of two).
* hls4ml (the installed version), as its documentation and tests use it on a QONNX file: ``cleanup_model``,
  ``ConvertToChannelsLastAndClean``, ``GemmToMatMul``, ``cleanup_model``, ``config_from_onnx_model(granularity=
  'name', backend='Vitis', default_precision='fixed<16,6>')``, ``convert_from_onnx_model(io_type='io_parallel')``,
  ``compile`` and ``predict`` on the ``x`` that edgeann verified with (``edgeann/verification.npz``). A model that
  ends in a Softmax is cut before its Softmax, for hls4ml and for the original alike, so both are compared at the
  logits. The figures: the fraction of output values equal to the original's float values (``np.mean(a == b)``, no
  tolerance), the largest absolute difference, and the fraction of vectors whose argmax agrees. Where hls4ml
  refuses the model (conversion, compile or predict raises) the table shows its error's first line instead.

How to read it: 1.0 means bit-equal on every value checked. The times are wall seconds: edgeann's is the whole
``export_firmware`` (graph, hls4ml project, compiled C simulation, verification against the original and
onnxruntime); hls4ml's is clean-up, conversion, ``compile`` (g++) and ``predict``. Both compile C++ with g++, so on
a shared machine the times depend on what else runs; the first model's times include one-off imports.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def input_precision(example) -> str | None:
    """The ``--input-precision`` of an example's export command, unquoted."""
    opts = list(example.options)
    if "--input-precision" in opts:
        return opts[opts.index("--input-precision") + 1].strip("'\"")
    return None


def cut_softmax(path: Path, out: Path) -> tuple[Path, bool]:
    """A copy of the model without its final Softmax (its input becomes the graph output); the file itself where
    the last op is no Softmax."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    last = graph.node[-1]
    if last.op_type != "Softmax" or last.output[0] != graph.output[0].name:
        return path, False
    old = graph.output[0]
    graph.node.remove(last)
    graph.output.remove(old)
    kept = [vi for vi in graph.value_info if vi.name != last.input[0]]  # the new output's shape is the output's
    del graph.value_info[:]
    graph.value_info.extend(kept)
    graph.output.append(helper.make_tensor_value_info(last.input[0], old.type.tensor_type.elem_type,
                                                      [d.dim_value for d in old.type.tensor_type.shape.dim]))
    onnx.save(model, str(out))
    return out, True


def run_edgeann(path: Path, out: Path, precision: str | None) -> dict:
    from edgeann.pipeline import PROJECT_DATA, VECTORS, export_firmware

    t0 = time.perf_counter()
    project, verification = export_firmware(path, out, echo=lambda *a: None, input_precision=precision)
    wall = time.perf_counter() - t0
    with np.load(project / PROJECT_DATA / VECTORS) as vectors:
        x = np.asarray(vectors["x"], np.float32)
    return {"exact_fraction": float(verification["exact_fraction"]), "n_samples": int(verification["n_samples"]),
            "seconds": wall, "x": x}


def hls4ml_predict(path: Path, out: Path, x: np.ndarray) -> np.ndarray:
    """hls4ml's QONNX flow as its own tests (test/pytest/test_qonnx.py) run it."""
    import hls4ml
    import qonnx.util.cleanup
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul

    model = ModelWrapper(str(path))
    model = qonnx.util.cleanup.cleanup_model(model)
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = qonnx.util.cleanup.cleanup_model(model)
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                        default_precision="fixed<16,6>")
    hls_model = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(out), io_type="io_parallel",
                                                          backend="Vitis", hls_config=config)
    hls_model.compile()
    return np.asarray(hls_model.predict(np.ascontiguousarray(x)), np.float64)


def run_hls4ml(path: Path, out: Path, x: np.ndarray) -> dict:
    """hls4ml's output compared with ``run_qonnx`` on the same file and the same ``x``, float values, no tolerance."""
    from edgeann.export import run_qonnx

    t0 = time.perf_counter()
    try:
        reference = run_qonnx(path, x)
    except Exception as e:  # noqa: BLE001 - the row says so instead of ending the whole run
        return {"error": f"the reference did not run ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})",
                "raised_in": "run_qonnx", "seconds": time.perf_counter() - t0}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # hls4ml prints its topology; the table is the output
            y = hls4ml_predict(path, out, x)
    except Exception as e:  # noqa: BLE001 - a refusal is a result here
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}",
                "raised_in": f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})",
                "seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    y = y.reshape(reference.shape)
    return {"exact_fraction": float(np.mean(y == reference)), "max_abs_diff": float(np.max(np.abs(y - reference))),
            "argmax_agreement": float(np.mean(np.argmax(y, axis=-1) == np.argmax(reference, axis=-1))),
            "n_values": int(reference.size), "seconds": wall}


def bench(models: Path | None, root: Path, extra: list[tuple[Path, str | None]] = ()) -> list[dict]:
    from edgeann.examples import EXAMPLES

    todo = [(models / e.file, input_precision(e)) for e in EXAMPLES if models is not None and (models / e.file).exists()]
    rows = []
    for path, precision in [*todo, *extra]:
        stem = path.stem
        row = {"model": path.name, "input_precision": precision}
        try:
            row["edgeann"] = ea = run_edgeann(path, root / f"{stem}_edgeann", precision)
        except Exception as e:  # noqa: BLE001
            row["edgeann"] = {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"}
            rows.append(row)
            continue
        x = ea.pop("x")
        cut, was_cut = cut_softmax(path, root / f"{stem}_logits.onnx")
        row["compared_at"] = "logits (Softmax cut)" if was_cut else "model output"
        row["hls4ml"] = run_hls4ml(cut, root / f"{stem}_hls4ml", x)
        rows.append(row)
    return rows


def fmt(v, digits: int = 6) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    lines = ["| model | edgeann exact fraction | hls4ml exact fraction | hls4ml max abs diff | hls4ml argmax agreement "
             "| times (s): edgeann / hls4ml |", "|---|---|---|---|---|---|"]
    for r in rows:
        ea, hl = r.get("edgeann", {}), r.get("hls4ml", {})
        ea_cell = ea["error"] if "error" in ea else f"{fmt(ea['exact_fraction'])} (n={ea['n_samples']})"
        if "error" in hl:
            hl_cells = [f"refused: {hl['error']}", "-", "-"]
        elif hl:
            hl_cells = [f"{fmt(hl['exact_fraction'])} ({hl['n_values']} values)", fmt(hl["max_abs_diff"]),
                        fmt(hl["argmax_agreement"])]
        else:
            hl_cells = ["-", "-", "-"]
        times = f"{fmt(ea.get('seconds'), 3)} / {fmt(hl.get('seconds'), 3)}"
        lines.append(f"| {r['model']} ({r.get('compared_at', '-')}) | {ea_cell} | " + " | ".join(hl_cells)
                     + f" | {times} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="a folder written by `edgeann examples DIR` (default: write them)")
    ap.add_argument("--json", type=Path, help="write the numbers to this JSON file")
    ap.add_argument("--model", action="append", default=[], metavar="PATH[:ap_fixed<W,I>]",
                    help="a QONNX model of your own (repeatable), with the --input-precision its export needs; with "
                         "--model and no --models only these are run")
    args = ap.parse_args()
    extra = [(Path(m.split(":", 1)[0]), m.split(":", 1)[1] if ":" in m else None) for m in args.model]
    with tempfile.TemporaryDirectory(prefix="bench-foreign-") as tmp:
        tmp = Path(tmp)
        models = args.models
        if models is None and not extra:
            from edgeann.examples import write_examples

            models = tmp / "models"
            write_examples(models)
        rows = bench(models, tmp, extra)
    print(table(rows))
    for r in rows:
        if "error" in r.get("hls4ml", {}):
            print(f"hls4ml refused {r['model']}: {r['hls4ml']['error']} (raised in {r['hls4ml']['raised_in']})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
