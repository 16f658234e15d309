"""Ops that only move values: ``Flatten``, ``Reshape``, ``Squeeze``, ``Unsqueeze``, ``Identity`` and (at inference)
``Dropout`` of an already flat tensor, and the flattening of a channels-first feature map (whose ONNX order the
reader records in ``r.flat_perm`` for the Dense that reads it)."""

from __future__ import annotations

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import op


@op("Flatten")
@op("Reshape")
@op("Squeeze")
@op("Unsqueeze")
@op("Identity")
@op("Dropout")
def read_passthrough(r, node, where):
    x = node.input[0]
    shape = r.shape.get(node.output[0])
    if shape and len([d for d in shape[1:] if d != 1]) > 1:
        raise EdgeannError(f"{where}: {node.op_type} to shape {shape} is not supported (only flattening)")
    if x in r.chains:  # float ops to the next quantizer (ops_requant): elementwise, the flattening does not matter
        if node.op_type in ("Identity", "Dropout") or len(r.info(r.chains[x].src).shape) <= 1:
            r.chains[node.output[0]] = r.chains[x]
            return
        raise EdgeannError(f"{where}: {node.op_type} inside a float chain before its quantizer is not supported")
    if x in r.pending:  # a quantizer being read (ops_qcdq): its shape does not matter
        r.pending[node.output[0]] = r.pending[x]
        return
    if x in r.cf:  # channels-first in ONNX, channels-last in the graph: the flat orders differ
        src = r.dynamic(x, where)
        flat = _flat(r, src, node)
        r.alias[node.output[0]] = flat
        spatial, c = r.info(src).shape[:-1], r.info(src).shape[-1]
        if int(np.prod(spatial)) > 1 and c > 1:  # ONNX's flat position i holds the IR's flat position perm[i]
            d = len(spatial)
            r.flat_perm[node.output[0]] = np.arange(int(np.prod(spatial)) * c).reshape(*spatial, c).transpose(d, *range(d)).ravel()
        return
    if x in r.relu_of:  # ReLU and flattening commute
        r.relu_of[node.output[0]] = _flat(r, r.relu_of.pop(x), node)
        return
    r.alias[node.output[0]] = _flat(r, r.dynamic(x, where), node)


def _flat(r, src: str, node) -> str:
    """``src`` as one vector per sample (row-major, as ONNX reshapes)."""
    if len(r.info(src).shape) <= 1:
        return src
    out = r.emit(ir.Flatten(r.unique(node.name or f"flatten_{src}"), [src]))
    if src in r.scales:  # the codes keep their scale: one for all, or per channel repeated along the flattened axis
        s = np.asarray(r.scales[src])
        r.scales[out] = s if s.ndim == 0 else np.tile(s, int(np.prod(r.info(src).shape[:-1])))
    return out
