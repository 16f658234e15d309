"""The whole line in one place:

    flow YAML -> data -> model -> train -> export -> fixed-point graph -> back ends (hls4ml, RTL)
        -> simulation -> verify -> report

Each stage is a plain function in its own module; this file only strings them together and
owns the run directory. Nothing is written until the flow and the data have been validated,
and an existing run directory is only replaced with ``force``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from edgeann import data, plots
from edgeann.config import Flow
from edgeann.errors import EdgeannError
from edgeann.export import export_model
from edgeann.files import atomic_write, make_unique_dir
from edgeann.metrics import classification, layer_table
from edgeann.models import check_layer_names, create_model
from edgeann.prune import layer_sparsity, total_sparsity
from edgeann.train import select_device, train


def write_json(path: Path, obj) -> None:
    """Write atomically, so a crash never leaves half a file (with the umask's permissions)."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def default_run_dir(flow: Flow) -> Path:
    return Path("runs") / flow.name


def default_project_dir(source: Path) -> Path:
    """``hls_projects/<run folder name>`` for a run (also one not trained yet), ``hls_projects/<file stem>`` for
    an ONNX file: one project per run."""
    source = Path(source)
    return Path("hls_projects") / (source.stem if source.suffix == ".onnx" else source.resolve().name)


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
    # the family fits the data and the flow's layer names exist: stop before writing
    quant = flow.quantization if flow.quantization.enabled else None
    check_layer_names(create_model(flow.model, splits.sample_shape, len(splits.classes), quant), flow.quantization,
                      flow.pruning)

    if force and not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "flow.yaml").write_text(flow.to_yaml())
    splits.scaler.save(run_dir / "scaler.json")
    np.savez(run_dir / "test_data.npz", x=splits.test.x, y=splits.test.y, classes=np.array(splits.classes), x_raw=splits.test_raw_x)

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
    from edgeann.backends import onnx_qcdq

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
        "resumes": result.resumes,
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
# export --fpga / --rtl -> back end project -> simulation -> verify -> report

PROJECT_DATA = "edgeann"  # edgeann's own files inside a firmware project
VECTORS = "verification.npz"  # in PROJECT_DATA: the export's verification inputs and outputs, named in verification.json


def _identifier(name: str) -> str:
    """The model name as the firmware's top-function name (a safe C++ identifier)."""
    import re

    from edgeann.backends.hls.hls import is_safe_identifier

    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    ident = ident if ident[:1].isalpha() else f"m_{ident}"
    return ident if is_safe_identifier(ident) else f"{ident}_model"


def hls_options(fpga, name: str):
    from edgeann.backends.hls import HlsOptions

    return HlsOptions(backend=fpga.backend, io_type=fpga.io_type, strategy=fpga.strategy, reuse_factor=fpga.reuse_factor,
                      clock_period=fpga.clock_period, part=fpga.part, project_name=_identifier(name))


def _references(project: Path, kind: str, decode=None) -> dict:
    """The reference implementations a project is verified against, primary first: for a quantized foreign model,
    the original model itself (cut at the logits where it ends in a Softmax, ArgMax, ...). ``decode``
    (:func:`_output_decoder`) turns the original's outputs into codes where their scale is no power of two."""
    from edgeann.backends import onnx_qcdq
    from edgeann.export import run_qonnx
    from edgeann.frontends.onnx.heads import run_all

    data = project / PROJECT_DATA
    session = onnx_qcdq.session(data / "reference.onnx")
    ort = ("onnxruntime on model.onnx (QCDQ)", lambda x: onnx_qcdq.run(session, x))
    codes = decode or (lambda y: y)
    model_x = lambda x: model_layout(data, x)  # noqa: E731
    out = lambda y: firmware_layout(data, y)  # noqa: E731
    if kind == "qonnx":
        return dict([("qonnx executor on the QONNX model",
                      lambda x: codes(out(run_qonnx(data / "source.onnx", model_x(x))))), ort])
    if kind == "qcdq":
        return dict([("qonnx executor on the original QCDQ model",
                      lambda x: codes(out(run_qonnx(data / "source.onnx", model_x(x))))),
                     ("onnxruntime (graph optimizations off) on the original QCDQ model",
                      lambda x: codes(out(run_all(data / "source.onnx", model_x(x), qonnx=False)[0]))), ort])
    return dict([ort])


