"""Builders of small foreign convolutional models: Brevitas QONNX CNNs and hand-made float ONNX (Keras-style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.frontends.foreign_models import QONNX_DOMAIN, _save


def brevitas_cnn(d: int = 2, residual: bool = False, torch_seed: int = 0):
    """QuantIdentity -> QuantConv -> QuantReLU -> MaxPool -> Flatten -> QuantLinear with power-of-two quantizers on
    a (2, 6, 6) input (``d=2``) or (2, 8) (``d=1``); ``residual`` adds a second, padded conv branch summed with
    the first (an Add of two quantized activations)."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias,
                                Uint8ActPerTensorFixedPoint)

    conv = qnn.QuantConv2d if d == 2 else qnn.QuantConv1d
    pool = torch.nn.MaxPool2d(2) if d == 2 else torch.nn.MaxPool1d(2)
    w = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int16Bias, return_quant_tensor=True)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.conv = conv(2, 3, 3, padding=1, bias=True, **w)
            self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
            if residual:
                self.conv2 = conv(3, 3, 3, padding=1, bias=True, **w)
                self.q2 = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint)
                self.q1 = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint)
                self.sum = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.pool = pool
            n = 3 * (9 if d == 2 else 4)
            self.fc = qnn.QuantLinear(n, 4, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int16Bias)

        def forward(self, x):
            x = self.relu(self.conv(self.inp(x)))
            if residual:
                x = self.sum(self.q1(x) + self.q2(self.conv2(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(torch_seed)
    net = Net()
    shape = (2, 6, 6) if d == 2 else (2, 8)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(64, *shape) * 2)
    return net.eval(), shape


def brevitas_cnn_export(path: Path, **kw) -> Path:
    import torch
    from brevitas.export import export_qonnx

    net, shape = brevitas_cnn(**kw)
    export_qonnx(net, torch.randn(1, *shape), export_path=str(path), dynamo=False)
    return path


def keras_float_cnn(path: Path, d: int = 2, seed: int = 0, quant_input: bool = False, **conv_attrs) -> Path:
    """A Keras-style float ONNX CNN: channels-last input (1, 6, 6, 2) (``d=2``) or (1, 8, 2), Transpose to
    channels-first, Conv (+ bias) -> Relu, Transpose back, Identity, Flatten, Gemm. ``conv_attrs`` go on the Conv node.
    ``quant_input``: a QONNX ``Quant`` (8 bits, scale 2**-4) reads the input before the Transpose, and every
    constant is on a 2**-5 grid, so the model is a quantized one (as QKeras through qonnx looks)."""
    rng = np.random.default_rng(seed)
    spatial = (6, 6) if d == 2 else (8,)
    k = (3,) * d
    dil = conv_attrs.get("dilations", [1] * d)[0]
    pads = conv_attrs.get("pads", [0] * 2 * d)
    same = str(conv_attrs.get("auto_pad", "")).startswith("SAME")
    out_spatial = tuple(n if same else n + pads[i] + pads[i + d] - dil * 2 for i, n in enumerate(spatial))
    n_flat = 4 * int(np.prod(out_spatial))
    group = conv_attrs.get("group", 1)
    inits = {"w": rng.normal(0, 0.4, (4, 2 // group, *k)).astype(np.float32),
             "b": rng.normal(0, 0.1, 4).astype(np.float32),
             "fw": rng.normal(0, 0.3, (n_flat, 3)).astype(np.float32), "fb": rng.normal(0, 0.1, 3).astype(np.float32)}
    to_cf, to_cl = ([0, 3, 1, 2], [0, 2, 3, 1]) if d == 2 else ([0, 2, 1], [0, 2, 1])
    first = []
    if quant_input:
        inits = {k: np.clip(np.round(v * 32) / 32, -3.5, 3.5).astype(np.float32) for k, v in inits.items()}
        inits.update(qs=np.float32(2.0**-4), qz=np.float32(0), qb=np.float32(8))
        first = [helper.make_node("Quant", ["x", "qs", "qz", "qb"], ["xq"], domain=QONNX_DOMAIN, name="quant_in",
                                  signed=1, narrow=0, rounding_mode="ROUND")]
    nodes = [*first, helper.make_node("Transpose", ["xq" if quant_input else "x"], ["xt"], perm=to_cf, name="to_nchw"),
             helper.make_node("Conv", ["xt", "w", "b"], ["c"], name="conv", kernel_shape=list(k), **conv_attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["rt"], perm=to_cl, name="to_nhwc"),
             helper.make_node("Identity", ["rt"], ["rd"], name="dropout"),  # Keras' Dropout, as tf2onnx writes it
             helper.make_node("Flatten", ["rd"], ["f"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="dense")]
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *spatial, 2])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    if not quant_input:
        return _save(nodes, inits, *io, path)
    graph = helper.make_graph(nodes, "keras_like", *io, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]),
              str(path))
    return path


def float_pool_cnn(path: Path, pool: str = "AveragePool", seed: int = 0, **pool_attrs) -> Path:
    """A channels-first float ONNX CNN (input (1, 2, 8, 8)): Conv 3x3 (pads 1) -> Relu -> ``pool`` -> Flatten ->
    Gemm. ``pool_attrs`` go on the pooling node (AveragePool / MaxPool: kernel_shape [2, 2] unless given)."""
    rng = np.random.default_rng(seed)
    if pool != "GlobalAveragePool":
        pool_attrs.setdefault("kernel_shape", [2, 2])
    pool_node = helper.make_node(pool, ["r"], ["p"], name="pool", **pool_attrs)
    shape = _pooled_shape(pool, pool_attrs)
    n_flat = 4 * int(np.prod(shape))
    inits = {"w": rng.normal(0, 0.4, (4, 2, 3, 3)).astype(np.float32), "b": rng.normal(0, 0.1, 4).astype(np.float32),
             "fw": rng.normal(0, 0.3, (n_flat, 3)).astype(np.float32), "fb": rng.normal(0, 0.1, 3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"), pool_node,
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="dense")]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], path)


