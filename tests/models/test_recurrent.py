"""The quantization-aware GRU and LSTM (edgeann.models.recurrent): hardware sigmoid/tanh, exact lowering, straight-through training, pruning."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from brevitas.quant_tensor import IntQuantTensor

from edgeann import ir
from edgeann.backends import onnx_qcdq
from edgeann.config import GRUConfig, LSTMConfig, PruneConfig, QuantConfig
from edgeann.errors import EdgeannError
from edgeann.export import torch_reference
from edgeann.frontends.lowering import lower
from edgeann.models import create_model
from edgeann.models.recurrent import HardwareActivation
from edgeann.prune import Pruner

INDEX_TYPES = [ir.FixedType(w, f) for w, fracs in [(2, (0, 3)), (3, (1, -2)), (6, (3, 8)), (8, (4, 5)), (12, (7, 0))]
               for f in fracs]


def _all_codes(t: ir.FixedType, dtype=torch.float64) -> IntQuantTensor:
    codes = torch.arange(t.int_min, t.int_max + 1, dtype=dtype)
    scale = torch.tensor(t.scale, dtype=dtype)
    return IntQuantTensor(codes * scale, scale, torch.tensor(0.0, dtype=dtype), torch.tensor(float(t.width)), True, False)


@pytest.mark.parametrize("fn, out_type", [("sigmoid", ir.sigmoid_type(b)) for b in (2, 8, 16)]
                         + [("tanh", ir.tanh_type(b)) for b in (2, 8, 16)])
def test_hardware_activation_is_the_table_on_every_code(fn, out_type):
    """In eval and training mode, float64 and float32, the layer gives the table's entry for every code."""
    act = HardwareActivation(fn, out_type)
    for t in INDEX_TYPES:
        table = ir.activation_table(fn, t, out_type)
        assert table.shape == (t.int_max - t.int_min + 1,)
        want = table.astype(np.float64) * out_type.scale
        for training in (False, True):
            act.train(training)
            for dtype in (torch.float64, torch.float32):
                got = act(_all_codes(t, dtype)).double().numpy()
                assert np.array_equal(got, want), (fn, t, training, dtype)


def test_before_scales_settle_the_rounding_is_applied_element_by_element():
    act = HardwareActivation("sigmoid", ir.sigmoid_type(8)).train()
    scale = torch.tensor(0.0724)  # Brevitas' scale while it collects statistics
    codes = torch.arange(-128, 128, dtype=torch.float32)
    q = IntQuantTensor(codes * scale, scale, torch.tensor(0.0), torch.tensor(8.0), True, True)
    want = torch.floor(torch.sigmoid(codes.double() * 0.0724) * 256 + 0.5).clamp(0, 255) / 256
    assert torch.allclose(act(q).double(), want, atol=1 / 256)


def test_tables_are_monotone_and_saturate():
    t = ir.FixedType(8, 4)
    s = ir.activation_table("sigmoid", t, ir.sigmoid_type(8))
    n = ir.activation_table("tanh", t, ir.tanh_type(8))
    assert np.all(np.diff(s) >= 0) and np.all(np.diff(n) >= 0)
    assert s[-1] == 255 and s[0] == 0 and s[-t.int_min] == 128  # sigmoid(0) = 0.5
    assert n[-1] == 127 and n[0] == -128 and n[-t.int_min] == 0


def test_straight_through_gradient_is_the_smooth_derivative():
    act = HardwareActivation("tanh", ir.tanh_type(6)).train()
    q = _all_codes(ir.FixedType(6, 3))
    x = q.value.clone().requires_grad_(True)
    act(IntQuantTensor(x, q.scale, q.zero_point, q.bit_width, True, True)).sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)


def _trained(cfg, shape=(6, 3), steps: int = 25, seed: int = 0, quant: QuantConfig | None = None):
    torch.manual_seed(seed)
    m = create_model(cfg, shape, 4, quant or QuantConfig(weight_bits=6, activation_bits=8))
    opt = torch.optim.Adam(m.parameters(), 0.02)
    m.train()
    for _ in range(steps):
        x = torch.randn(64, *shape) * 1.5
        y = (x[:, -1, 0] > 0).long() + 2 * (x[:, 0, -1] > 0).long()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), loss.item()


@pytest.fixture(scope="module")
def stacked():
    """Two stacked GRUs (the first returns its sequence) and a dense layer, briefly trained."""
    return _trained(GRUConfig(family="gru", hidden=[5, 4], dense=[6], gate_bits=7, table_bits=6))[0]


@pytest.mark.parametrize("cfg", [GRUConfig(family="gru", hidden=[6]),
                                 GRUConfig(family="gru", hidden=[3], gate_bits=4, table_bits=3),
                                 LSTMConfig(family="lstm", hidden=[6]),
                                 LSTMConfig(family="lstm", hidden=[4, 3], gate_bits=6, table_bits=5)],
                         ids=["gru", "gru-narrow", "lstm", "lstm-stacked-narrow"])
