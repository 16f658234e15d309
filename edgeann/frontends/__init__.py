"""Front ends: everything that becomes the fixed-point graph (:mod:`edgeann.ir`).

* :mod:`edgeann.frontends.lowering` - a model trained by edgeann (Brevitas QAT) -> graph;
* :mod:`edgeann.frontends.onnx` - foreign QONNX and float ONNX models -> graph.
"""
