"""Fast, batched C simulation of a written project, and tracing to find where firmware and graph diverge.

hls4ml's ``compile()``/``predict()`` builds a library with a one-sample entry point that Python calls once
per sample. Here the project's firmware is compiled with g++ together with our bridge
(``templates/csim_bridge.cpp``), whose entry points loop over the whole batch in C++ on several threads.
io_stream firmware keeps state in function statics (convolution line buffers, pooling windows), so there
each thread instead runs its share of the batch on its own loaded copy of the library.
The library is cached in ``<project>/csim/`` under a key of the firmware sources, the bridge, the flags
and the compiler version, and rebuilt only when one of them changes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.backends.hls.hls import HlsProject, Port, as_project, firmware_sha256, write_project

BRIDGE = Path(__file__).parent / "templates" / "csim_bridge.cpp"
CACHE_DIR = "csim"
# -Wno-free-nonheap-object: g++ 12 otherwise spends most of the compile time (20 of 28 s for the jet MLP,
# even at -O0) in its "access analysis" warning pass over the weight arrays' huge static initializer.
# -fno-gnu-unique: g++ otherwise gives the function statics of templates (hls4ml's stream line buffers) one
# instance per process, shared by every loaded copy of the library; CSim needs a private one per copy.
CXXFLAGS = ("-std=c++17", "-fPIC", "-pthread", "-w", "-Wno-free-nonheap-object", "-fno-gnu-unique")
OPT_LEVEL = "-O2"


class CSimCompileError(RuntimeError):
    """g++ failed on a project; the message ends with the tail of its output."""


def _compiler(cxx: str | None) -> str:
    cxx = cxx or os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise EdgeannError(f"C++ compiler {cxx!r} not found; install g++ or set CXX")
    return path


def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def _defines(project: HlsProject) -> list[str]:
    top = project.options.project_name
    return [
        f"-DEDGEANN_TOP={top}",
        f'-DEDGEANN_TOP_HEADER="{top}.h"',
        f"-DEDGEANN_N_IN={project.input.size}",
        f"-DEDGEANN_N_OUT={project.output.size}",
        f"-DEDGEANN_IO_STREAM={int(project.options.io_type == 'io_stream')}",
    ]


def _run_tool(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _failure(what: str, cmd: list[str], r: subprocess.CompletedProcess, lines: int = 40) -> str:
    """What failed, the command, and the last ``lines`` lines of its output."""
    tail = "\n".join((r.stderr + r.stdout).strip().splitlines()[-lines:])
    return f"{what} (exit {r.returncode}):\n{' '.join(cmd)}\n{tail}"


def compile_csim(
    project: HlsProject | str | Path, *, cxx: str | None = None, opt_level: str = OPT_LEVEL, force: bool = False
) -> CSim:
    """Compile (or reuse the cached) batched C simulation of a project written by ``write_project``.

    ``cxx`` defaults to ``$CXX`` or ``g++``. Raises :class:`CSimCompileError` with the compiler's output.
    """
    project = as_project(project)
    cxx = _compiler(cxx)
    root = project.path
    firmware = root / "firmware"
    includes = [f"-I{firmware}", f"-I{firmware / 'ap_types'}"]
    flags = [opt_level, *CXXFLAGS, *_defines(project)]
    key = hashlib.sha256(
        "\n".join([firmware_sha256(root), BRIDGE.read_text(), " ".join(flags), _compiler_version(cxx)]).encode()
    ).hexdigest()[:16]
    cache = root / CACHE_DIR
    library = cache / f"edgeann_csim_{key}.so"
    if library.exists() and not force:
        return CSim(library, project)

    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        tmp = Path(tmp)
        # Two translation units, compiled side by side: the firmware (heavy) and the bridge (light).
        sources = [firmware / f"{project.options.project_name}.cpp", BRIDGE]
        objects = [tmp / "firmware.o", tmp / "bridge.o"]
        cmds = [[cxx, *flags, *includes, "-c", str(s), "-o", str(o)] for s, o in zip(sources, objects)]
        with ThreadPoolExecutor(len(cmds)) as pool:
            results = list(pool.map(lambda c: _run_tool(c, root), cmds))
        link = [cxx, "-shared", "-pthread", *map(str, objects), "-o", str(tmp / library.name)]
        for cmd, r in zip(cmds, results):
            if r.returncode != 0:
                raise CSimCompileError(_failure(f"{Path(cxx).name} failed on {cmd[-3]}", cmd, r))
        r = _run_tool(link, root)
        if r.returncode != 0:
            raise CSimCompileError(_failure("linking the C simulation failed", link, r))
        os.replace(tmp / library.name, library)  # atomic: a concurrent compile of the same key is harmless
    for stale in cache.glob("edgeann_csim_*.so"):
        if stale != library:
            stale.unlink(missing_ok=True)
    return CSim(library, project)


MIN_CHUNK = 64  # samples below which another thread costs more than it saves (as in the bridge)


def _entry_points(lib: ctypes.CDLL) -> tuple[Any, Any]:
    """The library's batched ``edgeann_predict`` and ``edgeann_predict_codes``, typed."""
    dptr = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    iptr = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    predict, codes = lib.edgeann_predict, lib.edgeann_predict_codes
    predict.argtypes = [dptr, dptr, ctypes.c_long, ctypes.c_int]
    codes.argtypes = [dptr, iptr, ctypes.c_long, ctypes.c_int]
    return predict, codes


