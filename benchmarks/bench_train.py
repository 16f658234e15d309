"""QAT training throughput of the jet MLP against the same float PyTorch model, in one run.

    python benchmarks/bench_train.py [--batch-size 1024] [--device auto] [--rounds 5]

Float and QAT steps are measured in alternating rounds (this machine is shared and noisy) and
the median of each is reported; the figure of merit is the ratio QAT step time / float step
time (goal: at most 2).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from edgeann.config import MLPConfig, QuantConfig
from edgeann.models import create_model
from edgeann.prune import Pruner, attach_masks
from edgeann.config import PruneConfig
from edgeann.train import select_device

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = select_device(args.device)
    torch.manual_seed(0)
    n = args.batch_size * args.steps
    x = torch.randn(n, 16, device=device)
    y = torch.randint(0, 5, (n,), device=device)

    models = {}
    for name, quant in (("float", None), ("qat", QuantConfig())):
        m = create_model(MLPConfig(family="mlp", hidden=[64, 32, 32]), (16,), 5, quant).to(device)
        attach_masks(m)
        pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.5), epochs=10, steps_per_epoch=args.steps)
        pruner.prune_to(0.5)  # the trainer's mask application is part of every step
        models[name] = (m.train(), torch.optim.Adam(m.parameters(), 1e-3), pruner)

    def round_(name: str) -> float:
        m, opt, pruner = models[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(args.steps):
            xb, yb = x[i * args.batch_size : (i + 1) * args.batch_size], y[i * args.batch_size : (i + 1) * args.batch_size]
            loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            pruner.apply()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    for name in models:  # warm-up, and past Brevitas' statistics-collection steps
        for _ in range(3):
            round_(name)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            times[name].append(round_(name))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name in models:
        print(f"{name:>5}: {args.batch_size / med[name]:>10.0f} samples/s  ({med[name] * 1e3:.2f} ms/step)")
    print(f"device {device}, batch {args.batch_size}, torch {torch.__version__}: "
          f"QAT step / float step = {med['qat'] / med['float']:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
