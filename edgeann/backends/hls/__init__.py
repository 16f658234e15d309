"""Firmware: the fixed-point graph as an hls4ml project, and its bit-exact batched C simulation."""

from edgeann.backends.hls.csim import CSim, CSimCompileError, Divergence, compile_csim, first_divergence
from edgeann.backends.hls.hls import (
    LOWERINGS,
    HlsLayer,
    HlsOptions,
    HlsProject,
    Port,
    firmware_files,
    firmware_sha256,
    lowering,
    write_project,
)
from edgeann.backends.hls import recurrent, threshold  # noqa: F401,E402  (register the GRU/LSTM and threshold layers with hls4ml and their lowerings)

__all__ = [
    "CSim",
    "CSimCompileError",
    "Divergence",
    "HlsLayer",
    "HlsOptions",
    "HlsProject",
    "LOWERINGS",
    "Port",
    "compile_csim",
    "firmware_files",
    "firmware_sha256",
    "first_divergence",
    "lowering",
    "write_project",
]