class CSim:
    """A compiled C simulation: ``predict`` gives float64 values, ``predict_codes`` the integer codes."""

    def __init__(self, library: Path, project: HlsProject):
        self.library = Path(library)
        self.project = project
        self._lib = ctypes.CDLL(str(self.library))
        self._predict, self._predict_codes = _entry_points(self._lib)
        # hls4ml's streaming layers (convolution line buffers, pooling windows, pixel counters) keep their state in
        # function statics, so one loaded library must not run two samples at once: io_stream projects run each
        # thread's share of a batch on a private copy of the library instead of the bridge's threads.
        self._stateful = project.options.io_type == "io_stream"
        self._instances = [(self._predict, self._predict_codes)]
        self._instances_lock = threading.Lock()
        self._check()

    @property
    def input(self) -> Port:
        return self.project.input

    @property
    def output(self) -> Port:
        return self.project.output

    def _check(self) -> None:
        """The library's sizes and port types must be the project's (a stale or foreign library otherwise)."""
        lib, i, o = self._lib, self.input, self.output
        got = (lib.edgeann_n_in(), lib.edgeann_n_out(), lib.edgeann_input_width(), lib.edgeann_input_iwidth())
        got += (lib.edgeann_output_width(), lib.edgeann_output_iwidth())
        want = (i.size, o.size, i.type.width, i.type.integer, o.type.width, o.type.integer)
        if got != want:
            raise RuntimeError(f"{self.library} was built for (n_in, n_out, in W, I, out W, I) = {got}, not {want}")

    def _batch(self, x: Any) -> tuple[np.ndarray, int]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim >= 1 and x.shape[1:] in (self.input.shape, (self.input.size,)):
            n = x.shape[0]
        else:
            raise ValueError(f"expected inputs of shape (n, {', '.join(map(str, self.input.shape))}), got {x.shape}")
        if np.isnan(x).any():
            raise ValueError("inputs contain NaN, which has no fixed-point value")
        return np.ascontiguousarray(x.reshape(n, self.input.size)), n

    def _private_instances(self, k: int) -> list:
        """``k`` separately loaded copies of the library (the first is the library itself), each with its own statics."""
        with self._instances_lock:
            while len(self._instances) < k:
                with tempfile.TemporaryDirectory(prefix="edgeann-csim-") as tmp:
                    copy = Path(tmp) / f"{self.library.stem}_{len(self._instances)}.so"
                    shutil.copyfile(self.library, copy)  # dlopen loads a file once; a copy is a new instance
                    self._instances.append(_entry_points(ctypes.CDLL(str(copy))))
            return self._instances[:k]

    def _run(self, entry: int, x, dtype, threads: int | None) -> np.ndarray:
        xb, n = self._batch(x)
        y = np.empty((n, self.output.size), dtype=dtype)
        threads = int(threads if threads is not None else os.cpu_count() or 1)
        if n and self._stateful and threads > 1 and n > MIN_CHUNK:
            k = min(threads, -(-n // MIN_CHUNK))
            bounds = [n * i // k for i in range(k + 1)]
            runs = [(inst[entry], xb[b:e], y[b:e], e - b) for inst, b, e in zip(self._private_instances(k), bounds, bounds[1:])]
            with ThreadPoolExecutor(k) as pool:  # ctypes releases the GIL during each call
                rcs = list(pool.map(lambda r: r[0](r[1], r[2], r[3], 1), runs))
        elif n:
            rcs = [(self._predict, self._predict_codes)[entry](xb, y, n, threads)]
        else:
            rcs = []
        if any(rcs):
            raise RuntimeError(f"C simulation failed (rc={max(rcs, key=abs)})")
        return y.reshape((n, *self.output.shape))

    def predict(self, x: Any, threads: int | None = None) -> np.ndarray:
        """Firmware outputs as exact float64 values, shape ``(n, *output.shape)``."""
        if self.output.type.width > 53:
            raise ValueError(f"output type {self.output.type} is wider than a double's mantissa; use predict_codes")
        return self._run(0, x, np.float64, threads)

    def predict_codes(self, x: Any, threads: int | None = None) -> np.ndarray:
        """Firmware outputs as integer codes of the output type (value = code * 2**-frac)."""
        return self._run(1, x, np.int64, threads)

    def trace(self, x: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Outputs and every hls4ml layer's output ``(n, size)`` as float64, for a project written with ``trace``.

        One thread, for diagnosis (a few thousand vectors); keys are hls4ml layer names.
        """
        if not self.project.trace:
            raise EdgeannError(f"{self.project.path} was not written with trace=True")
        xb, n = self._batch(x)
        y = np.empty((n, self.output.size), dtype=np.float64)
        input_layer = self.project.layer_names[self.input.name]  # not traced: its value is the conversion
        layers = {name: size for name, size in self.project.layer_sizes.items() if name != input_layer}
        outs = {name: np.zeros((n, size), dtype=np.float64) for name, size in layers.items()}
        k = len(layers)
        double_p = ctypes.POINTER(ctypes.c_double)
        names = (ctypes.c_char_p * k)(*(name.encode() for name in layers))
        sizes = (ctypes.c_long * k)(*layers.values())
        ptrs = (double_p * k)(*(o.ctypes.data_as(double_p) for o in outs.values()))
        fn = self._lib.edgeann_trace
        dptr = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
        fn.argtypes = [dptr, dptr, ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        with _trace_lock:
            rc = fn(xb, y, n, k, *(ctypes.cast(a, ctypes.c_void_p) for a in (names, sizes, ptrs)))
        if rc != 0:
            raise RuntimeError(f"C simulation trace failed (rc={rc})")
        return y.reshape((n, *self.output.shape)), outs


# --------------------------------------------------------------------------------------------
# Tracing: where do firmware and graph first disagree?

_trace_lock = threading.Lock()  # trace state in the firmware libraries (and hls4ml's working directory) is global


class Divergence(NamedTuple):
    """The first graph node whose firmware output differs from the golden model."""

    layer: str  # graph node name
    n_mismatch: int  # samples in which at least one value of the node's output differs
    max_lsb_diff: float  # largest |firmware - golden| in units of the node type's LSB


def _hls4ml_trace(model, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """hls4ml's own trace: recompiles the model with trace hooks in its output directory, one call per sample."""
    import contextlib
    import io

    for layer in model.get_layers():
        layer.set_attr("trace", True)
    with _trace_lock, contextlib.redirect_stdout(io.StringIO()):
        out, trace = model.trace(np.ascontiguousarray(x, dtype=np.float64))
    return np.asarray(out), trace


def _compare(fw: np.ndarray, golden_codes: np.ndarray, t: ir.FixedType) -> tuple[int, float]:
    n = golden_codes.shape[0]
    diff = np.abs(np.asarray(fw).reshape(n, -1) * 2.0**t.frac - golden_codes.reshape(n, -1).astype(np.float64))
    bad = (diff != 0).any(axis=1)
    return int(bad.sum()), float(diff.max(initial=0.0))


def first_divergence(
    graph: ir.Graph, target: Any, x: Any, *, names: dict[str, str] | None = None, workdir: str | Path | None = None
) -> Divergence | None:
    """The first graph node (in graph order) whose firmware output differs from ``graph.execute`` on ``x``.

    ``target`` is a project (:class:`HlsProject` or its directory): a copy of its firmware with trace hooks
    is written from ``graph`` with the project's options into ``workdir`` (default: a temporary directory;
    the project itself is not touched) and run by our bridge; it raises if the project's firmware is not
    what ``graph`` writes (the traced copy would not be the firmware under test).

    Or ``target`` is an hls4ml ``ModelGraph``, e.g. from hls4ml's own QONNX frontend: hls4ml's ``trace``
    recompiles it with trace hooks in its own output directory (slow: 10-40 s of g++, one Python call per
    sample), and ``names`` maps graph nodes to its layer names (default: the same names).

    Nodes the firmware does not trace (the input, layers hls4ml dropped) are skipped; the output is
    compared last. ``None`` if everything agrees.
    """
    x = np.asarray(x, dtype=np.float64)
    x = np.ascontiguousarray(x.reshape(len(x), -1))
    golden = graph.execute(x.reshape((len(x), *graph.input.shape)), keep=True)
    infos = graph.infos()

    if isinstance(target, (HlsProject, str, Path)):
        project = as_project(target)
        with tempfile.TemporaryDirectory(prefix="edgeann-trace-") as tmp:
            work = Path(workdir or tmp)
            untraced = write_project(graph, work / "untraced", project.options)
            if firmware_sha256(untraced.path) != firmware_sha256(project.path):
                raise EdgeannError(f"the firmware in {project.path} is not what graph {graph.name!r} writes")
            traced = write_project(graph, work / "trace", project.options, trace=True)
            out, trace = compile_csim(traced).trace(x)
        names = names or traced.layer_names
    else:
        out, trace = _hls4ml_trace(target, x)
        names = names or {n.name: n.name for n in graph.nodes}

    for node in graph.nodes[1:]:
        fw = trace.get(names.get(node.name, ""))
        if fw is None:
            continue
        n_bad, lsb = _compare(fw, golden[node.name], infos[node.name].type)
        if n_bad:
            return Divergence(node.name, n_bad, lsb)
    name = graph.outputs[0]
    n_bad, lsb = _compare(out, golden[name], infos[name].type)
    return Divergence(name, n_bad, lsb) if n_bad else None
