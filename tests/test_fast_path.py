"""The layers' training fast path (edgeann.fused: _FastActivation, _FastWeightLayer) against Brevitas' own module
calls (fused.brevitas_path): forward values and every gradient torch.equal, and a trained run's model.onnx
byte for byte."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from edgeann import fused, quant
from edgeann.config import CNNConfig, GRUConfig, LSTMConfig, MLPConfig, QuantConfig, load_flow
from edgeann.models import create_model
from tests.conftest import TINY, write_flow
from tests.test_fused_quant import COLLECT, _backward, _nasty, _same

FAST_LAYERS = (fused._FastActivation, fused._FastWeightLayer)


def _grads(model) -> dict:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        assert a.shape == b.shape and _same(a, b), what


def _fast_layers_engaged(model) -> int:
    """How many layers of ``model`` take the fast path now (all of them, once the statistics are collected)."""
    layers = [m for m in model.modules() if isinstance(m, FAST_LAYERS)]
    engaged = [m for m in layers if m._plan() is not None]
    return len(engaged) if len(engaged) == len(layers) else -len(engaged)


def _twins(build):
    torch.manual_seed(0)
    fast = build()
    for m in fast.modules():
        if hasattr(m, "collect_stats_steps"):
            m.collect_stats_steps = COLLECT
    return fast.train(), copy.deepcopy(fast).train()


def _train_twins(build, batch, steps=COLLECT + 4, loss=None):
    """Train two copies of ``build()`` with Adam, one on the fast path and one on Brevitas' path, checking
    outputs, input gradients and every parameter's gradient at every step; returns the two models."""
    fast, slow = _twins(build)
    opts = [torch.optim.Adam(m.parameters(), 1e-2) for m in (fast, slow)]
    for step in range(steps):
        outs = []
        for m, opt, reference in ((fast, opts[0], False), (slow, opts[1], True)):
            x = batch(step).requires_grad_()
            if reference:
                with fused.brevitas_path():
                    y = m(x)
            else:
                y = m(x)
            y = y.value if hasattr(y, "value") else y
            opt.zero_grad(set_to_none=True)
            if loss is None:
                _backward(y, seed=100 + step)
            else:
                loss(y, step).backward()
            outs.append((y.detach(), x.grad, _grads(m)))
            opt.step()
        (yf, xf, gf), (ys, xs, gs) = outs
        assert torch.equal(yf, ys), step
        _assert_same(xf, xs, f"input gradient, step {step}")
        assert gf.keys() == gs.keys()
        for name in gf:
            _assert_same(gf[name], gs[name], f"{name}, step {step}")
    assert _fast_layers_engaged(fast) > 0
    for k, v in fast.state_dict().items():
        assert torch.equal(v, slow.state_dict()[k]), k
    return fast, slow


@pytest.mark.parametrize("layer,preset", [(fused.QuantIdentity, quant.FixedPointAct),
                                          (fused.QuantReLU, quant.FixedPointUnsignedAct),
                                          (fused.QuantReLU, quant.FixedPointAct)],
                         ids=["signed", "unsigned_relu", "signed_relu"])
@pytest.mark.parametrize("bits", [2, 6, 8])
def test_activation_layer(layer, preset, bits):
    def batch(step):  # huge values only once the scale is learned (they would make the statistics infinite)
        return _nasty((64, 37), seed=step, scale=0.5 + step, huge=step > COLLECT)

    fast, slow = _train_twins(lambda: layer(act_quant=preset.let(bit_width=bits), return_quant_tensor=True), batch)
    for m in (fast, slow):
        m.eval()
    x = _nasty((16, 5), seed=99)
    assert torch.equal(fast(x).value, slow(x).value)


def _with_nasty_weights(model, seed=5):
    """Weights with ties: a repeated max |w|, half-way points, zeros of both signs; biases far out of range too."""
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, fused._FastWeightLayer)):
            w = _nasty(m.weight.shape, seed=seed + i, scale=0.3).clamp_(-1.0, 1.0)
            w.view(-1)[0], w.view(-1)[-1] = 1.0, -1.0
            m.weight.copy_(w)
            n = m.bias.numel()
            m.bias.copy_(_nasty((max(n, 16),), seed=50 + i, scale=2.0, huge=False)[:n])
    return model


