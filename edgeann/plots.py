"""Plots a physicist reads at a glance: learning curves and ROC curves (PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc, roc_curve  # noqa: E402

from edgeann.metrics import softmax  # noqa: E402


def learning_curves(history: list[dict], path: Path, best_epoch: int | None = None, title: str = "") -> Path:
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train", marker=".")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation", marker=".")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", label=f"best (epoch {best_epoch})")
        ax.legend()
        ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(epochs, [h["sparsity"] for h in history], color="C2", marker=".", label="sparsity")
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of weights pruned", color="C2")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["lr"] for h in history], color="C3", ls="--", label="learning rate")
    ax2.set_ylabel("learning rate", color="C3")
    ax.grid(alpha=0.3)
    fig.suptitle(title or "quantization-aware training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_curves(logits: np.ndarray, y: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """One-vs-rest ROC per class: signal efficiency against background mistag rate (log scale)."""
    p = softmax(logits.astype(np.float64))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for k, name in enumerate(classes):
        is_k = y == k
        if not 0 < is_k.sum() < len(y):
            continue
        fpr, tpr, _ = roc_curve(is_k, p[:, k])
        ax.plot(tpr, np.clip(fpr, 1e-5, 1), label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_ylim(1e-4 if len(y) >= 10000 else 1e-3, 1)
    ax.set_xlabel("signal efficiency (true positive rate)")
    ax.set_ylabel("background mistag rate (false positive rate)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="class, one vs rest")
    ax.set_title(title or "ROC curves, test split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def layer_costs(layers: list[dict], path: Path, title: str = "") -> Path:
    """Per layer: weights kept after pruning, multiplications (nonzero weights that are not powers of two), multipliers
    instantiated at the reuse factor, and BOPs (log scale): where the LUTs go."""
    names = [r["layer"] for r in layers]
    x = np.arange(len(names))
    fig, (ax, ax_bops) = plt.subplots(1, 2, figsize=(12, 4))
    ax.bar(x - 0.3, [r["n_weights"] for r in layers], 0.2, label="weights", color="0.75")
    ax.bar(x - 0.1, [r["nonzero_weights"] for r in layers], 0.2, label="nonzero weights", color="C0")
    ax.bar(x + 0.1, [r.get("multiplications", 0) for r in layers], 0.2, label="multiplications", color="C1")
    ax.bar(x + 0.3, [r.get("multipliers", 0) for r in layers], 0.2, label="multipliers (at the reuse factor)", color="C3")
    ax.set_ylabel("count")
    ax_bops.bar(x, [max(r["bops"], 1) for r in layers], 0.6, color="C2")
    ax_bops.set_yscale("log")
    ax_bops.set_ylabel("BOPs (Hawks et al. 2021)")
    for a in (ax, ax_bops):
        a.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
        a.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.suptitle(title or "cost per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