def model_layout(data: Path, x: np.ndarray) -> np.ndarray:
    """The firmware's (channels-last) inputs ``x`` in the original model's layout: transposed by the ``input_perm``
    that ``source.json`` records for a channels-first convolutional model, else as they are."""
    try:
        perm = json.loads((data / "source.json").read_text()).get("input_perm")
    except (OSError, ValueError):
        perm = None
    return np.ascontiguousarray(np.transpose(x, perm)) if perm else x


def firmware_layout(data: Path, y: np.ndarray) -> np.ndarray:
    """The original model's outputs ``y`` in the firmware's layout, one row per vector: a channels-first output
    feature map transposed channels-last by the ``output_perm`` that ``source.json`` records, else as they are."""
    try:
        perm = json.loads((data / "source.json").read_text()).get("output_perm")
    except (OSError, ValueError):
        perm = None
    y = np.asarray(y)
    return np.ascontiguousarray(np.transpose(y, perm)).reshape(len(y), -1) if perm else y


def _output_scale(project: Path) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(scale, offset, lsb)`` of the firmware's outputs where the codes' scale is no power of two or a trailing
    affine float chain was left to the reference (recorded in source.json): the original's value is firmware output
    * scale + offset, and the firmware's outputs are whole multiples of ``lsb``."""
    try:
        meta = json.loads((project / PROJECT_DATA / "source.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("output_scale") is None:
        return None
    offset = meta.get("output_offset")
    # per firmware output value (a code times the output type's lsb)
    lsb = float(meta.get("output_lsb") or 1.0)
    return np.asarray(meta["output_scale"], np.float64) / lsb, np.asarray(0.0 if offset is None else offset, np.float64), lsb


class _OutputDecoder:
    """The original's float outputs as the firmware's codes, where their scale is no power of two (or a trailing
    affine float chain was left to the reference): ``(y - offset) / scale`` rounded to the nearest integer. The
    original sums its products in float32, so that is a whole number only up to that rounding; the largest distance
    seen (in codes) is kept and reported."""

    def __init__(self, scale: np.ndarray, offset: np.ndarray, lsb: float = 1.0):
        self.scale, self.offset, self.lsb, self.max_residual = scale, offset, lsb, 0.0

    def __call__(self, y: np.ndarray) -> np.ndarray:
        q = (np.asarray(y, np.float64).reshape(len(y), -1) - self.offset) / (self.scale * self.lsb)
        k = np.rint(q)
        self.max_residual = max(self.max_residual, float(np.abs(q - k).max(initial=0.0)))
        return k * self.lsb

    def describe(self) -> dict:
        out = {"scale": np.ravel(self.scale * self.lsb).tolist(), "offset": np.ravel(self.offset).tolist(),
               "value": "firmware output code x scale + offset (per output where there are several)",
               "reference_codes": "(the original's outputs - offset) / scale, rounded to the nearest integer",
               "max_residual_codes": self.max_residual}
        if not np.any(self.offset):
            out.pop("offset")
        return out


def _output_decoder(project: Path) -> _OutputDecoder | None:
    scale = _output_scale(project)
    return None if scale is None else _OutputDecoder(*scale)


def _note_output_codes(result: dict, decode: _OutputDecoder | None) -> None:
    if decode is not None:
        result["output_codes"] = decode.describe()
        result["summary"] += (f"; outputs compared as codes of a float scale (reference / scale within "
                              f"{decode.max_residual:.3g} of a whole number)")


def _load_fpga_config(source: Path, is_run: bool):
    from edgeann.config import FpgaConfig, load_flow

    return load_flow(source / "flow.yaml").fpga if is_run else FpgaConfig()


def _check_project_dir(project: Path, force: bool) -> None:
    if project.exists() and not project.is_dir():
        raise EdgeannError(f"{project} exists and is not a directory")
    if project.is_dir() and any(project.iterdir()) and not force:
        raise EdgeannError(f"output directory {project} already exists; use --force to replace it")


def _publish(staging: Path, project: Path) -> None:
    """Move the finished project into place. A project being replaced stays where it is until the new one is
    complete, then is swapped out in two renames (undone if the second fails) and deleted."""
    if project.is_dir() and any(project.iterdir()):
        old = project.parent / f".{project.name}.replaced-{secrets.token_hex(4)}"
        os.rename(project, old)
        try:
            os.rename(staging, project)
        except BaseException:
            os.rename(old, project)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if project.is_dir():
        project.rmdir()
    os.rename(staging, project)


def _export_source(source: Path, precision: str | None, input_precision: str | None = None):
    """What an export reads: a finished run, or a foreign (Q)ONNX file. Returns (graph, kind, is_run, foreign):
    ``foreign`` (:class:`edgeann.frontends.onnx.Foreign`) is None for a run."""
    from edgeann import ir
    from edgeann.frontends.onnx import parse_precision, read_foreign

    fixed_precision = parse_precision(precision) if precision else None
    input_type = parse_precision(input_precision, "--input-precision") if input_precision else None
    if precision and input_precision:
        raise EdgeannError("--precision already types a float model's input; --input-precision is for quantized "
                           "models whose input is not quantized")
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
        if input_precision:
            raise EdgeannError("--input-precision is for foreign quantized ONNX models; a run is already quantized")
        try:
            graph = ir.Graph.load(source / "graph.npz")
        except Exception as e:
            raise EdgeannError(f"{source / 'graph.npz'} is corrupt ({type(e).__name__})") from None
        return graph, "run", True, None
    if source.is_file():
        foreign = read_foreign(source, fixed_precision, input_precision=input_type)
        return foreign.graph, foreign.kind, False, foreign
    raise EdgeannError(f"{source} not found (give a run directory or an .onnx file)")


def _fpga_config(source: Path, is_run: bool, overrides: dict | None):
    from edgeann.config import FpgaConfig

    try:
        fpga = _load_fpga_config(source, is_run).model_copy(update=overrides or {})
        return FpgaConfig.model_validate(fpga.model_dump())
    except Exception as e:
        raise EdgeannError(f"bad FPGA option: {str(e).splitlines()[-1].strip()}") from None


def _build_and_publish(project: Path, force: bool, build):
    """Run ``build(staging)`` in a hidden sibling folder (``.<name>.partial-*``) and rename it into place only once
    every file, verification.json and report.json included, is written: an interrupted or failed export leaves no
    project that looks complete, and does not touch an existing one (replaced with ``force`` only then). A tool
    failure whose message names a log in the build keeps the build as ``<name>.failed`` and names the log there."""
    from edgeann.summary import write_report_md

    project.parent.mkdir(parents=True, exist_ok=True)
    staging = make_unique_dir(project.parent, f".{project.name}.partial-")
    try:
        out = build(staging)
        write_report_md(staging, shown_as=project)
        _check_project_dir(project, force)  # nothing appeared there meanwhile
        _publish(staging, project)
    except EdgeannError as e:
        if str(staging) not in str(e):
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # a tool failed and its message names a log in the build: keep the build where the message can point
        failed = project.parent / f"{project.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(staging, failed)
        raise EdgeannError(str(e).replace(str(staging), str(failed))) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_firmware(source: Path, out: Path | None = None, fpga_overrides: dict | None = None, force: bool = False,
                    precision: str | None = None, synth: bool = False, min_vectors: int = 10_000,
                    echo=print, input_precision: str | None = None) -> tuple[Path, dict]:
    """Turn a run (or a foreign ONNX/QONNX file) into a verified hls4ml project; returns (project, verification).
    The project is published whole or not at all (:func:`_build_and_publish`)."""
    from edgeann.report import synthesize
    from edgeann.summary import write_report_md

    source = Path(source)
    graph, kind, is_run, foreign = _export_source(source, precision, input_precision)
    fpga = _fpga_config(source, is_run, fpga_overrides)
    options = hls_options(fpga, graph.name)
    project = Path(out) if out is not None else default_project_dir(source)
    _check_project_dir(project, force)

    echo(f"writing the hls4ml project for {graph.name} to {project} ({options.backend}, {options.io_type}, "
         f"{options.strategy}, reuse {options.reuse_factor})")
    result, report = _build_and_publish(project, force, lambda staging: _build_project(
        staging, source, kind, graph, options, precision, min_vectors, synth, echo, foreign))
    echo(_input_summary(report["input"], project))
    if synth:  # in the published project: the vendor tool's own project records its absolute paths
        report["synthesis"] = synthesize(project, options)
        if report["synthesis"]["status"] == "skipped":
            echo(f"synthesis skipped: {report['synthesis']['reason']}")
        write_json(project / "report.json", report)
        write_report_md(project)
    return project, result


def default_rtl_project_dir(source: Path) -> Path:
    """``hls_projects/<run folder name>_rtl``: beside the hls4ml project of the same run."""
    project = default_project_dir(source)
    return project.with_name(f"{project.name}_rtl")


def export_rtl(source: Path, out: Path | None = None, fpga_overrides: dict | None = None, force: bool = False,
               precision: str | None = None, synth: bool = True, min_vectors: int = 10_000,
               echo=print, input_precision: str | None = None) -> tuple[Path, dict]:
    """Turn a run (or a foreign ONNX/QONNX file) into a verified open-source RTL project (alkaid Verilog, Verilator,
    Yosys); returns (project, verification). The part and clock come from the flow's ``fpga`` section. Published
    whole or not at all, like the hls4ml project."""
    from edgeann.backends.rtl import RtlOptions, check_supported
    from edgeann.backends.rtl.report import one_line
    from edgeann.backends.rtl.synth import xilinx_family

    source = Path(source)
    graph, kind, is_run, foreign = _export_source(source, precision, input_precision)
    fpga = _fpga_config(source, is_run, fpga_overrides)
    check_supported(graph)
    if synth:
        xilinx_family(fpga.part)  # refuse an unknown part before anything is written
    project = Path(out) if out is not None else default_rtl_project_dir(source)
    _check_project_dir(project, force)
    options = RtlOptions(project_name=_identifier(graph.name), part=fpga.part, clock_period=fpga.clock_period)
    echo(f"writing alkaid Verilog for {graph.name} to {project} ({fpga.part}, clock {fpga.clock_period:g} ns)")
    result, report = _build_and_publish(project, force, lambda staging: _build_rtl_project(
        staging, source, kind, graph, fpga, options, precision, min_vectors, synth, echo, foreign))
    echo(one_line(graph.name, report["backends"]["rtl"]))
    return project, result


def _build_rtl_project(project: Path, source: Path, kind: str, graph, fpga, options, precision: str | None,
                       min_vectors: int, synth: bool, echo, foreign=None) -> tuple[dict, dict]:
    from edgeann.backends.rtl import compile_simulation, write_project
    from edgeann.backends.rtl.report import backend_section
    from edgeann.backends.rtl.synth import synthesize, xilinx_family
    from edgeann.report import build_report
    from edgeann.verify import verify

    t0 = time.perf_counter()
    manifest = write_project(graph, project, options)
    x, desc, _, _ = _write_project_data(project, graph, source, kind, precision, min_vectors, foreign)
    echo(f"building the Verilator simulation and checking {len(x)} vectors against the reference")
    simulation = compile_simulation(graph, project)
    decode = _output_decoder(project)
    result = verify(graph, project, x, _references(project, kind, decode), desc, simulation=simulation,
                    vectors_file=project / PROJECT_DATA / VECTORS)
    _note_output_codes(result, decode)
    _compare_with_full_model(result, project, kind, foreign, x, simulation.predict)
    write_json(project / "verification.json", result)

    report = build_report(graph, hls_options(fpga, graph.name))
    report.pop("latency_estimate")  # hls4ml's; the RTL pipeline's latency is exact, below
    report["options"] = manifest["options"]
    report["input"] = _firmware_input(graph, source, kind, project / PROJECT_DATA)
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
    return result, report


def _write_project_data(project: Path, graph, source: Path, kind: str, precision: str | None, min_vectors: int,
                        foreign=None):
    """edgeann's own files in a project (graph, reference ONNX); returns (the verification inputs, their
    description, the run's test inputs and labels or None). :func:`edgeann.verify.verify` keeps the inputs with the
    outputs in ``VECTORS``."""
    from edgeann.backends import onnx_qcdq
    from edgeann.verify import verification_inputs

    data_x = labels = None
    if kind == "run" and (source / "test_data.npz").is_file():
        with np.load(source / "test_data.npz") as test_data:
            data_x, labels = test_data["x"], test_data["y"]
    data = project / PROJECT_DATA
    data.mkdir()
    graph.save(data / "graph.npz")
    head = None
    if kind == "run":
        shutil.copyfile(source / "model.onnx", data / "reference.onnx")
    else:
        import onnx

        onnx_qcdq.save(graph, data / "reference.onnx")
        if foreign is not None and foreign.head is not None:  # the original, and the original cut at the logits
            onnx.save(foreign.model, str(data / FULL_SOURCE))
            onnx.save(foreign.reference, str(data / "source.onnx"))
            head = {"ops": list(foreign.head.ops), "logits": foreign.head.logits, "full_model": f"{PROJECT_DATA}/{FULL_SOURCE}"}
        else:
            shutil.copyfile(source, data / "source.onnx")
    on_grid = foreign is not None and foreign.input_on_grid
    x, desc = verification_inputs(graph, data_x, min_vectors, on_grid=on_grid)
    write_json(data / "source.json", {"kind": kind, "source": str(source.resolve()), "inputs": desc,
                                      "precision": precision, "head": head,
                                      "input_precision": str(graph.input.type) if on_grid else None,
                                      "output_scale": (None if foreign is None or foreign.output_scale is None
                                                       else np.ravel(foreign.output_scale).tolist()),
                                      "output_offset": (None if foreign is None or foreign.output_offset is None
                                                        else np.ravel(foreign.output_offset).tolist()),
                                      "output_lsb": graph.infos()[graph.outputs[0]].type.scale,
                                      "input_perm": list(foreign.input_perm) if foreign is not None and foreign.input_perm else None,
                                      "output_perm": (list(foreign.output_perm) if foreign is not None and foreign.output_perm
                                                      else None)})
    return x, desc, data_x, labels


def _build_project(project: Path, source: Path, kind: str, graph, options, precision: str | None, min_vectors: int,
                   synth: bool, echo, foreign=None) -> tuple[dict, dict]:
    """Write, compile and verify the whole project into the (empty) folder ``project``; returns its verification
    and report."""
    from edgeann.backends import onnx_qcdq
    from edgeann.backends.hls import compile_csim, write_project
    from edgeann.backends.hls.testbench import write_testbench_data
    from edgeann.report import build_report
    from edgeann.verify import verify

    write_project(graph, project, options)
    x, desc, data_x, labels = _write_project_data(project, graph, source, kind, precision, min_vectors, foreign)
    data = project / PROJECT_DATA

    echo(f"compiling the C simulation and checking {len(x)} vectors against the reference")
    decode = _output_decoder(project)
    result = verify(graph, project, x, _references(project, kind, decode), desc, vectors_file=data / VECTORS)
    _note_output_codes(result, decode)
    csim = compile_csim(project)  # the one verify compiled (cached)
    _compare_with_full_model(result, project, kind, foreign, x, csim.predict)
    if kind == "float":
        # what post-training fixed point costs, on typical (standardized) inputs
        xs = np.random.default_rng(0).standard_normal((2000, *graph.input.shape)).astype(np.float32)
        original = firmware_layout(data, onnx_qcdq.run_any(data / "source.onnx", model_layout(data, xs))).reshape(len(xs), -1)
        fixed = onnx_qcdq.run(data / "reference.onnx", xs).reshape(len(xs), -1)
        diff = np.abs(original - fixed)
        result["distance_to_float_model"] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                                             "inputs": "2000 standard-normal vectors", "precision": precision}
        distance = result["distance_to_float_model"]
        result["summary"] += (f"; against the float model on 2000 standard-normal vectors: max |diff| "
                              f"{distance['max_abs_diff']:.3g}")
        # the class decision (argmax, or logit > 0 for one output), fixed point against the float original
        from edgeann.frontends.onnx.heads import logit_classes

        distance["class_agreement"] = float(np.mean(logit_classes(original) == logit_classes(fixed)))
        result["summary"] += f", the same class on {100 * distance['class_agreement']:.2f}%"
    if data_x is not None and len(data_x):
        # what the fixed-point arithmetic costs: the firmware against the same weights in float, on the test split
        from edgeann.float_twin import distance_to_float

        result["distance_to_float_twin"] = distance_to_float(graph, data_x, csim.predict(data_x), labels)
    result["testbench"] = write_testbench_data(project, graph, x, csim)
    write_json(project / "verification.json", result)

    report = build_report(graph, options)
    report["input"] = _firmware_input(graph, source, kind, data)
    if synth:
        report["synthesis"] = {"status": "started", "note": "C synthesis runs once the project is complete; this "
                                                            "stays 'started' only if it was interrupted"}
    write_json(project / "report.json", report)
    return result, report


FULL_SOURCE = "source_full.onnx"  # a foreign model before its head (Softmax, ArgMax, ...) was cut off


def _compare_with_full_model(result: dict, project: Path, kind: str, foreign, x: np.ndarray, predict) -> None:
    """Where the firmware ends before the model's head: the firmware's class decision against the full original
    model's, in ``result`` and its summary. For QCDQ: how onnxruntime's default (optimized) session compares."""
    from edgeann.frontends.onnx.heads import class_agreement, full_classes, run_all

    if kind != "qcdq" and (foreign is None or foreign.head is None):
        return
    data, firmware = project / PROJECT_DATA, predict(x).reshape(len(x), -1)
    affine = _output_scale(project)
    if affine is not None:  # the decision is taken on values: codes of a per-output scale are not comparable
        firmware = firmware * affine[0] + affine[1]  # output values times the scale per value
    if kind == "qcdq":
        from edgeann.backends import onnx_qcdq

        optimized = firmware_layout(data, onnx_qcdq.run_any(data / "source.onnx", model_layout(data, x))).reshape(len(x), -1)
        result["onnxruntime_default_session"] = {
            "exact_fraction_vs_firmware": float(np.mean(optimized == firmware)),
            "note": "onnxruntime's default graph optimizations fuse QuantizeLinear/DequantizeLinear pairs into integer "
                    "kernels that requantize differently from the ONNX operators; the firmware is verified against "
                    "the operators' own semantics"}
        if not np.array_equal(optimized, firmware):
            result["summary"] += (f"; onnxruntime's default session (QDQ fusion) equals it on "
                                  f"{100 * result['onnxruntime_default_session']['exact_fraction_vs_firmware']:.3f}% of the outputs")
    if foreign is None or foreign.head is None:
        return
    head = foreign.head
    against = ("qonnx executor" if kind == "qonnx" else "onnxruntime (graph optimizations off)") + " on the full original model"
    full = full_classes(run_all(data / FULL_SOURCE, model_layout(data, x), qonnx=kind == "qonnx"), head)
    result["class_agreement"] = agreement = class_agreement(full, firmware, head, against)
    where = " (codes over the whole input type, where post-training fixed point saturates)" if kind == "float" else ""
    result["summary"] += (f"; {head.describe()}: the firmware's class ({'logit > 0' if firmware.reshape(len(firmware), -1).shape[1] == 1 else 'argmax'}) "
                          f"equals the full model's on "
                          f"{100 * agreement['fraction']:.3f}% of {agreement['n_samples']} vectors{where}")


def _firmware_input(graph, source: Path, kind: str, data: Path) -> dict:
    """What the firmware's input is and, for a run, the fixed-point standardization header in ``data``."""
    from edgeann.data import Scaler
    from edgeann.backends.hls.hls import sat
    from edgeann.backends.hls.input_scaling import FORMULA, HEADER, InputScaling, agreement

    rounding = getattr(graph.input, "rounding", "floor")
    port = sat(graph.input.type, rounding)
    if kind != "run":
        perm = json.loads((data / "source.json").read_text()).get("input_perm")
        layout = (f", read channels-last {tuple(graph.input.shape)} (the model's channels-first input transposed by "
                  f"{tuple(perm)})") if perm else ""
        return {"type": port, "firmware_input": f"the model's own input, {'floored' if rounding == 'floor' else 'rounded'}"
                f" and saturated onto {port}{layout}", "scaling_header": None,
                "reason": "a foreign ONNX model has no scaler: no standardization header"}
    if not (source / "scaler.json").is_file():
        return {"type": port, "firmware_input": f"standardized features, then {port}", "scaling_header": None,
                "reason": f"{source / 'scaler.json'} not found"}
    scaler = Scaler.load(source / "scaler.json")
    out = {"type": port, "firmware_input": f"standardized features: {FORMULA}, then {port} (floor, saturate)",
           "scaler": {"mean": scaler.mean.tolist(), "std": scaler.std.tolist()}}
    n_features = int(graph.input.shape[-1]) if graph.input.shape else 0
    if rounding != "floor" or len(scaler.mean) != n_features:
        return {**out, "scaling_header": None, "reason": "the scaler does not match the model's input"}
    try:
        scaling = InputScaling.design(scaler.mean, scaler.std, graph.input.type)
        scaling.write(data, int(np.prod(graph.input.shape)))
    except ValueError as e:
        return {**out, "scaling_header": None, "reason": str(e)}
    out.update(scaling_header=f"{PROJECT_DATA}/{HEADER}", **scaling.describe())
    x_raw = None
    if (source / "test_data.npz").is_file():
        with np.load(source / "test_data.npz") as test_data:
            x_raw = test_data["x_raw"] if "x_raw" in test_data.files else None
    out["agreement_with_float_path"] = ({"on": "test split", **agreement(scaling, x_raw)} if x_raw is not None else
                                        {"on": None, "reason": "raw test features not stored in this run"})
    return out


def _input_summary(desc: dict, project: Path) -> str:
    text = f"firmware input: {desc['firmware_input']}"
    if desc.get("scaling_header"):
        text += f"; from raw features ({desc['raw_type']}): {project / desc['scaling_header']}"
        agree = desc.get("agreement_with_float_path", {})
        if agree.get("on"):
            text += (f", equal to the float path's input code on {100 * agree['equal_fraction']:.3f}% of "
                     f"{agree['n_values']} test values (max {agree['max_lsb_diff']} LSB)")
    elif desc.get("reason"):
        text += f" ({desc['reason']})"
    return text


VERIFY_RECORD = "verification.verify.json"  # `edgeann verify` on the export's own vectors


def is_rtl_project(project: Path) -> bool:
    return (Path(project) / "rtl.json").is_file()  # edgeann.backends.rtl.project.MANIFEST (not imported: alkaid)


def project_files(project: Path) -> list[str]:
    """The files a complete project has (relative paths): edgeann's records and data, and the firmware sources."""
    from edgeann.backends.hls.hls import MANIFEST

    data = [f"{PROJECT_DATA}/{name}" for name in ("graph.npz", "source.json", VECTORS, "reference.onnx")]
    if is_rtl_project(project):  # export --rtl
        return ["verification.json", "report.json", "rtl.json", *data, "model/fsm.json.gz"]
    files = ["verification.json", "report.json", MANIFEST, *data]
    try:
        top = json.loads((project / MANIFEST).read_text())["top_function"]
    except (OSError, ValueError, KeyError):
        return files
    files += [f"firmware/{top}.cpp", f"firmware/{top}.h", "firmware/defines.h", "firmware/parameters.h", "project.tcl"]
    try:
        if json.loads((project / PROJECT_DATA / "source.json").read_text()).get("kind") in ("qonnx", "qcdq"):
            files.append(f"{PROJECT_DATA}/source.onnx")
    except (OSError, ValueError):
        pass
    return files


def verify_project(project: Path, inputs: Path | None = None) -> tuple[Path, dict]:
    """Re-run the bit-exactness check on an existing project (optionally on other inputs).

    Returns (record, result): the result is written to its own record, ``verification.verify.json`` for the
    export's vectors or ``verification.<inputs file stem>.json``, with its vectors and outputs in
    ``edgeann/verification.verify.npz`` (``.<stem>.npz``); the export's verification.json is never touched. Every
    field of the export's record that verify does not recompute (the distance to the float twin, the class
    agreement with the full model, the test bench, ...) is kept in the new record, listed under
    ``kept_from_export``: those describe the export's vectors or the test split, not ``inputs``.
    """
    from edgeann import ir
    from edgeann.verify import verify

    project = Path(project)
    if not project.is_dir():
        raise EdgeannError(f"{project} is not a directory (give a firmware project written by edgeann export)")
    for name in project_files(project):
        if not (project / name).is_file():
            raise EdgeannError(f"{project} is not a complete firmware project written by edgeann export: {name} is "
                               f"missing (an interrupted or older export?); export it again")
    data = project / PROJECT_DATA
    graph = ir.Graph.load(data / "graph.npz")
    meta = json.loads((data / "source.json").read_text())
    if inputs is None:
        with np.load(data / VECTORS) as vectors:
            x = vectors["x"]
        desc = meta["inputs"]
        record = project / VERIFY_RECORD
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
        if meta.get("input_precision"):
            t = graph.input.type
            codes = x.astype(np.float64) / t.scale
            off = np.count_nonzero((codes != np.round(codes)) | (codes < t.int_min) | (codes > t.int_max))
            if off:
                raise EdgeannError(f"{inputs}: {off} values are not values of the firmware's input type "
                                   f"{meta['input_precision']} (the original model reads its input unquantized, so "
                                   "it is compared on that type's grid only); give inputs on that grid")
        desc = {"file": str(inputs), "vectors": len(x)}
        record = project / f"verification.{Path(inputs).stem}.json"
    simulation = None
    if is_rtl_project(project):
        from edgeann.backends.rtl import compile_simulation

        simulation = compile_simulation(graph, project)
    decode = _output_decoder(project)
    result = verify(graph, project, x, _references(project, meta["kind"], decode), desc, simulation=simulation,
                    vectors_file=data / f"{record.stem}.npz")
    _note_output_codes(result, decode)
    try:
        exported = json.loads((project / "verification.json").read_text())
    except ValueError as e:
        raise EdgeannError(f"{project / 'verification.json'} is not valid JSON ({e}); export the project "
                           "again") from None
    kept = {k: v for k, v in exported.items() if k not in result}
    if kept:
        result.update(kept, kept_from_export=sorted(kept))
    write_json(record, result)
    return record, result
