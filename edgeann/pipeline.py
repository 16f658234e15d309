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
from edgeann.models import create_model
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
    create_model(flow.model, splits.sample_shape, len(splits.classes), None)  # the family fits the data: stop before writing

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

    if not model.quantized:  # a float baseline: metrics and plots, nothing to build firmware from
        from edgeann.train import logits_numpy

        return _finish_run(run_dir, flow, splits, result, train_time, logits_numpy(model, splits.test),
                           logits_numpy(model, splits.val), {"quantized": False})

    exported = export_model(model, flow.name, run_dir, splits.test.x)
    graph = exported.graph
    from edgeann import onnx_qcdq

    # test metrics come from the exact fixed-point model: what the firmware computes
    test_logits = onnx_qcdq.run(run_dir / "model.onnx", splits.test.x)
    val_logits = onnx_qcdq.run(run_dir / "model.onnx", splits.val.x)
    layers = layer_table(graph)
    infos = graph.infos()
    extra = {
        "quantized": True,
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
    return _finish_run(run_dir, flow, splits, result, train_time, test_logits, val_logits, extra)


def _finish_run(run_dir, flow, splits, result, train_time, test_logits, val_logits, extra: dict) -> Path:
    model = result.model
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
        **extra,
    }
    write_json(run_dir / "history.json", result.history)
    write_json(run_dir / "metrics.json", metrics)
    plots.learning_curves(result.history, run_dir / "learning_curves.png", result.best_epoch, title=f"{flow.name}: QAT")
    kind = "fixed-point model" if extra["quantized"] else "float model"
    plots.roc_curves(test_logits, splits.test.y, splits.classes, run_dir / "roc_curves.png",
                     title=f"{flow.name}: {kind}, test split")
    return run_dir


# ---------------------------------------------------------------------------------------------
# export --fpga -> firmware -> C simulation -> verify -> report

PROJECT_DATA = "edgeann"  # edgeann's own files inside a firmware project


def _identifier(name: str) -> str:
    """The model name as the firmware's top-function name (a safe C++ identifier)."""
    import re

    from edgeann.firmware.hls import is_safe_identifier

    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    ident = ident if ident[:1].isalpha() else f"m_{ident}"
    return ident if is_safe_identifier(ident) else f"{ident}_model"


def hls_options(fpga, name: str):
    from edgeann.firmware import HlsOptions

    return HlsOptions(backend=fpga.backend, io_type=fpga.io_type, strategy=fpga.strategy, reuse_factor=fpga.reuse_factor,
                      clock_period=fpga.clock_period, part=fpga.part, project_name=_identifier(name))


def _references(project: Path, kind: str) -> dict:
    """The reference implementations a project is verified against, primary first."""
    from edgeann import onnx_qcdq
    from edgeann.export import run_qonnx

    data = project / PROJECT_DATA
    session = onnx_qcdq.session(data / "reference.onnx")
    ort = ("onnxruntime on model.onnx (QCDQ)", lambda x: onnx_qcdq.run(session, x))
    if kind == "qonnx":
        return dict([("qonnx executor on the QONNX model", lambda x: run_qonnx(data / "source.onnx", x)), ort])
    return dict([ort])


def _load_fpga_config(source: Path, is_run: bool):
    from edgeann.config import FpgaConfig, load_flow

    return load_flow(source / "flow.yaml").fpga if is_run else FpgaConfig()


def _fpga_config(source: Path, is_run: bool, overrides: dict | None):
    from edgeann.config import FpgaConfig

    try:
        fpga = _load_fpga_config(source, is_run).model_copy(update=overrides or {})
        return FpgaConfig.model_validate(fpga.model_dump())
    except Exception as e:
        raise EdgeannError(f"bad FPGA option: {str(e).splitlines()[-1].strip()}") from None


def _fresh_project_dir(project: Path, force: bool) -> Path:
    if project.exists() and (not project.is_dir() or any(project.iterdir())):
        if not force:
            raise EdgeannError(f"output directory {project} already exists; use --force to replace it")
        shutil.rmtree(project)
    return project


