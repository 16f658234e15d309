"""Magnitude pruning as a regularizer, shared by every model family.

Each prunable layer (see :meth:`EdgeModel.prunable`) carries a ``weight_mask`` buffer, so masks
live in the model's ``state_dict``: they travel through checkpoints and reach the exporter. The
trainer calls :meth:`Pruner.apply` after every optimizer step, which keeps pruned weights exactly
zero; a zero weight quantizes to the integer 0, so it is zero in every exported artifact too.

Selection is global: the weights with the smallest magnitude over all prunable layers go first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeann.config import PruneConfig
from edgeann.models import EdgeModel


def attach_masks(model: EdgeModel) -> dict[str, nn.Module]:
    """Give every prunable layer a ``weight_mask`` buffer (all ones) if it has none."""
    layers = model.prunable()
    for m in layers.values():
        if not hasattr(m, "weight_mask"):
            m.register_buffer("weight_mask", torch.ones_like(m.weight, dtype=torch.bool))
    return layers


def layer_sparsity(model: EdgeModel) -> dict[str, float]:
    """Fraction of exactly-zero weights per prunable layer."""
    return {name: float((m.weight == 0).float().mean()) for name, m in model.prunable().items()}


def total_sparsity(model: EdgeModel) -> float:
    layers = model.prunable().values()
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return zeros / max(1, sum(m.weight.numel() for m in layers))


class Pruner:
    """Follows the flow's pruning schedule over ``epochs`` epochs of ``steps_per_epoch`` steps."""

    def __init__(self, model: EdgeModel, cfg: PruneConfig, epochs: int, steps_per_epoch: int):
        self.cfg = cfg
        self.layers = {n: m for n, m in attach_masks(model).items() if n not in cfg.exclude}
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.current = 0.0
        # lottery-ticket rewind point: the weights as initialised
        self.initial = {n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                        for n, m in self.layers.items()} if cfg.rewind == "lottery" else {}
        start = int(cfg.start * epochs)
        if cfg.method == "iterative":
            n_steps = math.ceil(cfg.target_sparsity / cfg.step - 1e-9)
            end = min(epochs - 1, max(start, int(cfg.end * epochs)))
            self.plan = [
                (start + round(k * (end - start) / max(n_steps - 1, 1)), min((k + 1) * cfg.step, cfg.target_sparsity))
                for k in range(n_steps)
            ]
            self.final_epoch = self.plan[-1][0] if self.plan else 0
        elif cfg.method == "polynomial":
            total = epochs * steps_per_epoch
            self.t0 = start * steps_per_epoch
            self.t1 = max(self.t0, min(total - 1, int(cfg.end * total)))
            self.final_epoch = self.t1 // steps_per_epoch
        else:
            self.final_epoch = 0

    @property
    def active(self) -> bool:
        return self.cfg.method != "none" and bool(self.layers)

    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step, and after loading weights)."""
        with torch.no_grad():
            for m in self.layers.values():
                m.weight.mul_(m.weight_mask)

    def prune_to(self, sparsity: float) -> None:
        """Set the masks so the ``sparsity`` fraction of smallest-magnitude weights is removed."""
        if not self.layers:
            return
        with torch.no_grad():
            mags = torch.cat([(m.weight * m.weight_mask).abs().flatten() for m in self.layers.values()])
            k = int(round(sparsity * mags.numel()))
            keep = torch.ones_like(mags, dtype=torch.bool)
            if k > 0:
                keep[torch.topk(mags, k, largest=False, sorted=False).indices] = False
            offset = 0
            for m in self.layers.values():
                n = m.weight.numel()
                m.weight_mask.copy_(keep[offset : offset + n].view_as(m.weight) & m.weight_mask)
                offset += n
        self.current = sparsity
        self.apply()

    def on_epoch_start(self, epoch: int) -> bool:
        """Iterative schedule; returns True when the weights were rewound (reset the optimizer)."""
        if not self.active or self.cfg.method != "iterative":
            return False
        due = [s for e, s in self.plan if e <= epoch]
        if not due or due[-1] <= self.current:
            return False
        self.prune_to(due[-1])
        if self.cfg.rewind == "lottery":
            with torch.no_grad():
                for n, m in self.layers.items():
                    w0, b0 = self.initial[n]
                    m.weight.copy_(w0 * m.weight_mask)
                    if b0 is not None:
                        m.bias.copy_(b0)
            return True
        return False

    def on_step(self, global_step: int) -> None:
        """Polynomial-decay schedule (Zhu & Gupta 2017), updated every ``update_every`` steps."""
        if not self.active or self.cfg.method != "polynomial" or global_step < self.t0:
            return
        t = global_step - self.t0
        if global_step < self.t1 and t % self.cfg.update_every:
            return
        progress = min(1.0, t / max(1, self.t1 - self.t0))
        target = self.cfg.target_sparsity * (1.0 - (1.0 - progress) ** 3)
        if target > self.current:
            self.prune_to(target)

    def state_dict(self) -> dict:
        return {"current": self.current, "initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        self.current = float(state["current"])
        self.initial = state["initial"]
