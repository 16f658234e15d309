"""QAT training throughput of the jet models against the same float PyTorch models, in one run.

    python benchmarks/bench_train.py [--model mlp|cnn|gru|all] [--batch-size N] [--device auto] [--rounds 5] [--no-compile]

Each model is the one of flows/jet_<model>.yaml (its quantization, pruning to 50%, its batch size unless
--batch-size), on random data of the flow's sample shape. Float and QAT steps (forward, backward, Adam,
pruning masks) are measured in alternating rounds (this machine is shared and noisy) after warm-up rounds
past Brevitas' statistics-collection steps; the median of each is reported. The figure of merit is the
ratio QAT step time / float step time (goals: at most 2 for the MLP, 3 for the CNN and the GRU).
Unless --no-compile, both models are also run through torch.compile (compiled after the warm-up, once the
quantizers' statistics are collected, as edgeann's training does: the collection step counter would otherwise
recompile the graph at every step). Three ratios are printed: eager QAT / eager float and compiled QAT /
compiled float (like for like), compiled QAT / eager float; and QAT as edgeann trains a long run (training.compile
auto compiles runs of COMPILE_MIN_STEPS steps or more of the COMPILE_FAMILIES in edgeann/train.py) / eager float.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's edgeann, not an installed one
import torch
import torch.nn.functional as F

from edgeann.config import PruneConfig, load_flow
from edgeann.models import create_model
from edgeann.prune import Pruner, attach_masks
from edgeann.train import COMPILE_FAMILIES, select_device

warnings.filterwarnings("ignore")

FLOWS = Path(__file__).resolve().parents[1] / "flows"
SAMPLE_SHAPES = {"mlp": (16,), "cnn": (16, 16, 1), "gru": (20, 5)}  # the jets data's representations
GOALS = {"mlp": 2.0, "cnn": 3.0, "gru": 3.0}
N_CLASSES = 5


def bench(family: str, args, device: torch.device) -> float:
    flow = load_flow(FLOWS / f"jet_{family}.yaml")
    batch = args.batch_size or flow.training.batch_size
    shape = SAMPLE_SHAPES[family]
    torch.manual_seed(0)
    n = batch * args.steps
    x = torch.randn(n, *shape, device=device)
    y = torch.randint(0, N_CLASSES, (n,), device=device)

    models = {}
    for name, quant in (("float", None), ("qat", flow.quantization)):
        m = create_model(flow.model, shape, N_CLASSES, quant).to(device)
        attach_masks(m)
        pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.5), epochs=10, steps_per_epoch=args.steps)
        pruner.prune_to(0.5)  # the trainer's mask application is part of every step
        models[name] = (m.train(), torch.optim.Adam(m.parameters(), 1e-3), pruner)

    def round_(name: str) -> float:
        m, opt, pruner = models[name]
        m = compiled.get(name, m)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(args.steps):
            xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            pruner.apply()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    compiled: dict[str, torch.nn.Module] = {}
    warmup = -(-110 // args.steps)  # past the quantizers' statistics-collection steps (100)
    for name in list(models):
        for _ in range(warmup):
            round_(name)
    if args.compile:
        for name in list(models):
            models[f"{name}+compile"] = models[name]
            compiled[f"{name}+compile"] = torch.compile(models[name][0])
            t0 = time.perf_counter()
            try:
                round_(f"{name}+compile")
            except Exception as e:  # inductor bugs on some graphs: report them, measure the rest
                print(f"{family} {name}: torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0]}")
                del models[f"{name}+compile"]
                continue
            print(f"{family} {name}: torch.compile + first round {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            times[name].append(round_(name))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["qat"] / med["float"]
    for name in models:
        print(f"{family} {name:>13}: {batch / med[name]:>10.0f} samples/s  ({med[name] * 1e3:.2f} ms/step)")
    goal = f"(goal <= {GOALS[family]:g})"
    print(f"{family}: device {device}, batch {batch}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{family}: eager QAT / eager float       = {ratio:.2f} {goal}")
    if "qat+compile" in med and "float+compile" in med:
        print(f"{family}: compiled QAT / compiled float = {med['qat+compile'] / med['float+compile']:.2f} {goal}")
    if "qat+compile" in med:
        print(f"{family}: compiled QAT / eager float    = {med['qat+compile'] / med['float']:.2f} {goal}")
    compiled = "qat+compile" in med and family in COMPILE_FAMILIES
    ratio = med["qat+compile" if compiled else "qat"] / med["float"]
    print(f"{family}: QAT as edgeann trains a long run ({'compiled' if compiled else 'eager'}) / eager float = {ratio:.2f} {goal}")
    return ratio


def main() -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=[*SAMPLE_SHAPES, "all"], default="mlp")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the flow's training.batch_size")
    ap.add_argument("--steps", type=int, default=50, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure both models under torch.compile (default; --no-compile: eager only)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    families = list(SAMPLE_SHAPES) if args.model == "all" else [args.model]
    ratios = {family: bench(family, args, device) for family in families}
    print("QAT (as edgeann trains a long run) / eager float: " + ", ".join(f"{f} {r:.2f}" for f, r in ratios.items()))
    return ratios


if __name__ == "__main__":
    main()
