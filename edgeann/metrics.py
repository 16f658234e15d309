"""Physics-facing metrics: accuracy and ROC AUC per class; per-layer cost of the fixed-point graph."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from edgeann import ir


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, cross-entropy loss and one-vs-rest ROC AUC per class."""
    p = softmax(logits.astype(np.float64))
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    auc = {}
    for k, name in enumerate(classes):
        is_k = y == k
        auc[name] = float(roc_auc_score(is_k, p[:, k])) if 0 < is_k.sum() < len(y) else float("nan")
    return {
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
        "loss": loss,
        "roc_auc": auc,
        "roc_auc_mean": float(np.nanmean(list(auc.values()))) if auc else float("nan"),
        "n_samples": int(len(y)),
    }


def bops(n_in: int, n_out: int, b_a: int, b_w: int, sparsity: float) -> float:
    """Bit operations of a dense layer as defined in Hawks et al. 2021 ("Ps and Qs")."""
    return n_out * n_in * ((1.0 - sparsity) * b_a * b_w + b_a + b_w + math.log2(max(n_in, 1)))


def weighted(node: ir.Node, infos: dict) -> dict | None:
    """What a layer multiplies, if anything: its integer weights as (fan-in, outputs), their types, and at how many
    output positions they are applied (1 for a dense layer; every pixel for a convolution or batch normalization)."""
    if isinstance(node, ir.Dense):
        return {"weight": node.weight.T, "weight_type": node.weight_type, "bias_type": node.bias_type, "positions": 1}
    if isinstance(node, ir.Conv):
        return {"weight": node.weight.reshape(-1, node.n_out), "weight_type": node.weight_type,
                "bias_type": node.bias_type, "positions": int(np.prod(infos[node.name].shape[:-1]))}
    if isinstance(node, ir.BatchNorm):
        return {"weight": node.scale[None, :], "weight_type": node.scale_type, "bias_type": node.bias_type,
                "positions": int(np.prod(infos[node.name].shape[:-1]))}
    return None


def layer_table(graph: ir.Graph) -> list[dict]:
    """One row per weighted layer: shapes, bit widths, sparsity, multiplications left and BOPs.

    A convolution's row counts one kernel (``n_in`` = kernel positions x input channels, the fan-in, ``n_out`` =
    filters) applied at ``positions`` output positions: its BOPs and multiply-accumulates (``macs``) are per
    position times positions; ``multiplications`` counts one kernel's (the products that need a multiplier: the
    firmware computes them with ``ceil(multiplications / reuse factor)`` multipliers, see :mod:`edgeann.report`).
    """
    infos = graph.infos()
    rows = []
    for node in graph.nodes:
        if isinstance(node, ir.Recurrent):
            rows.append(recurrent_row(node, infos))
            continue
        w = weighted(node, infos)
        if w is None:
            continue
        x = infos[node.inputs[0]]
        weight, positions = np.asarray(w["weight"]).astype(np.int64), w["positions"]
        n_in, n_out = weight.shape
        n_weights = int(weight.size)
        nonzero = int(np.count_nonzero(weight))
        sparsity = 1.0 - nonzero / max(n_weights, 1)
        rows.append({
            "layer": node.name,
            "op": node.op,
            "n_in": n_in,
            "n_out": n_out,
            "positions": positions,
            "input_type": x.type.hls(),
            "weight_bits": w["weight_type"].width,
            "bias_bits": w["bias_type"].width,
            "accumulator_type": infos[node.name].type.hls(),
            "n_weights": n_weights,
            "nonzero_weights": nonzero,
            "sparsity": sparsity,
            # a product for every nonzero weight; multiplying by +-2^k is only a shift
            "multiplications": _multiplications(weight),
            "macs": positions * nonzero,
            "macs_saved_by_pruning": positions * (n_weights - nonzero),
            "bops": positions * bops(n_in, n_out, x.type.width, w["weight_type"].width, sparsity),
        })
    return rows


def recurrent_row(node: ir.Recurrent, infos: dict) -> dict:
    """A GRU's or LSTM's row: per step, its two matrices (input and recurrent) and its element-wise products
    (GRU: r * gh_n, z * (h - n); LSTM: f * c, i * g, o * tanh(c)) for each of its H units, repeated at every one
    of its ``steps``. BOPs and multiply-accumulates are per step times steps; ``multiplications`` are one step's
    (the firmware reuses them at every step): ``matrix_multiplications`` of the two matrices, then the gate
    products."""
    x = infos[node.inputs[0]]
    a = node.arithmetic(x)
    steps, n_h = x.shape[0], node.hidden
    matrices = [(node.w_ih.astype(np.int64), node.w_ih_type, x.type.width),
                (node.w_hh.astype(np.int64), node.w_hh_type, node.state_type.width)]
    products = node.products(a)
    n_weights = sum(int(w.size) for w, _, _ in matrices)
    nonzero = sum(int(np.count_nonzero(w)) for w, _, _ in matrices)
    step_bops = sum(bops(w.shape[1], w.shape[0], b_a, t.width, 1.0 - np.count_nonzero(w) / max(w.size, 1))
                    for w, t, b_a in matrices)
    step_bops += sum(n_h * b_a * b_b for _, b_a, b_b in products)
    matrix_multiplications = [_multiplications(w) for w, _, _ in matrices]
    return {
        "layer": node.name,
        "op": node.op,
        "n_in": node.n_in,
        "n_out": n_h,
        "positions": steps,
        "steps": steps,
        "input_type": x.type.hls(),
        "weight_bits": node.w_ih_type.width,
        "recurrent_weight_bits": node.w_hh_type.width,
        "bias_bits": node.b_ih_type.width,
        "accumulator_type": a.gi.type.hls(),
        "recurrent_accumulator_type": a.gh.type.hls(),
        "table_types": {name: f"{index.hls()} -> {out.hls()}" for name, (_, index, out) in node.tables().items()},
        "state_type": node.state_type.hls(),
        "table_entries": sum(int(t.size) for t, _, _ in node.tables().values()),
        "gate_products": [what for what, _, _ in products],
        "n_weights": n_weights,
        "nonzero_weights": nonzero,
        "sparsity": 1.0 - nonzero / max(n_weights, 1),
        "matrix_multiplications": matrix_multiplications,
        "gate_multiplications": len(products) * n_h,
        "multiplications": sum(matrix_multiplications) + len(products) * n_h,
        "macs": steps * (nonzero + len(products) * n_h),
        "macs_saved_by_pruning": steps * (n_weights - nonzero),
        "bops_per_step": step_bops,
        "bops": steps * step_bops,
    }


def _multiplications(weight: np.ndarray) -> int:
    """Products with these integer weights that need a multiplier: nonzero weights that are not +-2^k (a shift)."""
    return int(np.count_nonzero((weight != 0) & ~_power_of_two(np.abs(weight))))


def _power_of_two(a: np.ndarray) -> np.ndarray:
    return (a > 0) & ((a & (a - 1)) == 0)


def activation_bits(graph: ir.Graph) -> dict[str, str]:
    """The fixed-point type of every tensor, by name."""
    return {name: info.type.hls() for name, info in graph.infos().items()}
