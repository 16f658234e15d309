"""Foreign models built in the tests: hand-made QCDQ graphs (onnx.helper) and Brevitas exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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


QONNX_DOMAIN = "qonnx.custom_op.general"


def qkeras_like_qonnx(path: Path, n_in: int = 8, n_hidden: int = 16, n_out: int = 5,
                      input_datatype: str | None = None) -> Path:
    """A QONNX graph shaped like a QKeras export through qonnx: the float input enters the first ``MatMul``
    unquantized (QKeras quantizes weights and activations, not the input), ``Quant`` weights and biases with
    ``Add``, ``Relu`` -> unsigned ``Quant``, a second dense layer, and a final ``Softmax``. ``input_datatype``
    annotates the input with a QONNX datatype (``BIPOLAR``, ``INT4``, ...), as FINN's models do."""
    rng = np.random.default_rng(3)

    def quant(name, x, scale, bits, signed=1, narrow=0):
        return helper.make_node("Quant", [x, f"{name}_s", "zero", f"{name}_b"], [name], domain=QONNX_DOMAIN,
                                rounding_mode="ROUND", signed=signed, narrow=narrow, name=name), \
            {f"{name}_s": np.float32(scale), f"{name}_b": np.float32(bits)}

    inits = {"zero": np.float32(0),
             "w1": rng.normal(0, 0.5, (n_in, n_hidden)).astype(np.float32),
             "b1": rng.normal(0, 0.5, n_hidden).astype(np.float32),
             "w2": rng.normal(0, 0.5, (n_hidden, n_out)).astype(np.float32),
             "b2": rng.normal(0, 0.5, n_out).astype(np.float32)}
    nodes = []
    for name, x, scale, bits, kw in [("w1q", "w1", 2.0**-4, 6, {"narrow": 1}), ("b1q", "b1", 2.0**-6, 10, {}),
                                     ("w2q", "w2", 2.0**-4, 6, {"narrow": 1}), ("b2q", "b2", 2.0**-6, 10, {})]:
        node, extra = quant(name, x, scale, bits, **kw)
        nodes.append(node)
        inits.update(extra)
    act, extra = quant("act", "r", 2.0**-3, 6, signed=0)
    inits.update(extra)
    nodes += [
        helper.make_node("MatMul", ["x", "w1q"], ["h0"], name="dense_1_matmul"),
        helper.make_node("Add", ["h0", "b1q"], ["h"], name="dense_1_bias"),
        helper.make_node("Relu", ["h"], ["r"], name="relu_1"),
        act,
        helper.make_node("MatMul", ["act", "w2q"], ["l0"], name="dense_2_matmul"),
        helper.make_node("Add", ["l0", "b2q"], ["logits"], name="dense_2_bias"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "qkeras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    if input_datatype:
        annotation = onnx.TensorAnnotation(tensor_name="x")
        annotation.quant_parameter_tensor_names.add(key="finn_datatype", value=input_datatype)
        graph.quantization_annotation.append(annotation)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    onnx.save(model, str(path))
    return path


def brevitas_float_scaled_mlp(torch_seed: int = 0):
    """A Brevitas MLP as Brevitas users train it, with learned float scales (no powers of two): the input normalized
    as ``2x - 1`` before its first quantizer, per-tensor and per-channel weight scales, ``Int32Bias``, a
    ``BatchNorm1d`` between a product and its ReLU quantizer, and no quantizer after the last product."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias,
                                Uint8ActPerTensorFloat)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q0 = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True)
            self.l1 = qnn.QuantLinear(10, 12, bias=True, weight_quant=Int8WeightPerTensorFloat, bias_quant=Int32Bias)
            self.bn = torch.nn.BatchNorm1d(12)
            self.r1 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
            self.l2 = qnn.QuantLinear(12, 4, bias=True, weight_quant=Int8WeightPerChannelFloat, bias_quant=Int32Bias)

        def forward(self, x):
            return self.l2(self.r1(self.bn(self.l1(self.q0(2 * x - 1)))))

    torch.manual_seed(torch_seed)
    net = Net()
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.rand(64, 10))
    net.eval()
    with torch.no_grad():  # a batch norm that does something
        net.bn.weight.uniform_(0.5, 2)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net


def brevitas_binary_mlp(torch_seed: int = 1):
    """A FINN-style Brevitas MLP: binary (bipolar) weights, ``BatchNorm1d`` then a sign activation (``BipolarQuant``),
    per-channel weight scales, an asymmetric activation quantizer (zero point), float output quantizer."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias,
                                ShiftedUint8ActPerTensorFloat, SignedBinaryActPerTensorConst,
                                SignedBinaryWeightPerTensorConst)

    torch.manual_seed(torch_seed)
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True),
        qnn.QuantLinear(8, 16, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
        torch.nn.BatchNorm1d(16),
        qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True),
        qnn.QuantLinear(16, 12, bias=True, weight_quant=Int8WeightPerChannelFloat, bias_quant=Int32Bias),
        qnn.QuantIdentity(act_quant=ShiftedUint8ActPerTensorFloat, return_quant_tensor=True),
        qnn.QuantLinear(12, 3, bias=True, weight_quant=Int8WeightPerTensorFloat, bias_quant=Int32Bias),
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat),
    )
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(64, 8))
    return net.eval()


def brevitas_qonnx(net, path: Path, n_in: int) -> Path:
    """``export_qonnx`` (TorchScript export, as Brevitas 0.13 needs) of a network with ``n_in`` inputs."""
    import torch
    from brevitas.export import export_qonnx

    export_qonnx(net, torch.rand(1, n_in), export_path=str(path), dynamo=False)
    return path


def finn_multithreshold_mlp(path: Path, n_in: int = 6, n_hidden: int = 10, n_out: int = 4, seed: int = 4) -> Path:
    """A FINN-streamlined-style QONNX graph: a quantized input, integer weights, ``MultiThreshold`` activations
    (2-bit signed through ``out_bias``), a float rescaling ``Mul`` and a final unsigned 3-bit ``MultiThreshold``."""
    rng = np.random.default_rng(seed)
    inits = {"s_in": np.float32(2.0**-4), "zero": np.float32(0), "bits": np.float32(8),
             "w1": rng.integers(-3, 4, (n_in, n_hidden)).astype(np.float32),
             "t1": np.sort(rng.normal(0, 6, (n_hidden, 3)), axis=1).astype(np.float32),
             "w2": rng.integers(-3, 4, (n_hidden, n_out)).astype(np.float32),
             "k": np.float32(0.37),
             "t2": np.sort(rng.normal(0, 2, (n_out, 7)), axis=1).astype(np.float32)}
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "zero", "bits"], ["xq"], domain=QONNX_DOMAIN, rounding_mode="ROUND",
                         signed=1, narrow=0, name="quant_in"),
        helper.make_node("MatMul", ["xq", "w1"], ["h"], name="matmul_1"),
        helper.make_node("MultiThreshold", ["h", "t1"], ["a"], domain=QONNX_DOMAIN, out_dtype="INT2", out_bias=-2.0,
                         name="thresholds_1"),
        helper.make_node("MatMul", ["a", "w2"], ["l"], name="matmul_2"),
        helper.make_node("Mul", ["l", "k"], ["ls"], name="rescale"),
        helper.make_node("MultiThreshold", ["ls", "t2"], ["y"], domain=QONNX_DOMAIN, out_dtype="UINT3",
                         name="thresholds_2"),
    ]
    graph = helper.make_graph(nodes, "finn_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    onnx.save(model, str(path))
    return path
