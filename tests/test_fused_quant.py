"""The fused quantizers (edgeann.fused) against Brevitas' own: forward values and gradients torch.equal."""

import brevitas.nn as qnn
import pytest
import torch
import torch.nn.functional as F
from brevitas.core.quant import PrescaledRestrictIntQuant, RescalingIntQuant
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling, StatsFromParameterScaling

from edgeann import fused, quant
from edgeann.config import MLPConfig, QuantConfig
from edgeann.models import create_model

COLLECT = 3  # statistics-collection steps, short so both phases are tested


def _nasty(shape, seed, scale=3.0, huge=True):
    """Random values with exact grid points and ties (multiples of 1/16 and 1/32), values far beyond any range,
    negative and positive zero, and (``huge``) ones near float32's limits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    flat = x.view(-1)
    special = torch.tensor([-0.0, 0.0, 1e-40, -1e-40, 1e4, -1e4] + ([1e30, -1e30, 3e38, -3e38] if huge else []))
    flat[: len(special)] = special
    ties = torch.arange(-64, 64, dtype=torch.float32) / 32  # on the grid and half-way between grid points
    n = min(len(ties), flat.numel() - len(special))
    flat[len(special) : len(special) + n] = ties[:n]
    return x


def _backward(y: torch.Tensor, seed: int):
    """A loss whose gradient differs per element (and is exactly zero for some)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(y.shape, generator=g)
    w.view(-1)[::7] = 0.0
    (y * w).sum().backward()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal, with NaN equal to NaN (huge inputs make inf * 0 in both implementations' gradients)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])


def _grads(module):
    return {n: p.grad.clone() if p.grad is not None else None for n, p in module.named_parameters()}


def _assert_same_grads(a, b):
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys()
    for name in ga:
        assert (ga[name] is None) == (gb[name] is None), name
        if ga[name] is not None:
            assert _same(ga[name], gb[name]), name


def brevitas_own(preset):
    """``preset`` with Brevitas' own (unfused) quantizer and scaling classes."""
    act = dict(tensor_quant=RescalingIntQuant, scaling_impl=ParameterFromRuntimeStatsScaling)
    original = {quant.FixedPointWeight: dict(tensor_quant=RescalingIntQuant, scaling_impl=StatsFromParameterScaling),
                quant.FixedPointAct: act, quant.FixedPointUnsignedAct: act,
                quant.FixedPointBias: dict(tensor_quant=PrescaledRestrictIntQuant)}
    return preset.let(**original[preset])


ACT_PRESETS = [(quant.FixedPointAct, qnn.QuantIdentity), (quant.FixedPointUnsignedAct, qnn.QuantReLU),
               (quant.FixedPointAct, qnn.QuantReLU)]


@pytest.mark.parametrize("preset,layer", ACT_PRESETS, ids=["signed", "unsigned_relu", "signed_relu"])
@pytest.mark.parametrize("bits", [2, 6, 8])
def test_activation_quantizer_matches_brevitas_in_both_phases(preset, layer, bits):
    def make(preset):
        return layer(act_quant=preset.let(bit_width=bits, collect_stats_steps=COLLECT),
                     return_quant_tensor=True).train()

    fast, slow = make(preset), make(brevitas_own(preset))
    tq = fast.act_quant.fused_activation_quant_proxy.tensor_quant
    assert isinstance(tq, fused.FusedRescalingIntQuant) and tq.fused
    assert isinstance(tq.scaling_impl, fused.FusedParameterFromRuntimeStatsScaling) and tq.scaling_impl.fused
    assert type(slow.act_quant.fused_activation_quant_proxy.tensor_quant) is RescalingIntQuant
    for step in range(COLLECT + 4):  # through statistics collection, its last step and the learned scale
        outs = []
        for m in (fast, slow):
            # huge values would make the collected statistics (a percentile) infinite: only with a learned scale
            x = _nasty((64, 37), seed=step, scale=0.5 + step, huge=step > COLLECT).requires_grad_()
            y = m(x)
            _backward(y.value, seed=100 + step)
            outs.append((y, x.grad))
        (yf, gf), (ys, gs) = outs
        assert torch.equal(yf.value, ys.value) and torch.equal(yf.scale, ys.scale), step
        assert _same(gf, gs), step
        _assert_same_grads(fast, slow)
        for m in (fast, slow):
            with torch.no_grad():  # move the learned scale as an optimizer would
                for p in m.parameters():
                    if p.grad is not None:
                        p -= 0.37 * torch.sign(p.grad.nan_to_num(0.0))
                    p.grad = None
    for m in (fast, slow):
        m.eval()
    x = _nasty((16, 5), seed=99)
    assert torch.equal(fast(x).value, slow(x).value)


def _linears(bits_w=6, bits_b=12, seed=0):
    def make(own, cls):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            qnn.QuantIdentity(act_quant=own(quant.FixedPointAct).let(bit_width=8, collect_stats_steps=COLLECT),
                              return_quant_tensor=True),
            cls(23, 9, bias=True, weight_quant=own(quant.FixedPointWeight).let(bit_width=bits_w),
                bias_quant=own(quant.FixedPointBias).let(bit_width=bits_b), return_quant_tensor=False),
        ).train()

    fast = make(lambda preset: preset, fused.QuantLinear)
    slow = make(brevitas_own, qnn.QuantLinear)
    return fast, slow


