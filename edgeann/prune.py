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
    """Follows the flow's pruning schedule over ``epochs`` epochs of ``steps_per_epoch`` steps.

    The schedule is planned once for the run's epoch count; :meth:`plan_for` re-plans it when a resumed
    run gets another epoch count, and the plan travels in :meth:`state_dict`.
    """

    def __init__(self, model: EdgeModel, cfg: PruneConfig, epochs: int, steps_per_epoch: int):
        self.cfg = cfg
        self.layers = {n: m for n, m in attach_masks(model).items() if n not in cfg.exclude}
        self.steps_per_epoch = steps_per_epoch
        self.current, self.final_epoch = 0.0, 0
        # lottery-ticket rewind point: the weights as initialised
        self.initial = {n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                        for n, m in self.layers.items()} if cfg.rewind == "lottery" else {}
        self.plan_for(epochs)

    def plan_for(self, epochs: int, from_epoch: int = 0) -> None:
        """Plan the schedule for a run of ``epochs`` epochs in all, to be followed from ``from_epoch`` on.

        Before any weight is pruned (and before the schedule's start) this is the schedule of a fresh run.
        Once pruning is under way the sparsity reached is kept, and what is still to come is spread from
        ``from_epoch`` to the schedule's end for the new epoch count (``end`` x ``epochs``), where the
        target is reached.
        """
        cfg, steps = self.cfg, self.steps_per_epoch
        self.epochs = epochs
        start = int(cfg.start * epochs)
        end = max(from_epoch, min(epochs - 1, max(start, int(cfg.end * epochs))))
        under_way = self.current > 0 or from_epoch > start
        if under_way and self.current >= cfg.target_sparsity - 1e-9:
            self.plan = []  # at the target already: nothing left to plan
            self.final_epoch = min(self.final_epoch, from_epoch)
            return
        if cfg.method == "iterative":
            n_steps = math.ceil(cfg.target_sparsity / cfg.step - 1e-9)
            levels = [min((k + 1) * cfg.step, cfg.target_sparsity) for k in range(n_steps)]
            if not under_way:
                epochs_at = [start + round(k * (end - start) / max(n_steps - 1, 1)) for k in range(n_steps)]
            else:
                levels = [s for s in levels if s > self.current + 1e-9]
                # a step was just taken before from_epoch: leave one interval of fine-tuning before the next
                first = from_epoch + ((end - from_epoch) / max(len(levels), 1) if self.current > 0 else 0)
                epochs_at = [round(first + k * (end - first) / max(len(levels) - 1, 1)) for k in range(len(levels))]
            self.plan = list(zip(epochs_at, levels))
            self.final_epoch = self.plan[-1][0]
        elif cfg.method == "polynomial":
            # s(t) = s0 + (target - s0) (1 - (1 - (t - t0) / (t1 - t0))^3) between the steps t0 and t1
            total = epochs * steps
            t1 = min(total - 1, int(cfg.end * total))
            if not under_way:
                self.t0, self.s0 = start * steps, 0.0
            else:
                self.t0, self.s0 = from_epoch * steps, self.current
            self.t1 = max(self.t0, t1)
            self.final_epoch = self.t1 // steps
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
        target = self.s0 + (self.cfg.target_sparsity - self.s0) * (1.0 - (1.0 - progress) ** 3)
        if target > self.current:
            self.prune_to(target)

    def state_dict(self) -> dict:
        plan = {"plan": self.plan} if self.cfg.method == "iterative" else {
            "segment": (self.t0, self.s0, self.t1)} if self.cfg.method == "polynomial" else {}
        return {"current": self.current, "initial": self.initial, "epochs": self.epochs, "final_epoch": self.final_epoch,
                **plan}

    def load_state_dict(self, state: dict) -> None:
        self.current = float(state["current"])
        self.initial = state["initial"]
        self.epochs, self.final_epoch = int(state["epochs"]), int(state["final_epoch"])
        if self.cfg.method == "iterative":
            self.plan = [(int(e), float(s)) for e, s in state["plan"]]
        elif self.cfg.method == "polynomial":
            self.t0, self.s0, self.t1 = state["segment"]
