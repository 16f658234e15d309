"""Back ends: everything built from the fixed-point graph (:mod:`edgeann.ir`) and nothing else.

* :mod:`edgeann.backends.onnx_qcdq` - ``model.onnx`` in standard ONNX ops, the onnxruntime reference;
* :mod:`edgeann.backends.hls` - hls4ml firmware, compiled into a batched C simulation;
* :mod:`edgeann.backends.rtl` - alkaid Verilog, simulated with Verilator and synthesized with Yosys.

Each firmware back end exposes a simulator with ``predict(x)``; :mod:`edgeann.verify` compares any of
them with the reference the same way.
"""
