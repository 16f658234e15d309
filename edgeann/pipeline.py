"""The whole line in one place:

    flow YAML -> data -> model -> train -> export -> firmware -> C simulation -> verify -> report

Each stage is a plain function in its own module; this file only strings them together and
owns the run directory. Nothing is written until the flow and the data have been validated,
and an existing run directory is only replaced with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from edgeann import data, plots
from edgeann.config import Flow
from edgeann.errors import EdgeannError
from edgeann.export import export_model
from edgeann.metrics import classification, layer_table
from edgeann.prune import layer_sparsity, total_sparsity
from edgeann.train import select_device, train


def write_json(path: Path, obj) -> None:
    """Write atomically, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, allow_nan=True)
        fh.write("\n")
    os.replace(tmp, path)


def default_run_dir(flow: Flow) -> Path:
    return Path("runs") / flow.name


def _check_run_dir(run_dir: Path, force: bool, resume: bool) -> None:
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise EdgeannError(f"cannot resume: {run_dir / 'checkpoints' / 'last.pt'} not found")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise EdgeannError(f"{run_dir} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise EdgeannError(f"run directory {run_dir} already exists; use --force to replace it or --resume to continue it")


def _check_resumable(run_dir: Path, flow: Flow) -> None:
    """The flow may change only in its epoch count and device when a run is resumed."""
    try:
        saved = yaml.safe_load((run_dir / "flow.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise EdgeannError(f"cannot resume: {run_dir / 'flow.yaml'} unreadable ({e})") from None
    now = flow.model_dump(mode="json")
    for tree in (saved, now):
        tree.get("training", {}).pop("epochs", None)
        tree.get("training", {}).pop("device", None)
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise EdgeannError(f"cannot resume {run_dir}: the flow's {', '.join(changed)} section(s) differ from the run's flow.yaml")


def train_run(flow: Flow, out: Path | None = None, force: bool = False, resume: bool = False, progress: bool = True) -> Path:
    """Train ``flow`` and export the result; returns the run directory."""
    run_dir = Path(out) if out is not None else default_run_dir(flow)
    _check_run_dir(run_dir, force, resume)
    if resume:
        _check_resumable(run_dir, flow)
    select_device(flow.training.device)  # fail on a missing GPU before any work
    splits = data.prepare(flow.data, flow.seed)

    if force and not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "flow.yaml").write_text(flow.to_yaml())
    splits.scaler.save(run_dir / "scaler.json")
    np.savez(run_dir / "test_data.npz", x=splits.test.x, y=splits.test.y, classes=np.array(splits.classes))

    t0 = time.perf_counter()
    result = train(flow, splits, run_dir, resume=resume, progress=progress)
    train_time = time.perf_counter() - t0
    model = result.model

    exported = export_model(model, flow.name, run_dir, splits.test.x)
    graph = exported.graph
    from edgeann import onnx_qcdq

    # test metrics come from the exact fixed-point model: what the firmware computes
    test_logits = onnx_qcdq.run(run_dir / "model.onnx", splits.test.x)
    val_logits = onnx_qcdq.run(run_dir / "model.onnx", splits.val.x)
    layers = layer_table(graph)
    infos = graph.infos()
    metrics = {
        "flow": flow.name,
        "family": flow.model.family,
        "classes": splits.classes,
        "device": str(select_device(flow.training.device)),
        "epochs_trained": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_time_s": round(train_time, 2),
        "test": classification(test_logits, splits.test.y, splits.classes),
        "val": classification(val_logits, splits.val.y, splits.classes),
        "sparsity": {
            "total": total_sparsity(model),
            "target": flow.pruning.target_sparsity if flow.pruning.method != "none" else 0.0,
            "layers": layer_sparsity(model),
        },
        "bit_widths": {
            row["layer"]: {"input": row["input_type"], "weight": row["weight_bits"], "bias": row["bias_bits"],
                           "accumulator": row["accumulator_type"]}
            for row in layers
        },
        "tensor_types": {name: info.type.hls() for name, info in infos.items()},
        "layers": layers,
        "bops": sum(r["bops"] for r in layers),
        "export": exported.checks,
        "onnx_exact": exported.checks["onnxruntime_vs_pytorch"]["exact"],
    }
    write_json(run_dir / "history.json", result.history)
    write_json(run_dir / "metrics.json", metrics)
    plots.learning_curves(result.history, run_dir / "learning_curves.png", result.best_epoch, title=f"{flow.name}: QAT")
    plots.roc_curves(test_logits, splits.test.y, splits.classes, run_dir / "roc_curves.png",
                     title=f"{flow.name}: fixed-point model, test split")
    return run_dir
