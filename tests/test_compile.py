"""training.compile: the compiled training forward against the eager fast path (forward values torch.equal;
gradients may differ in the last bits, and how many is measured), when auto compiles, and the fallback."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from edgeann import train as train_mod
from edgeann.config import MLPConfig, QuantConfig, TrainConfig
from edgeann.models import create_model
from edgeann.train import COMPILE_MIN_STEPS, CompiledStep, use_compile
from tests.test_fused_quant import COLLECT, _nasty, _same


def _mlp():
    torch.manual_seed(0)
    m = create_model(MLPConfig(family="mlp", hidden=[16, 8]), (6,), 3, QuantConfig()).train()
    for q in m.modules():
        if hasattr(q, "collect_stats_steps"):
            q.collect_stats_steps = COLLECT
    return m


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++")), reason="inductor needs a C++ compiler")
def test_compiled_forward_equals_eager():
    model = _mlp()
    step = CompiledStep(model, 32, enabled=True)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    differ = total = 0
    for i in range(COLLECT + 4):
        x, y = _nasty((32, 6), i, huge=False), torch.randint(0, 3, (32,))
        outs, grads = [], []
        for fwd in (model, step) if i > COLLECT else (step,):  # a collection step changes the statistics
            for p in model.parameters():
                p.grad = None
            out = fwd(x)
            F.cross_entropy(out, y).backward()
            outs.append(out.detach())
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        assert (step.compiled is None) == (i <= COLLECT)  # eager while the statistics are collected
        if i > COLLECT:
            assert _same(*outs), f"step {i}: compiled forward differs"
            for a, b in zip(*grads):
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
                differ, total = differ + int((a != b).sum()), total + a.numel()
        opt.step()
    print(f"gradient elements differing from eager: {differ} / {total}")


def test_auto_compiles_long_runs_only(monkeypatch):
    monkeypatch.delenv("EDGEANN_COMPILE", raising=False)
    cpu = torch.device("cpu")
    has_cxx = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    assert not use_compile(TrainConfig(), cpu, COMPILE_MIN_STEPS - 1)
    assert use_compile(TrainConfig(), cpu, COMPILE_MIN_STEPS) == has_cxx
    assert not use_compile(TrainConfig(), cpu, 10**9, "gru")
    assert not use_compile(TrainConfig(compile=False), cpu, 10**9)
    assert use_compile(TrainConfig(compile=True), cpu, 1)
    monkeypatch.setenv("EDGEANN_COMPILE", "0")
    assert not use_compile(TrainConfig(compile=True), cpu, 10**9)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(model):
        def call(x):
            raise RuntimeError("no compiler")
        return call

    monkeypatch.setattr(train_mod.torch, "compile", broken)
    model = _mlp()
    for _ in range(COLLECT + 1):
        model(torch.randn(8, 6))
    step = CompiledStep(model, 8, enabled=True)
    x = torch.randn(8, 6)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        out = step(x)
    assert not step.enabled and torch.equal(out, model(x))


def test_pinned_host_batches_equal_device_batches(monkeypatch):
    """The path for inputs too large for the GPU gives the same batches (checked on the CPU: pinning is a no-op)."""
    from edgeann.data import Dataset
    from edgeann.train import DeviceData

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    ds = Dataset(x=torch.randn(37, 4).numpy(), y=torch.randint(0, 3, (37,)).numpy(), classes=["a", "b", "c"])
    held, host = DeviceData(ds, torch.device("cpu")), DeviceData(ds, torch.device("cpu"))
    host.on_host = True
    for seed in (None, 7):
        for (xa, ya), (xb, yb) in zip(held.batches(8, seed), host.batches(8, seed), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