def test_lowered_graph_and_onnx_equal_pytorch(cfg):
    model, loss = _trained(cfg, quant=QuantConfig(weight_bits=5, activation_bits=6, input_bits=6))
    assert loss < 1.37  # it learns (chance: log 4 = 1.39)
    graph = lower(model, "g")
    cell = {"gru": ir.GRU, "lstm": ir.LSTM}[cfg.family]
    assert [type(n) for n in graph.nodes] == [ir.Input, *[cell] * len(cfg.hidden), ir.Dense, ir.Quantize]
    x = (np.random.default_rng(1).normal(size=(3000, 6, 3)) * 2).astype(np.float32)
    ref = torch_reference(model, x)
    assert np.array_equal(graph.predict(x), ref)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(graph), x), ref)
    assert len(np.unique(ref)) > 20


def test_stacked_gru_lowers_exactly(stacked):
    graph = lower(stacked, "s")
    gru1, gru2 = graph.nodes[1], graph.nodes[2]
    assert gru1.return_sequences and not gru2.return_sequences
    assert graph.infos()["gru1"].shape == (6, 5) and graph.infos()["gru2"].shape == (4,)
    x = (np.random.default_rng(2).normal(size=(2000, 6, 3)) * 2).astype(np.float32)
    ref = torch_reference(stacked, x)
    assert np.array_equal(graph.predict(x), ref)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(graph), x), ref)


TABLES = {"gru": (("r", "tr", "sigmoid"), ("z", "tz", "sigmoid"), ("n", "tn", "tanh")),
          "lstm": (("i", "ti", "sigmoid"), ("f", "tf", "sigmoid"), ("g", "tg", "tanh"), ("o", "to", "sigmoid"),
                   ("c", "tc", "tanh"))}


@pytest.mark.parametrize("family", ["gru", "lstm"])
def test_activation_tables_in_firmware_equal_pytorch(stacked, family, tmp_path):
    """The tables written into the firmware's weight headers are, entry for entry, what the trained layer computes
    on every code of its input type."""
    from edgeann.backends.hls import write_project

    model = stacked if family == "gru" else _trained(LSTMConfig(family="lstm", hidden=[5, 4], gate_bits=7, table_bits=6))[0]
    graph = lower(model, "s")
    project = write_project(graph, tmp_path / "prj")
    for k, name in enumerate((f"{family}1", f"{family}2")):
        mod, node = getattr(model.layers, name), graph.node(name)
        index = 2 + k  # hls4ml numbers the layers from 1, the input first
        for table, prefix, fn in TABLES[family]:
            text = (project.path / "firmware" / "weights" / f"{prefix}{index}.h").read_text()
            firmware = np.array([float(v) for v in re.search(r"\{([^}]*)\}", text).group(1).split(",")])
            _, index_type, _ = node.tables()[table]
            torch_values = getattr(mod, fn).eval()(_all_codes(index_type)).numpy()
            assert np.array_equal(firmware, torch_values), (name, table)


def test_pruning_reaches_both_recurrent_matrices():
    model = create_model(GRUConfig(family="gru", hidden=[5, 4]), (6, 3), 4, QuantConfig())
    names = set(model.prunable())
    assert {"gru1_ih", "gru1_hh", "gru2_ih", "gru2_hh", "fc1"} <= names
    pruner = Pruner(model, PruneConfig(method="iterative", target_sparsity=0.6, step=0.6), 2, 1)
    pruner.prune_to(0.6)
    for name in ("gru1_ih", "gru2_hh"):
        assert 0 < float((model.prunable()[name].weight == 0).float().mean()) < 1
    model.eval()
    model(torch.randn(8, 6, 3))
    graph = lower(model, "p")
    zeros = sum(int((n.w_ih == 0).sum() + (n.w_hh == 0).sum()) for n in graph.nodes if isinstance(n, ir.GRU))
    pruned = sum(int((model.prunable()[f"gru{i}_{m}"].weight == 0).sum()) for i in (1, 2) for m in ("ih", "hh"))
    assert zeros >= pruned


@pytest.mark.parametrize("cfg, torch_layer", [(GRUConfig(family="gru", hidden=[4]), torch.nn.GRU),
                                               (LSTMConfig(family="lstm", hidden=[4]), torch.nn.LSTM)])
def test_float_twin_is_torch_rnn(cfg, torch_layer):
    """The float family members compute torch.nn.GRU's and torch.nn.LSTM's equations."""
    model = create_model(cfg, (5, 3), 2, None)
    layer = getattr(model.layers, f"{cfg.family}1")
    ref = torch_layer(3, 4, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.ih.weight)
        ref.bias_ih_l0.copy_(layer.ih.bias)
        ref.weight_hh_l0.copy_(layer.hh.weight)
        ref.bias_hh_l0.copy_(layer.hh.bias)
    x = torch.randn(10, 5, 3)
    assert torch.allclose(layer(x), ref(x)[0][:, -1], atol=1e-6)


@pytest.mark.parametrize("cfg", [GRUConfig(family="gru"), LSTMConfig(family="lstm")])
def test_recurrent_families_need_sequences(cfg):
    with pytest.raises(EdgeannError, match=f"the {cfg.family} family takes sequences"):
        create_model(cfg, (16,), 5, QuantConfig())
