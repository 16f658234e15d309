import numpy as np
import pytest
import torch

from edgeann.config import MLPConfig, PruneConfig, QuantConfig
from edgeann.models import create_model
from edgeann.prune import Pruner, attach_masks, layer_sparsity, total_sparsity


def model():
    torch.manual_seed(0)
    return create_model(MLPConfig(family="mlp", hidden=[32, 16]), (16,), 5, QuantConfig())


def train_steps(m, pruner, n=20):
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    x, y = torch.randn(256, 16), torch.randint(0, 5, (256,))
    for _ in range(n):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.apply()


def test_global_magnitude_pruning_removes_the_smallest_weights():
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.6), epochs=10, steps_per_epoch=1)
    all_w = torch.cat([l.weight.detach().abs().flatten() for l in m.prunable().values()])
    pruner.prune_to(0.6)
    assert total_sparsity(m) == pytest.approx(0.6, abs=1 / all_w.numel())
    kept = torch.cat([l.weight.detach().abs().flatten()[l.weight_mask.flatten()] for l in m.prunable().values()])
    removed = all_w[torch.cat([~l.weight_mask.flatten() for l in m.prunable().values()])]
    assert kept.min() >= removed.max()


def test_pruned_weights_stay_exactly_zero_through_training_and_quantization():
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.5), epochs=10, steps_per_epoch=1)
    pruner.prune_to(0.5)
    train_steps(m, pruner)
    for layer in m.prunable().values():
        assert torch.all(layer.weight[~layer.weight_mask] == 0)
        assert torch.all(layer.quant_weight().int()[~layer.weight_mask] == 0)


def test_iterative_schedule_steps_of_ten_percent_reach_the_target():
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.7, step=0.1, start=0.1, end=0.7),
                    epochs=30, steps_per_epoch=5)
    assert [s for _, s in pruner.plan] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    epochs = [e for e, _ in pruner.plan]
    assert epochs == sorted(epochs) and epochs[0] == 3 and pruner.final_epoch == epochs[-1] <= 21
    seen = []
    for epoch in range(30):
        pruner.on_epoch_start(epoch)
        seen.append(round(total_sparsity(m), 2))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.7, abs=0.01)


def test_short_runs_still_reach_the_target():
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.5, step=0.1), epochs=3, steps_per_epoch=2)
    for epoch in range(3):
        pruner.on_epoch_start(epoch)
    assert total_sparsity(m) == pytest.approx(0.5, abs=0.01)
    assert pruner.final_epoch <= 2


def test_polynomial_schedule_is_monotone_and_ends_at_target():
    m = model()
    epochs, steps = 10, 10
    pruner = Pruner(m, PruneConfig(method="polynomial", target_sparsity=0.8, start=0.2, end=0.8, update_every=3),
                    epochs=epochs, steps_per_epoch=steps)
    values = []
    for t in range(1, epochs * steps + 1):
        pruner.on_step(t)
        values.append(total_sparsity(m))
    assert values[19] == 0.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.8, abs=0.01)
    assert pruner.final_epoch == pruner.t1 // steps


def test_lottery_rewind_restores_initial_weights_under_the_mask():
    m = model()
    initial = {n: l.weight.detach().clone() for n, l in m.prunable().items()}
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.3, step=0.3, rewind="lottery", start=0.0),
                    epochs=4, steps_per_epoch=1)
    train_steps(m, pruner)
    assert pruner.on_epoch_start(0) is True
    for n, l in m.prunable().items():
        assert torch.equal(l.weight, initial[n] * l.weight_mask)


def test_masks_travel_in_the_state_dict():
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.4), epochs=10, steps_per_epoch=1)
    pruner.prune_to(0.4)
    train_steps(m, pruner, n=3)  # Brevitas creates its learned activation scales on the first steps
    state = m.state_dict()
    assert all(f"layers.{n}.weight_mask" in state for n in m.prunable())
    fresh = model()
    attach_masks(fresh)
    fresh.load_state_dict(state)
    assert layer_sparsity(fresh) == layer_sparsity(m)
    assert np.isclose(total_sparsity(fresh), 0.4, atol=0.01)


def test_more_epochs_on_resume_spread_the_remaining_steps_to_the_new_end():
    # flows/jet_mlp.yaml's schedule planned for 20 epochs, resumed after epoch 8 with 40 epochs in all
    m = model()
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.5, step=0.1, start=0.1, end=0.6),
                    epochs=20, steps_per_epoch=1)
    seen = []
    for epoch in range(8):
        pruner.on_epoch_start(epoch)
        seen.append(round(total_sparsity(m), 2))
    assert seen[-1] == pytest.approx(0.3)
    pruner.plan_for(40, from_epoch=8)
    assert pruner.plan == [(16, pytest.approx(0.4)), (24, pytest.approx(0.5))] and pruner.final_epoch == 24 == int(0.6 * 40)
    for epoch in range(8, 40):
        pruner.on_epoch_start(epoch)
        seen.append(round(total_sparsity(m), 2))
    assert seen == sorted(seen) and seen[15] == 0.3 and seen[16] == 0.4 and seen[23] == 0.4 and seen[24] == 0.5


def test_replanning_before_pruning_started_is_the_fresh_plan():
    cfg = PruneConfig(method="iterative", target_sparsity=0.5, step=0.1, start=0.1, end=0.6)
    pruner = Pruner(model(), cfg, epochs=10, steps_per_epoch=1)
    pruner.plan_for(40, from_epoch=1)
    assert pruner.plan == Pruner(model(), cfg, epochs=40, steps_per_epoch=1).plan


def test_polynomial_replan_continues_from_the_sparsity_reached():
    m = model()
    steps = 10
    pruner = Pruner(m, PruneConfig(method="polynomial", target_sparsity=0.8, start=0.2, end=0.8, update_every=3),
                    epochs=10, steps_per_epoch=steps)
    values = []
    for t in range(1, 41):
        pruner.on_step(t)
        values.append(total_sparsity(m))
    pruner.plan_for(20, from_epoch=4)
    assert pruner.t0 == 40 and pruner.t1 == int(0.8 * 200) and pruner.final_epoch == 16
    for t in range(41, 201):
        pruner.on_step(t)
        values.append(total_sparsity(m))
    assert 0 < values[39] < 0.8 and all(b >= a for a, b in zip(values, values[1:]))
    # the 10-epoch plan reached the target at step 80; the new one reaches it at step 160
    assert values[99] < 0.78 and values[159] == pytest.approx(0.8, abs=0.01)