@pytest.mark.parametrize("bits_w,bits_b", [(6, 12), (3, 4), (8, 16)])
def test_linear_layer(bits_w, bits_b):
    def build():
        return _with_nasty_weights(torch.nn.Sequential(
            fused.QuantIdentity(act_quant=quant.FixedPointAct.let(bit_width=8), return_quant_tensor=True),
            fused.QuantLinear(23, 9, bias=True, weight_quant=quant.FixedPointWeight.let(bit_width=bits_w),
                              bias_quant=quant.FixedPointBias.let(bit_width=bits_b), return_quant_tensor=False)))

    fast, _ = _train_twins(build, lambda step: torch.randn(31, 23, generator=torch.Generator().manual_seed(step)) * 2)
    w = fast[1].quant_weight()  # the fast path's IntQuantTensor is Brevitas'
    with fused.brevitas_path():
        ref = fast[1].quant_weight()
    for field in ("value", "scale", "zero_point", "bit_width", "signed_t", "training_t"):
        assert torch.equal(getattr(w, field), getattr(ref, field)), field


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_batchnorm_pool_dense_model(dims):
    """A small CNN (convolutions, batch normalization, ReLU, max and average pooling, a residual block, dense)
    through statistics collection: every gradient at every step, and the parameters after Adam, equal."""
    layers = [{"type": "conv", "filters": 4, "kernel": 3, "padding": "same"}, {"type": "batchnorm"}, {"type": "relu"},
              {"type": "max_pool", "size": 2},
              {"type": "residual", "layers": [{"type": "conv", "filters": 4, "kernel": 3, "padding": "same"},
                                              {"type": "relu"}]},
              {"type": "conv", "filters": 5, "kernel": 2, "stride": 2}, {"type": "relu"}, {"type": "avg_pool", "size": 2},
              {"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "relu"}]
    cfg = CNNConfig(family="cnn", layers=layers)
    shape = (8, 8, 2) if dims == 2 else (16, 2)

    def build():
        return _with_nasty_weights(create_model(cfg, shape, 3, QuantConfig()))

    def batch(step):
        return _nasty((12, *shape), seed=step, scale=1.5, huge=step > COLLECT + 1)

    _train_twins(build, batch)


@pytest.mark.parametrize("family", ["mlp", "gru", "lstm"])
def test_model_trains_bit_identically(family):
    cfg, shape = {
        "mlp": (MLPConfig(family="mlp", hidden=[16, 8]), (6,)),
        "gru": (GRUConfig(family="gru", hidden=[6, 5], dense=[4], gate_bits=6, table_bits=6), (5, 3)),
        "lstm": (LSTMConfig(family="lstm", hidden=[6], gate_bits=5, table_bits=6), (5, 3)),
    }[family]

    def batch(step):
        return _nasty((40, *shape), seed=step, scale=2.0, huge=step > COLLECT + 1)

    def loss(y, step):
        return F.cross_entropy(y, torch.arange(y.shape[0]) % 3)

    _train_twins(lambda: _with_nasty_weights(create_model(cfg, shape, 3, QuantConfig())), batch, loss=loss)


def test_training_a_flow_writes_the_same_model_onnx(tmp_path, monkeypatch):
    """A tiny flow (121 steps: past the 100 statistics steps) trained on the fast path and on Brevitas' path:
    model.onnx and model.qonnx.onnx byte for byte, the same test accuracy."""
    from edgeann.pipeline import train_run

    tree = copy.deepcopy(TINY)
    tree["data"]["n_samples"] = 1100
    tree["training"].update(epochs=7, batch_size=40)
    tree["model"]["hidden"] = [16, 8]
    flow = load_flow(write_flow(tmp_path / "flow.yaml", tree))
    steps = []
    forward = fused._FastWeightLayer.forward
    monkeypatch.setattr(fused._FastWeightLayer, "forward",
                        lambda self, x: steps.append(self._plan() is not None) or forward(self, x))
    fast = train_run(flow, tmp_path / "fast", progress=False)
    assert any(steps)
    monkeypatch.setattr(fused, "FAST_PATH", False)
    steps.clear()
    slow = train_run(flow, tmp_path / "brevitas", progress=False)
    assert steps and not any(steps)
    for name in ("model.onnx", "model.qonnx.onnx", "metrics.json"):
        if name == "metrics.json":
            import json

            a, b = (json.loads((run / name).read_text()) for run in (fast, slow))
            assert a["test"] == b["test"]
        else:
            assert (fast / name).read_bytes() == (slow / name).read_bytes(), name
