"""Ops that only move values: ``Flatten``, ``Reshape`` and ``Identity`` of an already flat tensor."""

from __future__ import annotations

from edgeann.errors import EdgeannError
from edgeann.frontends.onnx.reader import op


@op("Flatten")
@op("Reshape")
@op("Identity")
def read_passthrough(r, node, where):
    x = node.input[0]
    if x in r.consts:
        raise EdgeannError(f"{where}: {node.op_type} of a constant should have been folded")
    shape = r.shape.get(node.output[0])
    if shape and len([d for d in shape[1:] if d != 1]) > 1:
        raise EdgeannError(f"{where}: {node.op_type} to shape {shape} is not supported (only flattening)")
    if x in r.relu_of:
        r.relu_of[node.output[0]] = r.relu_of.pop(x)
        return
    r.alias[node.output[0]] = r.dynamic(x, where)