def _export_source(source: Path, precision: str | None):
    """What an export reads: a finished run, or a foreign (Q)ONNX file. Returns (graph, kind, name, test inputs, is_run)."""
    from edgeann import ir
    from edgeann.frontend import from_onnx, load_onnx, parse_precision

    fixed_precision = parse_precision(precision) if precision else None
    is_run = source.is_dir()
    if is_run:
        if (source / "flow.yaml").is_file() and not yaml.safe_load((source / "flow.yaml").read_text()).get(
                "quantization", {}).get("enabled", True):
            raise EdgeannError(f"{source} is a float baseline (quantization.enabled: false): no fixed-point model to build firmware from")
        for needed in ("graph.npz", "model.onnx", "flow.yaml"):
            if not (source / needed).is_file():
                raise EdgeannError(f"{source} is not a finished edgeann run ({needed} missing)")
        if precision:
            raise EdgeannError("--precision is for float ONNX models; a run is already quantized")
        try:
            graph = ir.Graph.load(source / "graph.npz")
        except Exception as e:
            raise EdgeannError(f"{source / 'graph.npz'} is corrupt ({type(e).__name__})") from None
        kind, name = "run", graph.name
        data_x = np.load(source / "test_data.npz")["x"] if (source / "test_data.npz").is_file() else None
    elif source.is_file():
        model = load_onnx(source)
        quantized = any(n.op_type in ("Quant", "BipolarQuant") for n in model.graph.node)
        graph = from_onnx(source, fixed_precision)
        kind = "qonnx" if quantized else "float"
        name, data_x = graph.name, None
    else:
        raise EdgeannError(f"{source} not found (give a run directory or an .onnx file)")

    return graph, kind, name, data_x, is_run


def _write_project_data(project: Path, graph, source: Path, kind: str, is_run: bool, data_x, min_vectors: int,
                        precision: str | None):
    """edgeann's own files in a project (graph, reference ONNX, verification inputs); returns (inputs, their description)."""
    from edgeann import onnx_qcdq
    from edgeann.verify import verification_inputs

    data = project / PROJECT_DATA
    data.mkdir()
    graph.save(data / "graph.npz")
    if is_run:
        shutil.copyfile(source / "model.onnx", data / "reference.onnx")
    else:
        onnx_qcdq.save(graph, data / "reference.onnx")
        if kind == "qonnx":
            shutil.copyfile(source, data / "source.onnx")
    x, desc = verification_inputs(graph, data_x, min_vectors)
    np.savez_compressed(data / "inputs.npz", x=x)
    write_json(data / "source.json", {"kind": kind, "source": str(source.resolve()), "inputs": desc,
                                      "precision": precision})

    return x, desc


def export_firmware(source: Path, out: Path | None = None, fpga_overrides: dict | None = None, force: bool = False,
                    precision: str | None = None, synth: bool = False, min_vectors: int = 10_000,
                    echo=print) -> tuple[Path, dict]:
    """Turn a run (or a foreign ONNX/QONNX file) into a verified hls4ml project; returns (project, verification)."""
    from edgeann import onnx_qcdq
    from edgeann.firmware import write_project
    from edgeann.report import build_report, synthesize
    from edgeann.verify import verify

    source = Path(source)
    graph, kind, name, data_x, is_run = _export_source(source, precision)
    fpga = _fpga_config(source, is_run, fpga_overrides)
    options = hls_options(fpga, name)
    project = _fresh_project_dir(Path(out) if out is not None else Path("hls_projects") / name, force)

    echo(f"writing the hls4ml project for {name} to {project} ({options.backend}, {options.io_type}, {options.strategy}, "
         f"reuse {options.reuse_factor})")
    write_project(graph, project, options)
    x, desc = _write_project_data(project, graph, source, kind, is_run, data_x, min_vectors, precision)
    data = project / PROJECT_DATA

    echo(f"compiling the C simulation and checking {len(x)} vectors against the reference")
    result = verify(graph, project, x, _references(project, kind), desc)
    if kind == "float":
        # what post-training fixed point costs, on typical (standardized) inputs
        xs = np.random.default_rng(0).standard_normal((2000, *graph.input.shape)).astype(np.float32)
        diff = np.abs(onnx_qcdq.run_any(source, xs) - onnx_qcdq.run(data / "reference.onnx", xs))
        result["distance_to_float_model"] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                                             "inputs": "2000 standard-normal vectors", "precision": precision}
    if kind == "run" and data_x is not None and len(data_x):
        # what the fixed-point arithmetic costs: the firmware against the same weights in float, on the test split
        from edgeann.firmware import compile_csim
        from edgeann.float_twin import distance_to_float

        labels = np.load(source / "test_data.npz")["y"]
        result["distance_to_float_twin"] = distance_to_float(graph, data_x, compile_csim(project).predict(data_x), labels)
    write_json(project / "verification.json", result)

    report = build_report(graph, options)
    if synth:
        report["synthesis"] = synthesize(project, options)
        if report["synthesis"]["status"] == "skipped":
            echo(f"synthesis skipped: {report['synthesis']['reason']}")
    write_json(project / "report.json", report)
    return project, result


