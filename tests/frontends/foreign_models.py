"""Foreign models built in the tests: hand-made QCDQ graphs (onnx.helper) and Brevitas exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeann.examples import (  # noqa: F401  (the example models are foreign models the tests build too)
    QONNX_DOMAIN,
    brevitas_binary_mlp,
    brevitas_float_scaled_mlp,
    brevitas_qonnx,
    finn_multithreshold_mlp,
    qkeras_like_qonnx,
)


def _save(nodes, inits: dict, inputs, outputs, path: Path, opset: int = 13) -> Path:
    graph = helper.make_graph(nodes, "foreign", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def qcdq_mlp(path: Path, head: str = "Softmax", act_scale: float = 2.0**-4, zero_point: int = 0) -> Path:
    """A QCDQ MLP with the shapes exporters write: int8 input QuantizeLinear, a DequantizeLinear weight through a
    Transpose, Gemm with transB=0 and alpha=0.5, ReLU -> uint8 QuantizeLinear -> Clip -> DequantizeLinear, Dropout
    and Identity, a Gemm with transB=1, alpha=2, beta=0.25, then ``head`` (Softmax, ArgMax, TopK, Sigmoid or none).
    """
    rng = np.random.default_rng(1)
    n_out = 1 if head == "Sigmoid" else 4
    inits = {
        "s_in": np.float32(2.0**-3), "z_in": np.int8(0),
        "w1_q": rng.integers(-90, 90, (12, 10)).astype(np.int8), "s_w": np.float32(2.0**-7), "z_w": np.int8(0),
        "b1_q": rng.integers(-300, 300, 12).astype(np.int32), "s_b1": np.float32(2.0**-10), "z_b": np.int32(0),
        "s_act": np.float32(act_scale), "z_act": np.uint8(zero_point), "lo": np.uint8(0), "hi": np.uint8(63),
        "w2_q": rng.integers(-127, 128, (n_out, 12)).astype(np.int8),
        "b2": (rng.integers(-64, 64, n_out) / 16).astype(np.float32), "ratio": np.float32(0.3),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"], name="quant_input"),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"], name="dequant_input"),
        helper.make_node("DequantizeLinear", ["w1_q", "s_w", "z_w"], ["w1_t"], name="dequant_w1"),
        helper.make_node("Transpose", ["w1_t"], ["w1"], perm=[1, 0], name="transpose_w1"),
        helper.make_node("DequantizeLinear", ["b1_q", "s_b1", "z_b"], ["b1"], name="dequant_b1"),
        helper.make_node("Gemm", ["xd", "w1", "b1"], ["h"], alpha=0.5, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("QuantizeLinear", ["r", "s_act", "z_act"], ["rq"], name="quant_act"),
        helper.make_node("Clip", ["rq", "lo", "hi"], ["rc"], name="clip_act"),
        helper.make_node("DequantizeLinear", ["rc", "s_act", "z_act"], ["rd"], name="dequant_act"),
        helper.make_node("Dropout", ["rd", "ratio"], ["dropped"], name="dropout"),
        helper.make_node("Identity", ["dropped"], ["same"], name="identity"),
        helper.make_node("DequantizeLinear", ["w2_q", "s_w", "z_w"], ["w2"], name="dequant_w2"),
        helper.make_node("Gemm", ["same", "w2", "b2"], ["logits"], transB=1, alpha=2.0, beta=0.25, name="fc2"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])]
    if head in ("Softmax", "Sigmoid"):
        nodes.append(helper.make_node(head, ["logits"], ["y"], name="head", **({"axis": -1} if head == "Softmax" else {})))
    elif head == "ArgMax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["p"], axis=1, name="softmax"))
        nodes.append(helper.make_node("ArgMax", ["p"], ["y"], axis=1, keepdims=1, name="argmax"))
        outputs = [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 1])]
    elif head == "TopK":
        inits["k"] = np.array([2], np.int64)
        nodes.append(helper.make_node("TopK", ["logits", "k"], ["y", "idx"], axis=-1, name="topk"))
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
                   helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 2])]
    else:
        nodes[-1].output[0] = "y"
    return _save(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])], outputs, path)


def qcdq_column_matmul(path: Path) -> Path:
    """``W @ x`` on a column vector: Unsqueeze -> MatMul(constant, activation) -> Squeeze, QCDQ quantized."""
    rng = np.random.default_rng(2)
    inits = {"s": np.float32(2.0**-4), "z": np.int8(0), "axes": np.array([2], np.int64),
             "w_q": rng.integers(-127, 128, (3, 6)).astype(np.int8), "s_w": np.float32(2.0**-6)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Unsqueeze", ["xd", "axes"], ["col"]),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "z"], ["w"]),
        helper.make_node("MatMul", ["w", "col"], ["ycol"]),
        helper.make_node("Squeeze", ["ycol", "axes"], ["y"]),
    ]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], path)


def brevitas_mlp(torch_seed: int = 0):
    """A Brevitas MLP with power-of-two (fixed-point) quantizers, calibrated on a few batches."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias,
                                Uint8ActPerTensorFixedPoint)

    torch.manual_seed(torch_seed)
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
        qnn.QuantLinear(10, 12, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int16Bias,
                        return_quant_tensor=True),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
        qnn.QuantLinear(12, 4, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int16Bias),
    )
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(64, 10) * 2)
    return net.eval()


def brevitas_export(net, path: Path, fmt: str, softmax: bool = False) -> Path:
    """``fmt``: ``qcdq`` (export_onnx_qcdq) or ``qonnx`` (export_qonnx); ``softmax`` appends a float Softmax."""
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=-1)) if softmax else net
    x = torch.randn(1, 10)
    if fmt == "qcdq":
        export_onnx_qcdq(model, x, export_path=str(path), dynamo=False)
    else:
        export_qonnx(model, x, export_path=str(path), dynamo=False)
    return path