@pytest.mark.parametrize("bits_w,bits_b", [(6, 12), (3, 4), (8, 16)])
def test_weight_and_bias_quantizers_match_brevitas(bits_w, bits_b):
    fast, slow = _linears(bits_w, bits_b)
    assert isinstance(fast[1].weight_quant.tensor_quant, fused.FusedRescalingIntQuant)
    assert fast[1].weight_quant.tensor_quant.scaling_impl.fused
    assert isinstance(fast[1].bias_quant.tensor_quant, fused.FusedPrescaledRestrictIntQuant)
    with torch.no_grad():  # ties in the weights: a repeated max |w|, half-way points, zeros of both signs
        for m in (fast, slow):
            w = _nasty((9, 23), seed=5, scale=0.3)[:, :]
            w.clamp_(-1.0, 1.0)
            w[0, 0], w[1, 1] = 1.0, -1.0
            m[1].weight.copy_(w)
            m[1].bias.copy_(_nasty((9,), seed=6, scale=2.0, huge=False))
    for step in range(COLLECT + 3):
        outs = []
        for m in (fast, slow):
            x = (torch.randn(31, 23, generator=torch.Generator().manual_seed(step)) * 2).requires_grad_()
            y = m(x)
            _backward(y, seed=step)
            outs.append((y, x.grad))
        assert torch.equal(outs[0][0], outs[1][0]), step
        assert _same(outs[0][1], outs[1][1]), step
        _assert_same_grads(fast, slow)
        for m in (fast, slow):
            m.zero_grad(set_to_none=True)
    qf, qs = fast[1].quant_weight(), slow[1].quant_weight()
    assert torch.equal(qf.value, qs.value) and torch.equal(qf.scale, qs.scale)
    assert torch.equal(qf.int(), qs.int())


def test_plain_accumulator_keeps_the_quant_tensor_when_asked():
    layer = fused.QuantLinear(4, 3, bias=True, weight_quant=quant.FixedPointWeight,
                              bias_quant=quant.FixedPointBias, return_quant_tensor=True)
    x = qnn.QuantIdentity(act_quant=quant.FixedPointAct, return_quant_tensor=True)(torch.randn(5, 4))
    out = layer(x)
    assert out.scale is not None and torch.equal(out.scale, (x.scale * layer.quant_weight().scale).view(1, 1))


def test_training_the_mlp_is_bit_identical_to_brevitas(monkeypatch):
    """A few Adam steps of the whole quantized MLP, through statistics collection: every parameter equal (the
    fused quantizers, and the layers' training fast path on them, against Brevitas' classes throughout)."""

    def train(steps=6):
        torch.manual_seed(0)
        model = create_model(MLPConfig(family="mlp", hidden=[16, 8]), (6,), 3, QuantConfig())
        for m in model.modules():
            if hasattr(m, "collect_stats_steps"):
                m.collect_stats_steps = COLLECT
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            x, y = torch.randn(128, 6, generator=g) * 2, torch.randint(0, 3, (128,), generator=g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    fast = train()
    for name in ("FixedPointWeight", "FixedPointAct", "FixedPointUnsignedAct", "FixedPointBias"):
        monkeypatch.setattr(quant, name, brevitas_own(getattr(quant, name)))
    for name in ("QuantLinear", "QuantIdentity", "QuantReLU"):
        monkeypatch.setattr(fused, name, getattr(qnn, name))
    slow = train()
    assert not any(type(m).__module__ == fused.__name__ for m in slow.modules())
    sf, ss = fast.state_dict(), slow.state_dict()
    assert sf.keys() == ss.keys()
    for k in sf:
        assert torch.equal(sf[k], ss[k]), k


@pytest.mark.parametrize("family", ["gru", "lstm"])
def test_recurrent_scales_computed_once_per_sequence(family, monkeypatch):
    """Sharing one scale node across time steps changes no value and no gradient but the scales' own (the same
    sum, added before the scale's derivative): outputs and every other gradient torch.equal."""
    from contextlib import nullcontext

    from edgeann.config import GRUConfig, LSTMConfig

    cfg = (GRUConfig if family == "gru" else LSTMConfig)(family=family, hidden=[6], gate_bits=6, table_bits=6)

    def run(shared: bool):
        if not shared:
            monkeypatch.setattr(fused, "scales_computed_once", lambda module: nullcontext())
        torch.manual_seed(0)
        model = create_model(cfg, (5, 3), 3, QuantConfig())
        for m in model.modules():
            if hasattr(m, "collect_stats_steps"):
                m.collect_stats_steps = COLLECT
        g = torch.Generator().manual_seed(1)
        for _ in range(COLLECT + 1):  # past the statistics collection
            model(torch.randn(16, 5, 3, generator=g)).sum().backward()
        model.zero_grad()
        x = torch.randn(16, 5, 3, generator=g)
        calls = []
        apply = fused.PowerOfTwoScaleFn.apply
        monkeypatch.setattr(fused.PowerOfTwoScaleFn, "apply", lambda *a: calls.append(a[3]) or apply(*a))
        y = model(x)
        monkeypatch.setattr(fused.PowerOfTwoScaleFn, "apply", apply)
        F.cross_entropy(y, torch.arange(16) % 3).backward()
        learned = sum(1 for from_stats in calls if not from_stats)
        return y.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, learned

    (y_shared, g_shared, n_shared), (y_each, g_each, n_each) = run(True), run(False)
    n_quantizers = 2 + len(cfg.hidden) * (6 if family == "lstm" else 4)  # input, output; gates, state (, cell)
    assert n_shared == n_quantizers < n_each
    assert torch.equal(y_shared, y_each)
    assert g_shared.keys() == g_each.keys()
    scales = [n for n in g_shared if n.endswith("scaling_impl.value")]
    assert len(scales) >= 4  # gates and state
    for n in g_shared:
        if n not in scales:
            assert torch.equal(g_shared[n], g_each[n]), n
