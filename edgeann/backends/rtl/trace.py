"""The fixed-point graph as alkaid traced logic: each node maps onto operations on symbolic arrays.

alkaid's ``FVArray`` holds one symbolic fixed-point variable per value and tracks its exact range
and grid, so the graph's arithmetic carries over as real values: a node's output value is its
integer code times ``2**-frac``, exactly what :meth:`edgeann.ir.Graph.predict` returns.
Constant-matrix products (dense, convolution) become adder trees; nothing uses a multiplier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeann import ir
from edgeann.errors import EdgeannError

# alkaid's defaults (HWConfig(adder_size=1, carry_size=1, latency_cutoff=-1)): cost counted in adder bits,
# no latency limit inside one constant-matrix product (the pipeliner cuts stages afterwards)
HWCONF = (1, 1, -1)
# cmvm_solve reads the constant matrix as float32: integer weights are exact below 2**24
MAX_WEIGHT_CODE = 1 << 24


def kif(t: ir.FixedType) -> tuple[int, int, int]:
    """alkaid's (keep sign, integer bits without the sign, fraction bits) of a type."""
    k = int(t.signed)
    return k, t.width - t.frac - k, t.frac


def _traced(values, like):
    """Wrap what numpy returned (constants, when every weight of an output is zero) as a traced array."""
    from alkaid.trace import FVArray

    if isinstance(values, FVArray):
        return values
    return FVArray(np.asarray(values, dtype=object), like.solver_options, hwconf=like.hwconf)


def requantize(x, t: ir.FixedType, rounding: str):
    """Round onto the grid of ``t`` (floor, or half-to-even), then saturate: :func:`edgeann.ir.requantize`."""
    k, i, f = kif(t)
    overflow = "SAT_SYM" if t.narrow else "SAT"
    if rounding == "half_even":
        # alkaid rounds half to even only in wrap mode: round on a grid one integer bit wider than the source
        # (so rounding up never wraps), then saturate the now exact value
        src_k, src_i, src_f = (np.asarray(a) for a in x.kif)
        if np.any(src_f > f):
            x = _traced([v.quantize(int(kk), int(ii) + 1, f, "WRAP", "RND_CONV") if ff > f else v
                         for v, kk, ii, ff in zip(np.asarray(x).ravel(), src_k.ravel(), src_i.ravel(), src_f.ravel())],
                        x).reshape(x.shape)
    return x.quantize(k, i, f, overflow, "TRN")


def _constant(codes: np.ndarray, t: ir.FixedType, node: ir.Node, what: str) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and np.abs(codes).max() >= MAX_WEIGHT_CODE:
        raise EdgeannError(f"the RTL back end cannot build node {node.name} ({node.op}): its {what} codes exceed 24 bits")
    return codes.astype(np.float64) * t.scale


def _dense(node: ir.Dense, x, infos):
    w = _constant(node.weight, node.weight_type, node, "weight")
    b = _constant(node.bias, node.bias_type, node, "bias")
    return _traced(x @ w.T, x) + b


def _relu(node: ir.Relu, x, infos):
    return requantize(x.relu(), node.type, node.rounding)


def _quantize(node: ir.Quantize, x, infos):
    return requantize(x, node.type, node.rounding)


def _padded(x, pads: tuple[int, ...]):
    """Zero padding around the spatial axes of a (*spatial, c) traced array."""
    if not any(pads):
        return x
    arr = np.asarray(x, dtype=object)
    widths = [*zip(pads[::2], pads[1::2]), (0, 0)]
    out = np.full(tuple(n + a + b for n, (a, b) in zip(arr.shape, widths)), 0.0, dtype=object)
    out[tuple(slice(a, a + n) for n, (a, _) in zip(arr.shape, widths))] = arr
    return _traced(out, x)


def _windows(x, window: tuple[int, ...], stride: tuple[int, ...]):
    """(*spatial, c) -> (*out, *window, c): every window position, unrolled."""
    arr = np.asarray(x, dtype=object)
    d = len(window)
    v = np.lib.stride_tricks.sliding_window_view(arr, window, axis=tuple(range(d)))  # (*full, c, *window)
    v = v[tuple(slice(None, None, s) for s in stride)]
    return np.moveaxis(v, d, -1)


def _conv(node: ir.Conv, x, infos):
    w = _constant(node.weight, node.weight_type, node, "weight").reshape(-1, node.n_out)
    b = _constant(node.bias, node.bias_type, node, "bias")
    win = _windows(_padded(x, node.pads), node.kernel, node.stride)
    positions = win.shape[: len(node.kernel)]
    rows = win.reshape(-1, w.shape[0])
    out = [_traced(_traced(row, x) @ w, x) + b for row in rows]
    return _traced(np.stack([np.asarray(o, dtype=object) for o in out]), x).reshape(*positions, node.n_out)


def _pool(node, x, reduce: Callable):
    win = _windows(x, node.pool, node.stride)
    d = len(node.pool)
    out_shape = win.shape[:d] + win.shape[-1:]
    flat = win.reshape(int(np.prod(win.shape[:d])), int(np.prod(node.pool)), win.shape[-1])
    cols = [reduce(_traced(flat[p], x)) for p in range(flat.shape[0])]
    return _traced(np.stack([np.asarray(c, dtype=object) for c in cols]), x).reshape(out_shape)


