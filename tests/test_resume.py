"""Resuming a run: exact continuation after an interruption, and re-planned schedules when the epoch count changes."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil

import numpy as np
import pytest
import torch

import edgeann.train
from edgeann.config import load_flow
from edgeann.errors import EdgeannError
from edgeann.pipeline import train_run
from edgeann.quant import restore_stats_collection, stats_collection_state
from tests.conftest import TINY, write_flow

# 21 steps per epoch: the activation quantizers collect statistics for their first 100 steps (quant.py presets),
# until epoch 5; pruning steps to 0.25 at the start of epoch 2 and to 0.5 at the start of epoch 4
FLOW = copy.deepcopy(TINY)
FLOW["data"]["n_samples"] = 1100
FLOW["training"]["batch_size"] = 32
FLOW["pruning"]["start"] = 0.2


def few_steps(tree: dict) -> dict:
    """The flow with 6 steps per epoch, for tests of the schedules (not of the statistics phase)."""
    tree = copy.deepcopy(tree)
    tree["training"]["batch_size"] = 128
    return tree


class Interrupted(Exception):
    """Stands for a crash or Ctrl-C."""


def interrupt_after(monkeypatch, epoch: int) -> None:
    """Stop training right after ``last.pt`` of ``epoch`` (1-based) is written, as an interruption would."""
    save = edgeann.train.save_checkpoint

    def save_then_stop(path, state):
        save(path, state)
        if path.name == "last.pt" and state["epoch"] + 1 == epoch:
            raise Interrupted

    monkeypatch.setattr(edgeann.train, "save_checkpoint", save_then_stop)


def interrupted_run(monkeypatch, flow, run, epoch: int):
    interrupt_after(monkeypatch, epoch)
    with pytest.raises(Interrupted):
        train_run(flow, run, progress=False)
    monkeypatch.undo()
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "history.json").exists()
    # a new process: other global random states than those the interrupted one had
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    flow = load_flow(write_flow(root / "flow.yaml", FLOW))
    return flow, train_run(flow, root / "run", progress=False)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(uninterrupted, monkeypatch, tmp_path):
    flow, reference = uninterrupted
    run = tmp_path / "run"
    interrupted_run(monkeypatch, flow, run, 1)  # collecting statistics, nothing pruned yet
    interrupt_after(monkeypatch, 5)  # statistics collected and the scales learned since, pruning done
    with pytest.raises(Interrupted):
        train_run(flow, run, resume=True, progress=False)
    monkeypatch.undo()
    assert not (run / "history.json").exists()
    train_run(flow, run, resume=True, progress=False)

    assert sha256(run / "model.onnx") == sha256(reference / "model.onnx")
    with np.load(run / "graph.npz") as got, np.load(reference / "graph.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            assert np.array_equal(got[key], want[key]), key
    assert json.loads((run / "history.json").read_text()) == json.loads((reference / "history.json").read_text())
    metrics, reference_metrics = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert metrics["best_epoch"] == reference_metrics["best_epoch"] and metrics["test"] == reference_metrics["test"]
    assert metrics["resumes"] == [{"after_epoch": k, "epochs_planned": 6, "epochs": 6} for k in (1, 5)]


def test_more_epochs_on_resume_replan_the_learning_rate(tmp_path):
    tree = few_steps(FLOW)
    tree["training"]["epochs"] = 3
    run = tmp_path / "run"
    train_run(load_flow(write_flow(tmp_path / "flow.yaml", tree)), run, progress=False)
    train_run(load_flow(run / "flow.yaml", epochs=6), run, resume=True, progress=False)

    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    lr = [h["lr"] for h in history]  # the learning rate set for the next epoch, as the schedule steps
    assert lr[2] == 0.0  # the first run's cosine ended at its minimum
    assert lr[3] > 0.0 and all(a >= b for a, b in zip(lr[3:], lr[4:])) and lr[-1] == 0.0
    assert history[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] is not None and metrics["sparsity"]["total"] == pytest.approx(0.5, abs=0.01)
    assert metrics["resumes"][0]["after_epoch"] == 3 and metrics["resumes"][0]["epochs"] == 6
    assert metrics["resumes"][0]["replanned"] == {"target_sparsity_at_epoch": 2, "lr_next_epoch": pytest.approx(0.0025)}


def test_more_epochs_mid_pruning_replan_the_pruning_to_its_target(monkeypatch, tmp_path):
    flow = load_flow(write_flow(tmp_path / "flow.yaml", few_steps(FLOW)))
    run = tmp_path / "run"
    interrupted_run(monkeypatch, flow, run, 2)  # at 0.25 of 0.5, planned for 6 epochs
    train_run(load_flow(run / "flow.yaml", epochs=10), run, resume=True, progress=False)

    history = json.loads((run / "history.json").read_text())
    sparsity = [round(h["sparsity"], 2) for h in history]
    # the last step lands at the schedule's end for 10 epochs (pruning.end 0.5 -> the start of epoch 6)
    assert sparsity == [0.0, 0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumes"][0]["replanned"]["target_sparsity_at_epoch"] == 6
    assert metrics["best_epoch"] >= 6  # best.pt only at the target sparsity


def test_checkpoint_carries_the_activation_statistics_phase():
    from edgeann.config import Flow
    from edgeann.train import build_model

    flow = Flow.model_validate(FLOW)
    torch.manual_seed(0)
    model = build_model(flow, (16,), 5)
    x = torch.randn(64, 16)
    model.train()
    for _ in range(30):  # fewer than collect_stats_steps = 100
        model(x * (1 + torch.rand(1)))
    state = {"model": model.state_dict(), "quant_stats": stats_collection_state(model)}

    plain, exact = build_model(flow, (16,), 5), build_model(flow, (16,), 5)
    plain.load_state_dict(state["model"])
    exact.load_state_dict(state["model"])
    restore_stats_collection(exact, state["quant_stats"])
    counters = {name: s["counter"] for name, s in stats_collection_state(exact).items()}
    assert len(counters) == 4 and set(counters.values()) == {30}
    # Brevitas on its own ends the collection when a state_dict is loaded
    assert all(s["counter"] > 100 for s in stats_collection_state(plain).values())

    more = x * 3  # statistics change: only a quantizer still collecting follows them
    for m in (model, plain, exact):
        m.train()
    out, out_plain, out_exact = model(more), plain(more), exact(more)
    assert torch.equal(out_exact, out) and not torch.equal(out_plain, out)
    after = stats_collection_state(model)
    for name, s in stats_collection_state(exact).items():
        assert s["counter"] == after[name]["counter"] == 31
        assert torch.equal(s["buffer"], after[name]["buffer"])


def test_old_or_finished_checkpoints_are_refused_with_advice(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    flow = load_flow(run / "flow.yaml", epochs=8)

    torch.save({**state, "stopped_early": True}, last)
    with pytest.raises(EdgeannError, match="stopped early after epoch 6"):
        train_run(flow, run, resume=True, progress=False)
    torch.save({"format": 1, "model": state["model"], "optimizer": state["optimizer"], "epoch": state["epoch"]}, last)
    with pytest.raises(EdgeannError, match="older edgeann .checkpoint format 1. and cannot be resumed exactly") as e:
        train_run(flow, run, resume=True, progress=False)
    assert "\n" not in str(e.value)
    assert not (run / "checkpoints" / ".last.pt").exists() and last.is_file()


def test_random_states_survive_a_checkpoint(tmp_path):
    from edgeann.train import CHECKPOINT_FORMAT, load_checkpoint, rng_state, save_checkpoint, set_rng_state

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.standard_normal()  # a cached Gaussian is part of numpy's state
    save_checkpoint(tmp_path / "last.pt", {"format": CHECKPOINT_FORMAT, "model": {}, "rng": rng_state()})
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_learning_rate_plans_end_at_their_minimum_and_follow_a_new_end():
    from edgeann.config import TrainConfig
    from edgeann.train import LrSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = LrSchedule(TrainConfig(lr=0.01, schedule="cosine"), opt, total=6)
    lr = [cosine.lr(e) for e in range(7)]
    assert lr[0] == 0.01 and lr[6] == 0.0 and all(a > b for a, b in zip(lr, lr[1:]))
    cosine.total = 12  # resumed with 12 epochs in all
    assert cosine.lr(6) == pytest.approx(0.005) and cosine.lr(12) == 0.0
    rewound = LrSchedule(TrainConfig(lr=0.01, schedule="cosine"), opt, total=12, start=4)  # lottery rewind at epoch 4
    assert rewound.lr(4) == 0.01 and rewound.lr(12) == 0.0
    step = LrSchedule(TrainConfig(lr=0.01, schedule="step", step_epochs=2, gamma=0.5), opt, total=6)
    assert [step.lr(e) for e in range(6)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
