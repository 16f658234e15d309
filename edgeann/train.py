"""Quantization-aware training with pruning: the ``train`` stage.

Small tabular data is moved to the device once and batched by index (no per-sample loader).
Every epoch writes ``checkpoints/last.pt`` atomically; ``best.pt`` is the epoch with the lowest
validation loss among those at the target sparsity, so the best model is always fully pruned.

``last.pt`` holds everything the rest of the run depends on (weights, masks, the activation
quantizers' statistics phase, optimizer, learning-rate and pruning plans, random-number states,
early-stopping and best-model bookkeeping; the data order is a function of the seed and the epoch),
so a resumed run continues exactly as if it had not stopped. Resuming with another epoch count
re-plans the learning rate and the pruning for the new count from the resumed epoch on.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from edgeann.config import Flow, TrainConfig
from edgeann.data import Dataset, Splits
from edgeann.errors import EdgeannError
from edgeann.models import EdgeModel, create_model
from edgeann.prune import Pruner, layer_sparsity, total_sparsity
from edgeann.quant import collecting_stats, restore_stats_collection, stats_collection_state

# training.compile: auto compiles runs of at least this many steps. Compiling the quantized jet MLP's training
# step took 12-22 s on this project's 2-core machine and saved ~3 ms per step (bench_train.py, one thread):
# it pays off after ~5,000 steps. The decision is a function of the flow, never of a timing, so a resumed run
# takes the same path as an uninterrupted one.
COMPILE_MIN_STEPS = 10000
# Model families auto compiles: the jet CNN's quantized graph fails in inductor (IndexError; eager fallback) and the
# GRU's breaks the graph at every time step (a scale read as a Python float), compiling for ~75 s into a slower step.
COMPILE_FAMILIES = ("mlp",)
DEVICE_DATA_FRACTION = 0.5  # of the free GPU memory: larger training inputs stay on the host, pinned
CHECKPOINT_FORMAT = 2  # 2: exact resume (quantizer statistics, schedules, random states); 1 held weights and optimizer


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EdgeannError(f"device {name} requested but CUDA is not available (torch {torch.__version__}); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise EdgeannError(f"device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(name)


class DeviceData:
    """A split held as tensors on the device, batched by shuffled index: no copy from the host per batch.

    Inputs that would take more than ``DEVICE_DATA_FRACTION`` of the free GPU memory stay on the host in
    pinned memory instead; each batch is then gathered there and copied asynchronously (labels always move).
    """

    def __init__(self, ds: Dataset, device: torch.device):
        x = torch.as_tensor(ds.x)
        self.device = device
        self.on_host = device.type == "cuda" and x.numel() * x.element_size() > DEVICE_DATA_FRACTION * torch.cuda.mem_get_info(device)[0]
        self.x = x.pin_memory() if self.on_host else x.to(device)
        self.y = torch.as_tensor(ds.y, device=device)

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, size: int, seed: int | None = None):
        n = len(self.y)
        order = None if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        host_order = order
        if order is not None:
            order = order.to(self.device)  # once per epoch
        for i in range(0, n, size):
            idx = slice(i, i + size) if order is None else order[i : i + size]
            if not self.on_host:
                yield self.x[idx], self.y[idx]
            elif order is None:  # a slice of pinned memory is pinned
                yield self.x[idx].to(self.device, non_blocking=True), self.y[idx]
            else:
                yield self.x[host_order[i : i + size]].pin_memory().to(self.device, non_blocking=True), self.y[idx]


class CompiledStep:
    """The training forward: through ``torch.compile`` once the activation quantizers' statistics are collected
    (their step counter would recompile the graph at every step), eager otherwise.

    Only full batches go through the compiled graph (a last, partial batch would compile a second one) and only
    in training mode (evaluation and export stay eager). If compilation fails, one warning and eager from then on.
    Forward values of the compiled graph equal the eager fast path bit for bit; gradients can differ in the last
    bits (inductor sums in another order), so a compiled run is reproducible, not identical to an eager one.
    """

    def __init__(self, model: EdgeModel, batch_size: int, enabled: bool):
        self.model, self.batch_size, self.enabled = model, batch_size, enabled
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or len(x) != self.batch_size or collecting_stats(self.model):
            return self.model(x)
        if self.compiled is None:
            self.compiled = torch.compile(self.model)
        try:
            return self.compiled(x)
        except Exception as e:  # inductor / C++ toolchain problems: train on, eagerly
            warnings.warn(f"torch.compile failed, training eagerly: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          stacklevel=2)
            self.enabled = False
            return self.model(x)


def use_compile(cfg: TrainConfig, device: torch.device, total_steps: int, family: str = "mlp") -> bool:
    """training.compile: true, false, or auto (long runs of a family in COMPILE_FAMILIES, with a compiler;
    EDGEANN_COMPILE=0/1 overrides)."""
    env = os.environ.get("EDGEANN_COMPILE")
    setting = cfg.compile if env is None else env not in ("0", "false", "")
    if setting is False:
        return False
    if setting is True:
        return True
    if sys.platform == "win32" or total_steps < COMPILE_MIN_STEPS or family not in COMPILE_FAMILIES:
        return False
    if device.type == "cpu":
        return any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    try:
        from torch.utils._triton import has_triton
        return has_triton()
    except ImportError:
        return False


def weight_penalty(model: EdgeModel, cfg: TrainConfig) -> torch.Tensor | float:
    if not (cfg.l1 or cfg.l2):
        return 0.0
    total = 0.0
    for m in model.prunable().values():
        if cfg.l1:
            total = total + cfg.l1 * m.weight.abs().sum()
        if cfg.l2:
            total = total + cfg.l2 * m.weight.pow(2).sum()
    return total


@torch.no_grad()
def predict_logits(model: EdgeModel, data: DeviceData, batch: int = 8192) -> torch.Tensor:
    model.eval()
    return torch.cat([model(xb) for xb, _ in data.batches(batch)])


@torch.no_grad()
def evaluate(model: EdgeModel, data: DeviceData) -> tuple[float, float]:
    logits = predict_logits(model, data)
    return float(F.cross_entropy(logits, data.y)), float((logits.argmax(1) == data.y).float().mean())


def make_optimizer(model: EdgeModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


class LrSchedule:
    """The learning rate of every epoch, planned from epoch ``start`` (0, or a lottery rewind) to ``total``.

    ``cosine`` (down to 0 at ``total``), ``step`` and ``constant`` are closed forms of the epoch, so a new plan
    (more epochs on resume, a rewind) only moves an end; ``plateau`` follows the validation loss.
    """

    def __init__(self, cfg: TrainConfig, opt: torch.optim.Optimizer, total: int, start: int = 0):
        self.cfg, self.total, self.start = cfg, total, start
        self.plateau = None
        if cfg.schedule == "plateau":
            patience = max(1, (cfg.early_stopping.patience if cfg.early_stopping else 10) // 2)
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.gamma, patience=patience)

    def lr(self, epoch: int) -> float:
        """The planned learning rate of ``epoch`` (0-based; ``total`` is the end of the plan)."""
        cfg, t = self.cfg, epoch - self.start
        if cfg.schedule == "cosine":
            span = max(1, self.total - self.start)
            return cfg.lr * (1.0 + math.cos(math.pi * min(t, span) / span)) / 2.0
        if cfg.schedule == "step":
            return cfg.lr * cfg.gamma ** (t // cfg.step_epochs)
        return cfg.lr

    def begin_epoch(self, opt: torch.optim.Optimizer, epoch: int) -> None:
        if self.plateau is None:
            _set_lr(opt, self.lr(epoch))

    def end_epoch(self, opt: torch.optim.Optimizer, epoch: int, val_loss: float) -> None:
        """Set the next epoch's learning rate."""
        if self.plateau is not None:
            self.plateau.step(val_loss)
        else:
            _set_lr(opt, self.lr(epoch + 1))

    def state_dict(self) -> dict:
        return {"start": self.start, "total": self.total,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.start, self.total = int(state["start"]), int(state["total"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def rng_state() -> dict:
    """The global random-number states (torch, CUDA, numpy, Python), in types a weights-only load accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda_used = torch.cuda.is_available() and torch.cuda.is_initialized()  # a CPU run does not start CUDA for this
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda_used else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash leaves the previous checkpoint intact."""
    from edgeann.files import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:  # the user's umask, not mkstemp's 0600: runs are shared on clusters
        torch.save(state, fh)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    if not path.is_file():
        raise EdgeannError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise EdgeannError(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") not in range(1, CHECKPOINT_FORMAT + 1) or "model" not in state:
        raise EdgeannError(f"checkpoint {path} is not an edgeann checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def load_resumable(path: Path, device: torch.device | str = "cpu") -> dict:
    """A ``last.pt`` that holds the whole training state."""
    state = load_checkpoint(path, device)
    if state["format"] != CHECKPOINT_FORMAT:
        raise EdgeannError(
            f"checkpoint {path} was written by an older edgeann (checkpoint format {state['format']}) and cannot be resumed "
            f"exactly (it lacks the quantizer statistics, schedules and random states); train the flow again without "
            f"--resume into a new --out directory (or with --force to replace {path.parent.parent})")
    return state


def build_model(flow: Flow, sample_shape: tuple[int, ...], n_classes: int) -> EdgeModel:
    """The flow's model (quantized unless ``quantization.enabled`` is false), with pruning masks attached."""
    from edgeann.prune import attach_masks

    quant = flow.quantization if flow.quantization.enabled else None
    model = create_model(flow.model, sample_shape, n_classes, quant)
    attach_masks(model)
    return model


def restore(model: EdgeModel, state: dict, path: Path) -> None:
    """Load the weights; with ``quant_stats`` in ``state`` (``last.pt``) also the quantizers' statistics phase, so
    training continues exactly, without it (``best.pt``) the scales are frozen as the model is used."""
    try:
        model.load_state_dict(state["model"])
        if "quant_stats" in state:
            restore_stats_collection(model, state["quant_stats"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise EdgeannError(f"checkpoint {path} does not fit this flow's model ({str(e).splitlines()[0][:160]})") from None


@dataclass
class TrainResult:
    model: EdgeModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    resumes: list[dict] = field(default_factory=list)  # one record per resume: where, and what was re-planned


def train(flow: Flow, splits: Splits, run_dir: Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``flow``'s model on ``splits``; checkpoints go to ``run_dir/checkpoints``."""
    cfg = flow.training
    device = select_device(cfg.device)
    torch.manual_seed(flow.seed)
    model = build_model(flow, splits.sample_shape, len(splits.classes)).to(device)
    train_data, val_data = DeviceData(splits.train, device), DeviceData(splits.val, device)
    steps = -(-len(train_data) // cfg.batch_size)
    pruner = Pruner(model, flow.pruning, cfg.epochs, steps)
    opt = make_optimizer(model, cfg)
    schedule = LrSchedule(cfg, opt, cfg.epochs)
    forward = CompiledStep(model, cfg.batch_size, use_compile(cfg, device, cfg.epochs * steps, flow.model.family))
    ckpt_dir = run_dir / "checkpoints"
    history: list[dict] = []
    resumes: list[dict] = []
    best_loss, best_epoch, bad_epochs, start = float("inf"), None, 0, 0

    if resume:
        path = ckpt_dir / "last.pt"
        state = load_resumable(path, device)
        restore(model, state, path)
        try:
            opt.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
        except (ValueError, KeyError) as e:
            raise EdgeannError(f"checkpoint {path}: optimizer state does not fit ({e})") from None
        pruner.load_state_dict(state["pruner"])
        history, resumes = list(state["history"]), list(state["resumes"])
        best_loss, best_epoch, bad_epochs = state["best_loss"], state["best_epoch"], state["bad_epochs"]
        start = state["epoch"] + 1
        if state["stopped_early"]:
            raise EdgeannError(f"{run_dir} stopped early after epoch {start} (no validation-loss improvement for "
                               f"{bad_epochs} epochs): training is finished; to train longer, start a new run")
        if start >= cfg.epochs:
            raise EdgeannError(f"{run_dir} already trained {start} epochs; raise --epochs to continue")
        resumed = {"after_epoch": start, "epochs_planned": state["epochs"], "epochs": cfg.epochs}
        if cfg.epochs != state["epochs"]:  # re-plan what is left for the new epoch count
            pruner.plan_for(cfg.epochs, from_epoch=start)
            schedule.total = cfg.epochs
            resumed["replanned"] = {"target_sparsity_at_epoch": pruner.final_epoch + 1, "lr_next_epoch": schedule.lr(start)
                                    if schedule.plateau is None else opt.param_groups[0]["lr"]}
        resumes.append(resumed)
        set_rng_state(state["rng"])

    bar = tqdm(total=(cfg.epochs - start) * steps, disable=not progress, unit="step", dynamic_ncols=True,
               desc="train", mininterval=0.5)
    stopped_early = False
    for epoch in range(start, cfg.epochs):
        if pruner.on_epoch_start(epoch):  # lottery rewind: start the optimizer and the schedule afresh
            opt = make_optimizer(model, cfg)
            schedule = LrSchedule(cfg, opt, cfg.epochs, start=epoch)
        schedule.begin_epoch(opt, epoch)
        model.train()
        seen = 0
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, (xb, yb) in enumerate(train_data.batches(cfg.batch_size, seed=flow.seed * 100003 + epoch)):
            logits = forward(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            (loss + weight_penalty(model, cfg)).backward()
            opt.step()
            pruner.apply()
            pruner.on_step(epoch * steps + step + 1)
            seen += len(yb)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            bar.update()
            if progress and (step % 10 == 0 or step == steps - 1):
                bar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs} loss {float(loss_sum) / seen:.4f} "
                                    f"acc {int(correct) / seen:.3f}", refresh=False)
        loss_sum, correct = float(loss_sum), int(correct)
        val_loss, val_acc = evaluate(model, val_data)
        schedule.end_epoch(opt, epoch, val_loss)
        sparsity = total_sparsity(model)
        record = {
            "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"], "sparsity": sparsity,
        }
        history.append(record)
        at_target = epoch >= pruner.final_epoch
        if at_target and val_loss < best_loss - (cfg.early_stopping.min_delta if cfg.early_stopping else 0.0):
            best_loss, best_epoch, bad_epochs = val_loss, epoch + 1, 0
            save_checkpoint(ckpt_dir / "best.pt", {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "epoch": epoch})
        elif at_target:
            bad_epochs += 1
        stopped_early = bool(cfg.early_stopping and at_target and bad_epochs >= cfg.early_stopping.patience)
        save_checkpoint(ckpt_dir / "last.pt", {
            "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "quant_stats": stats_collection_state(model),
            "optimizer": opt.state_dict(), "schedule": schedule.state_dict(), "pruner": pruner.state_dict(),
            "rng": rng_state(), "epoch": epoch, "epochs": cfg.epochs, "history": history, "best_loss": best_loss,
            "best_epoch": best_epoch, "bad_epochs": bad_epochs, "stopped_early": stopped_early, "resumes": resumes,
        })
        if progress:
            bar.write(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.3f}  "
                f"val_loss {val_loss:.4f}  val_acc {val_acc:.3f}  sparsity {sparsity:.2f}"
                + ("  *best*" if best_epoch == epoch + 1 else "")
            )
        if stopped_early:
            break
    bar.close()
    if best_epoch is not None:
        restore(model, load_checkpoint(ckpt_dir / "best.pt", device), ckpt_dir / "best.pt")
    return TrainResult(model.eval(), history, best_epoch, stopped_early, resumes)


def per_layer_sparsity(model: EdgeModel) -> dict[str, float]:
    return layer_sparsity(model)


def logits_numpy(model: EdgeModel, ds: Dataset, device: torch.device | None = None) -> np.ndarray:
    device = device or next(model.parameters()).device
    return predict_logits(model, DeviceData(ds, device)).double().cpu().numpy()