def _max_pool(node: ir.MaxPool, x, infos):
    return _pool(node, x, lambda w: np.max(w, axis=0))


def _avg_pool(node: ir.AvgPool, x, infos):
    # exact: the graph keeps the sum on a grid log2(area) bits finer, which is the mean as a value
    return _pool(node, x, lambda w: np.sum(w, axis=0) * (1.0 / node.area))


def _flatten(node: ir.Flatten, x, infos):
    return x.reshape(-1)


def _batch_norm(node: ir.BatchNorm, x, infos):
    s = _constant(node.scale, node.scale_type, node, "scale")
    b = _constant(node.bias, node.bias_type, node, "bias")
    return x * s + b


def _add(node: ir.Add, a, b, infos):
    return a + b


def _threshold(node: ir.Threshold, x, infos):
    """Compare with each threshold of the value's channel and count: ``start + step * count`` on the output grid.
    Thresholds outside the input's reachable range are constants (always or never reached) and build no logic."""
    # (always compare and count here, also where the node has an affine form: alkaid's logic for the floor of
    # a constant multiple of a traced sum differed from the exact floor on the FINN-style example, 35 of 36,000)
    xi, lsb = infos[0], node.type.scale
    arr = np.asarray(x, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        c = idx[-1] if arr.ndim else 0
        t = np.asarray(node.thresholds[c], np.int64)
        always = int(np.count_nonzero(t <= xi.lo))
        live = t[(t > xi.lo) & (t <= xi.hi)]
        count = _tree_sum([arr[idx] >= float(v * xi.type.scale) for v in live])
        out[idx] = (count + always) * float(node.step[c] * lsb) + float(node.start[c] * lsb)
    return _traced(out, x)


def _tree_sum(terms: list):
    """A balanced adder tree (depth log2 of the number of terms, not a chain)."""
    if not terms:
        return 0.0
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


BUILDERS: dict[type[ir.Node], Callable] = {
    ir.Dense: _dense,
    ir.Relu: _relu,
    ir.Quantize: _quantize,
    ir.Conv: _conv,
    ir.MaxPool: _max_pool,
    ir.AvgPool: _avg_pool,
    ir.Flatten: _flatten,
    ir.BatchNorm: _batch_norm,
    ir.Add: _add,
    ir.Threshold: _threshold,
}

WHY_NOT = {
    ir.GRU: "recurrent layers loop over time steps with state; the RTL back end builds feed-forward logic only "
            "(use --fpga for the hls4ml firmware)",
    ir.LSTM: "recurrent layers loop over time steps with state; the RTL back end builds feed-forward logic only "
             "(use --fpga for the hls4ml firmware)",
}


def check_supported(graph: ir.Graph) -> None:
    """Refuse, naming the first node, a graph the RTL back end cannot build."""
    for node in graph.nodes[1:]:
        if type(node) not in BUILDERS:
            why = WHY_NOT.get(type(node), "no RTL mapping for this node type")
            raise EdgeannError(f"the RTL back end cannot build node {node.name} ({node.op}): {why}")


def trace_graph(graph: ir.Graph):
    """The graph's first output as alkaid logic: returns (input FVArray, output FVArray), both flat."""
    from alkaid.trace import FVArray

    check_supported(graph)
    infos = graph.infos()
    t = graph.input.type
    shape = tuple(graph.input.shape)
    # the input port carries the codes of the input type (a narrow type never holds its most negative code)
    x = FVArray.from_lhs(np.full(shape, t.int_min * t.scale), np.full(shape, t.int_max * t.scale),
                         np.full(shape, t.scale), hwconf=HWCONF)
    values = {graph.input.name: x}
    for node in graph.nodes[1:]:
        args = [values[name] for name in node.inputs]
        try:
            values[node.name] = _traced(BUILDERS[type(node)](node, *args, [infos[n] for n in node.inputs]), args[0])
        except EdgeannError:
            raise
        except Exception as e:
            raise EdgeannError(f"the RTL back end failed on node {node.name} ({node.op}): {type(e).__name__}: {e}") from None
    out = values[graph.outputs[0]]
    return _traced(np.asarray(x).ravel(), x), _traced(np.asarray(out, dtype=object).ravel(), x)


def comb_logic(*graphs: ir.Graph):
    """alkaid's combinational logic (CombLogic) for one graph, or several side by side (inputs and outputs
    concatenated in order: what tests use to build many small graphs into one simulation). Dead inputs
    stay, so the input port keeps every input."""
    from alkaid.trace import trace

    traced = [trace_graph(g) for g in graphs]
    inp = np.concatenate([np.asarray(i, dtype=object) for i, _ in traced])
    out = np.concatenate([np.asarray(o, dtype=object) for _, o in traced])
    comb = trace(list(inp), list(out), keep_dead_inputs=True)
    if not any(op.opcode == -1 for op in comb.ops):
        # alkaid would write an input port of width zero, which no Verilog tool accepts
        raise EdgeannError(f"the RTL back end cannot build {', '.join(g.name for g in graphs)}: its output does not "
                           "depend on its input (every weight path is pruned or saturated to a constant)")
    return comb


def is_constant(graph: ir.Graph) -> bool:
    """Whether no output of the graph depends on its input."""
    from alkaid.trace import trace

    inp, out = trace_graph(graph)
    return not any(op.opcode == -1 for op in trace(list(np.asarray(inp)), list(np.asarray(out)), keep_dead_inputs=True).ops)