def _pooled_shape(pool: str, attrs: dict) -> tuple[int, int]:
    if pool == "GlobalAveragePool":
        return (1, 1)
    k, s, p = attrs["kernel_shape"], attrs.get("strides", [1, 1]), attrs.get("pads", [0] * 4)  # ONNX: stride 1 unless given
    return tuple((8 + p[i] + p[i + 2] - k[i]) // s[i] + 1 for i in range(2))


def brevitas_cnn_qcdq_export(path: Path, **kw) -> Path:
    """The same CNN exported as QuantizeLinear / DequantizeLinear (QCDQ)."""
    import torch
    from brevitas.export import export_onnx_qcdq

    net, shape = brevitas_cnn(**kw)
    export_onnx_qcdq(net, torch.randn(1, *shape), export_path=str(path), dynamo=False)
    return path


def brevitas_float_cnn(per_channel: bool, path: Path, seed: int = 0) -> Path:
    """Brevitas' defaults: float (learned) scales on the input, the convolutions' weights (per tensor, or one per
    output channel) and activations, float biases, BatchNorm2d, MaxPool, AvgPool; 4-bit weights and activations."""
    import torch
    from brevitas import nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat

    torch.manual_seed(seed)
    wq = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=6, return_quant_tensor=True),
        qnn.QuantConv2d(2, 4, 3, weight_quant=wq, weight_bit_width=4, padding=1),
        torch.nn.BatchNorm2d(4),
        qnn.QuantReLU(bit_width=4, return_quant_tensor=True),
        torch.nn.MaxPool2d(2),
        qnn.QuantConv2d(4, 3, 3, weight_quant=wq, weight_bit_width=4, bias=True),
        qnn.QuantReLU(bit_width=4, return_quant_tensor=True),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        qnn.QuantLinear(3, 2, bias=True))
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, 2, 8, 8))
    export_qonnx(net.eval(), torch.randn(1, 2, 8, 8), export_path=str(path), dynamo=False)
    return path


def brevitas_feature_map_cnn(path: Path, seed: int = 0) -> Path:
    """A Brevitas CNN whose output is a feature map (an autoencoder's shape): QuantIdentity -> QuantConv2d (float
    scales) -> QuantReLU -> QuantConv2d -> QuantIdentity, output (N, 3, 6, 6) channels-first."""
    import torch
    from brevitas import nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8ActPerTensorFloat

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=6, return_quant_tensor=True),
        qnn.QuantConv2d(2, 4, 3, weight_bit_width=4, padding=1),
        qnn.QuantReLU(bit_width=4, return_quant_tensor=True),
        qnn.QuantConv2d(4, 3, 3, weight_bit_width=4),
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat))
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, 2, 8, 8))
    export_qonnx(net.eval(), torch.randn(1, 2, 8, 8), export_path=str(path), dynamo=False)
    return path
