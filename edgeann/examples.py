"""Example foreign models, written by ``edgeann examples DIR``: one per kind of third-party export edgeann reads,
each with the export command that ends bit-exact against the original (the README's "Foreign models" section).

They are built here rather than downloaded (the machines that run edgeann need not reach the internet), in the
shapes the exporters write: a QKeras model through qonnx (``Quant`` weights, unquantized input, ``Softmax``), Brevitas
``export_qonnx`` with learned float scales, batch norm and ``2x - 1`` input normalization, a FINN-style binarized
network (bipolar weights, sign activations, a zero point), a FINN-streamlined graph of ``MultiThreshold`` nodes, and
a float Keras CNN as tf2onnx writes it.
The tests build the same models (``tests/frontends/foreign_models.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


def keras_float_cnn(path: Path, seed: int = 5) -> Path:
    """A float CNN as tf2onnx writes a Keras model: channels-last input (1, 8, 8, 2), ``Transpose`` to channels-first,
    ``Conv`` 3x3 with ``auto_pad=SAME_UPPER`` (Keras ``padding='same'``) -> ``Relu`` -> ``MaxPool`` 2x2 -> ``Conv``
    3x3 -> ``Relu``, ``Transpose`` back, ``Identity`` (Keras' inference-time ``Dropout``), ``Flatten``, ``Gemm``,
    ``Softmax``: a float model for ``--precision``."""
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.normal(0, 0.4, (4, 2, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, 4).astype(np.float32),
             "w2": rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32), "b2": rng.normal(0, 0.1, 6).astype(np.float32),
             "fw": rng.normal(0, 0.3, (2 * 2 * 6, 5)).astype(np.float32), "fb": rng.normal(0, 0.1, 5).astype(np.float32)}
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["xt", "w1", "b1"], ["c1"], kernel_shape=[3, 3], auto_pad="SAME_UPPER", name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Transpose", ["r2"], ["r2t"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Identity", ["r2t"], ["r2d"], name="dropout"),
        helper.make_node("Flatten", ["r2d"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "keras_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@dataclass(frozen=True)
class Example:
    file: str
    kind: str
    options: tuple[str, ...]

    def command(self, folder: Path) -> str:
        return " ".join(["edgeann export", str(Path(folder) / self.file), "--fpga", *self.options])


EXAMPLES = (
    Example("qkeras_mlp.onnx", "QKeras-style QONNX: Quant weights, unquantized input, Softmax",
            ("--input-precision", "'ap_fixed<8,3>'")),
    Example("brevitas_float_scales.onnx", "Brevitas export_qonnx: float scales, per-channel weights, BatchNorm, 2x-1 input",
            ("--input-precision", "'ap_fixed<10,2>'")),
    Example("finn_binary.onnx", "FINN-style binarized MLP: bipolar weights and activations, zero point",
            ("--input-precision", "'ap_fixed<10,4>'")),
    Example("finn_thresholds.onnx", "FINN-streamlined graph: MultiThreshold activations", ()),
    Example("keras_cnn.onnx", "float Keras-style CNN (tf2onnx): Transpose, SAME Conv, MaxPool, Softmax",
            ("--precision", "'ap_fixed<16,6>'")),
)


def write_examples(folder: Path) -> list[tuple[Example, Path]]:
    """Write every example model into ``folder`` (created); returns each with its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():  # Brevitas' export chatter (optional kernels, opset) is not the user's concern
        warnings.simplefilter("ignore")
        for example in EXAMPLES:
            written.append((example, _write(example, folder / example.file)))
    return written


def _write(example: Example, path: Path) -> Path:
    if example.file == "qkeras_mlp.onnx":
        return qkeras_like_qonnx(path)
    if example.file == "brevitas_float_scales.onnx":
        return brevitas_qonnx(brevitas_float_scaled_mlp(), path, 10)
    if example.file == "finn_binary.onnx":
        return brevitas_qonnx(brevitas_binary_mlp(), path, 8)
    if example.file == "keras_cnn.onnx":
        return keras_float_cnn(path)
    return finn_multithreshold_mlp(path)
