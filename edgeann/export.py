"""The ``export`` stage: trained model -> fixed-point graph -> ONNX (QCDQ) and QONNX, checked exact.

* ``graph.npz``: the fixed-point graph (:mod:`edgeann.ir`), what firmware is generated from;
* ``model.onnx``: standard ONNX for onnxruntime, written from the graph (:mod:`edgeann.backends.onnx_qcdq`);
* ``model.qonnx.onnx``: QONNX ``Quant`` nodes from Brevitas' exporter, cleaned with qonnx; not for
  networks with a layer Brevitas cannot export (the GRU): the metrics then say so and why.

:func:`check_exact` proves the chain: onnxruntime on ``model.onnx`` must equal the PyTorch
model (run in float64, where its sums are exact) on every output, compared with
``np.array_equal``; the QONNX file is executed with qonnx's executor and compared too.
"""

from __future__ import annotations

import copy
import io
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeann import ir
from edgeann.backends import onnx_qcdq
from edgeann.frontends.lowering import lower
from edgeann.models import EdgeModel

def compare(a: np.ndarray, b: np.ndarray, lsb: float) -> dict:
    """Exact comparison: number of differing outputs and the largest difference in LSBs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    return {
        "exact": bool(np.array_equal(a, b)),
        "n_samples": int(a.shape[0]),
        "n_outputs": int(a.size),
        "mismatches": int(np.count_nonzero(diff)),
        "exact_fraction": float(1.0 - np.count_nonzero(diff) / max(a.size, 1)),
        "max_abs_diff": float(diff.max(initial=0.0)),
        "max_lsb_diff": float(diff.max(initial=0.0) / lsb),
    }


@torch.no_grad()
def torch_reference(model: EdgeModel, x: np.ndarray, batch: int = 16384) -> np.ndarray:
    """The model's outputs in float64 on the CPU, where every fixed-point sum is exact."""
    m = copy.deepcopy(model).cpu().double().eval()
    xt = torch.as_tensor(x, dtype=torch.float64)
    return torch.cat([m(xt[i : i + batch]) for i in range(0, len(xt), batch)]).numpy()


def write_qonnx(model: EdgeModel, path: Path) -> None:
    from brevitas.export import export_qonnx
    from qonnx.util.cleanup import cleanup

    m = copy.deepcopy(model).cpu().float().eval()
    raw = path.with_name(path.name + ".raw")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # torch's dynamo exporter fails on Brevitas' quantizers; the TorchScript one works
        export_qonnx(m, input_t=torch.zeros(1, *model.input_shape), export_path=str(raw), dynamo=False)
        cleanup(str(raw), out_file=str(path))
    raw.unlink()


def run_qonnx(path: Path, x: np.ndarray) -> np.ndarray:
    """qonnx's executor on a whole batch (the file's batch dimension is reset to ``len(x)``)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    w = ModelWrapper(str(path))
    w.graph.ClearField("value_info")
    i_name, o_name = w.graph.input[0].name, w.graph.output[0].name
    w.set_tensor_shape(i_name, [len(x), *w.get_tensor_shape(i_name)[1:]])
    for o in w.graph.output:
        o.type.tensor_type.shape.dim[0].dim_value = len(x)
    w = w.transform(InferShapes())
    return np.asarray(execute_onnx(w, {i_name: np.ascontiguousarray(x, np.float32)})[o_name], np.float64)


@dataclass
class Exported:
    graph: ir.Graph
    checks: dict


def qonnx_unsupported(model: EdgeModel) -> list[str]:
    """The layers Brevitas' QONNX exporter cannot write: those that say so with ``exports_qonnx = False``
    (edgeann's own recurrent layers; QONNX has no recurrent op)."""
    return [name for name, m in model.layers.named_modules() if getattr(m, "exports_qonnx", True) is False]


def export_model(model: EdgeModel, name: str, run_dir: Path, x_check: np.ndarray) -> Exported:
    """Write graph.npz, model.onnx and (where Brevitas can) model.qonnx.onnx into ``run_dir`` and check them."""
    graph = lower(model, name)
    graph.save(run_dir / "graph.npz")
    onnx_qcdq.save(graph, run_dir / "model.onnx")
    unsupported = qonnx_unsupported(model)
    if not unsupported:
        write_qonnx(model, run_dir / "model.qonnx.onnx")
    checks = check_exact(model, graph, run_dir, x_check, qonnx=not unsupported)
    if unsupported:
        checks["qonnx_vs_pytorch"] = {
            "skipped": True,
            "reason": f"no model.qonnx.onnx: Brevitas' QONNX exporter cannot write {', '.join(unsupported)} (QONNX has no "
                      "recurrent op); model.onnx and graph.npz hold the whole network",
        }
    return Exported(graph, checks)


def check_exact(model: EdgeModel, graph: ir.Graph, run_dir: Path, x: np.ndarray, qonnx: bool = True) -> dict:
    lsb = graph.infos()[graph.outputs[0]].type.scale
    ref = torch_reference(model, x)
    ort_out = onnx_qcdq.run(run_dir / "model.onnx", x)
    checks = {
        "onnxruntime_vs_pytorch": {**compare(ort_out, ref, lsb), "reference": "PyTorch (Brevitas) in float64"},
        "graph_vs_pytorch": compare(graph.predict(x), ref, lsb),
    }
    if qonnx:
        checks["qonnx_vs_pytorch"] = {**compare(run_qonnx(run_dir / "model.qonnx.onnx", x), ref, lsb),
                                      "reference": "qonnx executor on model.qonnx.onnx"}
    return checks
