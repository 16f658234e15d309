"""Brevitas presets: power-of-two scales, per-layer bit widths, truncation, and exact lowering."""

import copy

import brevitas.nn as qnn
import numpy as np
import torch

from edgeann import ir
from edgeann.config import MLPConfig, QuantConfig
from edgeann.frontends.lowering import lower
from edgeann.models import create_model


def _warm(model, steps=30, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.randn(512, model.input_shape[0]) * 2, torch.randint(0, model.n_classes, (512,))
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_bit_widths_follow_the_flow_per_layer():
    q = QuantConfig(input_bits=10, weight_bits=5, activation_bits=7, output_bits=9, bias_bits=12,
                    layers={"fc2": {"weight_bits": 3, "activation_bits": 4}})
    model = _warm(create_model(MLPConfig(family="mlp", hidden=[12, 8]), (6,), 3, q))
    g = lower(model, "m")
    types = {n: i.type for n, i in g.infos().items()}
    assert types["input"].width == 10 and types["input"].signed
    assert g.node("fc1").weight_type.width == 5 and g.node("fc2").weight_type.width == 3
    assert g.node("fc1").bias_type.width == 12
    assert types["relu1"] == ir.FixedType(7, types["relu1"].frac, False)
    assert types["relu2"].width == 4 and not types["relu2"].signed
    assert types["output"].width == 9


def test_scales_are_powers_of_two_and_weights_symmetric():
    model = _warm(create_model(MLPConfig(family="mlp", hidden=[16]), (8,), 4, QuantConfig()))
    for m in model.modules():
        if isinstance(m, qnn.QuantLinear):
            qw = m.quant_weight()
            mantissa, _ = np.frexp(float(qw.scale.detach()))
            assert mantissa == 0.5
            ints = qw.int()
            assert int(ints.min()) >= -31 and int(ints.max()) <= 31  # 6-bit narrow range
        if isinstance(m, (qnn.QuantReLU, qnn.QuantIdentity)):
            assert np.frexp(float(m.act_quant.scale().detach()))[0] == 0.5
            assert m.act_quant.rounding_mode == "FLOOR"


def test_activation_quantizer_truncates():
    model = _warm(create_model(MLPConfig(family="mlp", hidden=[4]), (2,), 2, QuantConfig(input_bits=6)))
    quant_in = model.layers.input
    s = float(quant_in.act_quant.scale())
    x = torch.tensor([[0.99 * s, -0.01 * s], [1.5 * s, -1.5 * s]])
    out = quant_in(x).value / s
    assert out.tolist() == [[0.0, -1.0], [1.0, -2.0]]


def test_lowered_graph_equals_pytorch_exactly():
    model = _warm(create_model(MLPConfig(family="mlp", hidden=[32, 16]), (16,), 5, QuantConfig()), steps=60)
    g = lower(model, "m")
    x = torch.randn(5000, 16) * 3
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double()).numpy()
        f32 = model(x).double().numpy()
    assert np.array_equal(g.predict(x.numpy()), ref)
    assert np.array_equal(f32, ref)  # these layers are narrow enough for float32 to be exact


def test_float_twin_has_the_same_shape():
    qm = create_model(MLPConfig(family="mlp"), (16,), 5, QuantConfig())
    fm = create_model(MLPConfig(family="mlp"), (16,), 5, None)
    assert list(qm.prunable()) == list(fm.prunable()) == ["fc1", "fc2", "fc3", "fc4"]
    assert fm(torch.zeros(3, 16)).shape == qm(torch.zeros(3, 16)).shape == (3, 5)
