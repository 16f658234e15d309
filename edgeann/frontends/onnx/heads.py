"""The output side of a foreign model: a final ``Softmax``, ``LogSoftmax``, ``Sigmoid``, ``ArgMax`` or ``TopK``.

A trigger thresholds scores, so the firmware ends at the logits before them: :func:`cut_head` returns the
model cut at that tensor (the reference the firmware must equal bit for bit) and what was cut, and
:func:`class_agreement` compares the firmware's class decision with the full model's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

HEAD_OPS = ("Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "TopK")
_MOVES = ("Identity", "Dropout")  # may sit between the logits and the head, or after it


@dataclass(frozen=True)
class Head:
    """The nodes cut off the end of a model (``ops``, in graph order) and the tensor it now ends at."""

    ops: tuple[str, ...]
    logits: str

    def describe(self) -> str:
        return f"the firmware ends at the logits ({self.logits}), before the model's {' -> '.join(self.ops)}"


def _class_axis_ok(node: onnx.NodeProto) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("Softmax", "LogSoftmax", "ArgMax", "TopK"):
        return attrs.get("axis", -1 if node.op_type != "ArgMax" else 0) in (-1, 1) and not attrs.get("select_last_index", 0)
    return True


def cut_head(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Head | None]:
    """``model`` without the chain of head ops (and Identity / Dropout) that ends it, and what was cut."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    outputs = [o.name for o in model.graph.output]
    ends = {id(producer[o]) for o in outputs if o in producer}
    if len(ends) != 1:
        return model, None
    node = producer[outputs[0]]
    cut: list[onnx.NodeProto] = []
    while node.op_type in HEAD_OPS + _MOVES and _class_axis_ok(node):
        cut.append(node)
        if node.input[0] not in producer:
            return model, None
        node = producer[node.input[0]]
    if not any(n.op_type in HEAD_OPS for n in cut):
        return model, None
    logits = cut[-1].input[0]
    readers = [n for n in model.graph.node if logits in n.input and n not in cut]
    if readers:
        return model, None
    out = copy.deepcopy(model)
    cut_outputs = {o for n in cut for o in n.output}
    kept = [n for n in out.graph.node if not set(n.output) & cut_outputs]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    shape = _shape(model, logits)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, shape))
    # the logits are an output now: a value_info entry for them too would make qonnx's clean-up assert
    # ("Multiple ValueInfoProto found")
    kept_info = [vi for vi in out.graph.value_info if vi.name != logits]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_info)
    return out, Head(tuple(n.op_type for n in reversed(cut)), logits)


def _shape(model: onnx.ModelProto, tensor: str):
    """The tensor's shape by onnx's shape inference, else by qonnx's (which knows ``Quant`` and the other QONNX
    ops onnx's leaves unshaped)."""
    for infer in (onnx.shape_inference.infer_shapes, _qonnx_shapes):
        try:
            inferred = infer(model)
        except Exception:
            continue
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            if vi.name == tensor and vi.type.tensor_type.HasField("shape") and vi.type.tensor_type.shape.dim:
                return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in vi.type.tensor_type.shape.dim]
    return None


def _qonnx_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    return ModelWrapper(copy.deepcopy(model)).transform(InferShapes()).model


def run_all(path, x: np.ndarray, qonnx: bool) -> list[np.ndarray]:
    """Every output of the model at ``path`` on ``x``, in graph order: qonnx's executor (``qonnx``) or onnxruntime
    with its graph optimizations off (each operator as the ONNX standard defines it)."""
    model = onnx.load(str(path))
    names = [o.name for o in model.graph.output]
    x = np.ascontiguousarray(x, np.float32)
    if qonnx:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes

        w = ModelWrapper(model)
        w.graph.ClearField("value_info")
        w.set_tensor_shape(w.graph.input[0].name, [len(x), *w.get_tensor_shape(w.graph.input[0].name)[1:]])
        for o in w.graph.output:
            if o.type.tensor_type.shape.dim:
                o.type.tensor_type.shape.dim[0].dim_value = len(x)
        w = w.transform(InferShapes())
        out = execute_onnx(w, {w.graph.input[0].name: x})
        return [np.asarray(out[n]) for n in names]
    sess = unoptimized_session(model)
    feed = sess.get_inputs()[0].name
    try:
        return [np.asarray(o) for o in sess.run(names, {feed: x})]
    except Exception:
        if len(x) <= 1:
            raise
        # a model that fixes its batch to one inside (a Reshape to (1, n), as Keras exporters write) runs one
        # sample at a time
        rows = [sess.run(names, {feed: x[i : i + 1]}) for i in range(len(x))]
        return [np.concatenate([np.asarray(r[k]) for r in rows]) for k in range(len(names))]


def unoptimized_session(model: onnx.ModelProto):
    """onnxruntime without graph optimizations, the batch dimension made dynamic: its default optimizations fuse
    QuantizeLinear / DequantizeLinear pairs into integer kernels that requantize differently."""
    import onnxruntime as ort

    model = copy.deepcopy(model)
    model.graph.ClearField("value_info")
    initializers = {t.name for t in model.graph.initializer}  # inputs too in ONNX IR version 3
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.shape.dim and vi.name not in initializers:
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    from edgeann.backends.onnx_qcdq import session

    return session(model, opts)


def full_classes(outputs: list[np.ndarray], head: Head) -> np.ndarray:
    """The full model's class decision from all its outputs (graph order)."""
    last = head.ops[-1]
    if last in ("ArgMax", "TopK"):
        ints = [o for o in outputs if np.issubdtype(np.asarray(o).dtype, np.integer)]
        return np.asarray(ints[0]).reshape(len(ints[0]), -1)[:, 0]
    scores = np.asarray(outputs[0], np.float64).reshape(len(outputs[0]), -1)
    if scores.shape[1] == 1:
        return (scores[:, 0] > (0.5 if last == "Sigmoid" else 0.0)).astype(np.int64)
    return np.argmax(scores, axis=1)


def logit_classes(logits: np.ndarray) -> np.ndarray:
    """The class the firmware's logits decide: argmax, or ``logit > 0`` for a single output."""
    logits = np.asarray(logits, np.float64).reshape(len(logits), -1)
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else np.argmax(logits, axis=1)


def class_agreement(full: np.ndarray, firmware_logits: np.ndarray, head: Head, against: str) -> dict:
    fw = logit_classes(firmware_logits)
    equal = int(np.count_nonzero(fw == full))
    return {"with": against, "head": list(head.ops), "logits": head.logits, "n_samples": int(len(full)),
            "equal": equal, "fraction": equal / max(len(full), 1)}