def export_rtl(source: Path, out: Path | None = None, fpga_overrides: dict | None = None, force: bool = False,
               precision: str | None = None, synth: bool = True, min_vectors: int = 10_000,
               echo=print) -> tuple[Path, dict]:
    """Turn a run (or a foreign ONNX/QONNX file) into a verified open-source RTL project (alkaid Verilog, Verilator,
    Yosys); returns (project, verification). The part and clock come from the flow's ``fpga`` section."""
    from edgeann.report import build_report
    from edgeann.rtl import RtlOptions, check_supported, compile_simulation, write_project
    from edgeann.rtl.report import backend_section, one_line
    from edgeann.rtl.synth import synthesize, xilinx_family
    from edgeann.verify import verify

    source = Path(source)
    graph, kind, name, data_x, is_run = _export_source(source, precision)
    fpga = _fpga_config(source, is_run, fpga_overrides)
    check_supported(graph)
    if synth:
        xilinx_family(fpga.part)  # refuse an unknown part before anything is written
    project = _fresh_project_dir(Path(out) if out is not None else Path("hls_projects") / f"{name}_rtl", force)
    options = RtlOptions(project_name=_identifier(name), part=fpga.part, clock_period=fpga.clock_period)
    echo(f"writing alkaid Verilog for {name} to {project} ({fpga.part}, clock {fpga.clock_period:g} ns)")
    t0 = time.perf_counter()
    manifest = write_project(graph, project, options)
    x, desc = _write_project_data(project, graph, source, kind, is_run, data_x, min_vectors, precision)
    echo(f"building the Verilator simulation and checking {len(x)} vectors against the reference")
    simulation = compile_simulation(graph, project)
    result = verify(graph, project, x, _references(project, kind), desc, simulation=simulation)
    write_json(project / "verification.json", result)

    report = build_report(graph, hls_options(fpga, name))
    report.pop("latency_estimate")  # hls4ml's; the RTL pipeline's latency is exact, below
    report["options"] = manifest["options"]
    synthesis = None
    if synth:
        echo(f"synthesizing with Yosys (synth_xilinx -family {xilinx_family(fpga.part)}); its first run on a machine "
             "prepares a cache for a few minutes")
        synthesis = synthesize(project, fpga.part)
    report["synthesis"] = {"status": "done", "tool": "yosys"} if synth else {"status": "not requested"}
    report["backends"] = {"rtl": backend_section(manifest, synthesis)}
    report["seconds"] = {**manifest["seconds"], "simulation_build": round(simulation.compile_seconds, 1),
                         "verification": result["csim_seconds"],
                         "synthesis": synthesis["seconds"] if synthesis else None,
                         "total": round(time.perf_counter() - t0, 1)}
    write_json(project / "report.json", report)
    echo(one_line(name, report["backends"]["rtl"]))
    return project, result


def verify_project(project: Path, inputs: Path | None = None) -> dict:
    """Re-run the bit-exactness check on an existing project (optionally on other inputs)."""
    from edgeann import ir
    from edgeann.verify import verify

    project = Path(project)
    data = project / PROJECT_DATA
    if not (data / "graph.npz").is_file() or not (data / "source.json").is_file():
        raise EdgeannError(f"{project} is not a firmware project written by edgeann export ({data / 'graph.npz'} missing)")
    graph = ir.Graph.load(data / "graph.npz")
    meta = json.loads((data / "source.json").read_text())
    if inputs is None:
        x, desc = np.load(data / "inputs.npz")["x"], meta["inputs"]
    else:
        try:
            x = np.load(inputs, allow_pickle=False)
        except Exception as e:
            raise EdgeannError(f"{inputs}: not a readable .npy file ({type(e).__name__})") from None
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise EdgeannError(f"{inputs}: expected one array of input vectors")
        n_in = int(np.prod(graph.input.shape))
        if x.size % n_in or (x.ndim > 1 and int(np.prod(x.shape[1:])) != n_in):
            raise EdgeannError(f"{inputs}: vectors of shape {x.shape[1:]} do not fit the model input {graph.input.shape}")
        x = x.reshape(-1, *graph.input.shape).astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise EdgeannError(f"{inputs}: contains NaN or Inf")
        desc = {"file": str(inputs), "vectors": len(x)}
    simulation = None
    if (project / "rtl.json").is_file():
        from edgeann.rtl import compile_simulation

        simulation = compile_simulation(graph, project)
    result = verify(graph, project, x, _references(project, meta["kind"]), desc, simulation=simulation)
    write_json(project / "verification.json", result)
    return result
