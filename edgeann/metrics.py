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


def layer_table(graph: ir.Graph) -> list[dict]:
    """One row per weighted layer: shapes, bit widths, sparsity, multipliers left and BOPs."""
    infos = graph.infos()
    rows = []
    for node in graph.nodes:
        if not isinstance(node, ir.Dense):
            continue
        x = infos[node.inputs[0]]
        n_weights = int(node.weight.size)
        nonzero = int(np.count_nonzero(node.weight))
        sparsity = 1.0 - nonzero / max(n_weights, 1)
        rows.append({
            "layer": node.name,
            "op": node.op,
            "n_in": node.n_in,
            "n_out": node.n_out,
            "input_type": x.type.hls(),
            "weight_bits": node.weight_type.width,
            "bias_bits": node.bias_type.width,
            "accumulator_type": infos[node.name].type.hls(),
            "n_weights": n_weights,
            "nonzero_weights": nonzero,
            "sparsity": sparsity,
            # a multiplier for every nonzero weight; multiplying by +-2^k is only a shift
            "multipliers": int(np.count_nonzero((node.weight != 0) & ~_power_of_two(np.abs(node.weight)))),
            "bops": bops(node.n_in, node.n_out, x.type.width, node.weight_type.width, sparsity),
        })
    return rows


def _power_of_two(a: np.ndarray) -> np.ndarray:
    return (a > 0) & ((a & (a - 1)) == 0)


def activation_bits(graph: ir.Graph) -> dict[str, str]:
    """The fixed-point type of every tensor, by name."""
    return {name: info.type.hls() for name, info in graph.infos().items()}
