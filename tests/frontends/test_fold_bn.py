"""Float models with batch norms (post-training fixed point): folded into the products before them, and the shapes
PyTorch's old exporter writes (ONNX IR version 3: initializers listed as inputs; opset 6 Gemm; Unsqueeze/Squeeze
around BatchNormalization)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeann.backends import onnx_qcdq
from edgeann.frontends.onnx import parse_precision, read_foreign
from edgeann.frontends.onnx.fold_bn import fold_batchnorms


def _bn(rng, n, prefix):
    return {f"{prefix}_g": rng.uniform(0.5, 2, n), f"{prefix}_b": rng.normal(0, 0.3, n),
            f"{prefix}_m": rng.normal(0, 0.3, n), f"{prefix}_v": rng.uniform(0.5, 2, n)}


def old_pytorch_mlp(path, opset: int = 13, ir3: bool = True):
    """Gemm -> Unsqueeze -> BatchNormalization -> Squeeze -> Relu -> MatMul -> Add -> BatchNormalization -> Gemm,
    as PyTorch's old exporter writes BatchNorm1d; ``ir3``: every initializer is also a graph input, and an unused one
    (num_batches_tracked) is there too."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(0, 0.5, (8, 6)), "b1": rng.normal(0, 0.1, 8), **_bn(rng, 8, "bn1"),
             "w2": rng.normal(0, 0.4, (8, 5)), "b2": rng.normal(0, 0.1, 5), **_bn(rng, 5, "bn2"),
             "w3": rng.normal(0, 0.4, (3, 5)), "b3": rng.normal(0, 0.1, 3), "unused": np.array(7.0)}
    inits = {k: np.asarray(v, np.float32) for k, v in inits.items()}
    if opset >= 13:
        inits["axes"] = np.array([2], np.int64)
        unsq = [helper.make_node("Unsqueeze", ["h1", "axes"], ["h1u"]), helper.make_node("Squeeze", ["n1", "axes"], ["n1s"])]
    else:
        unsq = [helper.make_node("Unsqueeze", ["h1"], ["h1u"], axes=[2]), helper.make_node("Squeeze", ["n1"], ["n1s"], axes=[2])]
    gemm = {"broadcast": 1} if opset < 7 else {}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, **gemm), unsq[0],
             helper.make_node("BatchNormalization", ["h1u", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["n1"], epsilon=1e-5),
             unsq[1], helper.make_node("Relu", ["n1s"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"]), helper.make_node("Add", ["h2", "b2"], ["h2b"]),
             helper.make_node("BatchNormalization", ["h2b", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["n2"], epsilon=1e-5),
             helper.make_node("Relu", ["n2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], transB=1, **gemm)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])]
    if ir3:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT if v.dtype == np.float32 else TensorProto.INT64,
                                                 list(v.shape)) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "old_pytorch", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir3:
        model.ir_version = 3
    onnx.save(model, str(path))
    return path


def test_folding_keeps_the_float_model_and_removes_every_batch_norm(tmp_path):
    path = old_pytorch_mlp(tmp_path / "m.onnx", ir3=False)
    model = onnx.load(str(path))
    folded = copy.deepcopy(model)
    assert fold_batchnorms(folded) == 2
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    x = np.random.default_rng(1).normal(size=(500, 6)).astype(np.float32)
    original = onnx_qcdq.run_any(path, x)
    onnx.save(folded, str(tmp_path / "f.onnx"))
    assert np.abs(onnx_qcdq.run_any(tmp_path / "f.onnx", x) - original).max() < 1e-5


@pytest.mark.parametrize("opset", [6, 13])
def test_old_pytorch_export_is_read_with_its_batch_norms_folded(tmp_path, opset):
    """Once refused ('this one has 5 inputs': the IR-3 inputs of unused initializers); opset 6 Gemm has no
    onnxruntime kernel, so the original is converted to opset 13 to be run."""
    path = old_pytorch_mlp(tmp_path / "m.onnx", opset=opset)
    f = read_foreign(path, parse_precision("ap_fixed<16,6>"))
    ops = [n.op for n in f.graph.nodes]
    assert ops.count("Dense") == 3 and not {"Threshold", "BatchNormalization"} & set(ops)
    x = np.random.default_rng(2).normal(size=(500, 6)).astype(np.float32)
    assert np.abs(f.graph.predict(x) - onnx_qcdq.run_any(path, x)).max() < 0.02  # post-training fixed point
