"""The CNN family: its flow section, shape checks, pruning, and exact lowering to the fixed-point graph and ONNX."""

import copy

import numpy as np
import pytest
import torch
import yaml

from edgeann import ir, testing
from edgeann.backends import onnx_qcdq
from edgeann.config import CNNConfig, PruneConfig, QuantConfig, load_flow
from edgeann.errors import EdgeannError
from edgeann.export import torch_reference
from edgeann.backends.hls import HlsOptions
from edgeann.frontends.lowering import lower
from edgeann.metrics import bops, layer_table
from edgeann.models import create_model
from edgeann.prune import Pruner
from edgeann.report import latency_estimate


def cnn(*layers) -> CNNConfig:
    return CNNConfig(family="cnn", layers=list(layers))


def conv(filters, **kw):
    return {"type": "conv", "filters": filters, **kw}


RELU, FLAT, BN = {"type": "relu"}, {"type": "flatten"}, {"type": "batchnorm"}


def trained(cfg: CNNConfig, shape, quant=None, steps=3, seed=0):
    """A quantized CNN after a few training steps (quantizer statistics and batch-norm statistics collected)."""
    torch.manual_seed(seed)
    m = create_model(cfg, shape, 5, quant or QuantConfig())
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    m.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(m(torch.randn(128, *shape)), torch.randint(0, 5, (128,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


# --------------------------------------------------------------------------------------------
# The flow section


def test_jet_cnn_flow_loads_and_shares_the_jet_file_with_the_mlp():
    flow, mlp = load_flow("jet_cnn"), load_flow("jet_mlp")
    assert flow.model.family == "cnn" and flow.data.representation == "images" and flow.fpga.io_type == "io_stream"
    assert flow.data.file() == mlp.data.file()  # one generated file serves both
    m = create_model(flow.model, (16, 16, 1), 5, flow.quantization)
    n_params = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert 1000 < n_params < 10_000  # an L1-trigger size
    assert set(m.prunable()) == {"conv1", "conv2", "fc1", "fc2"}


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda ls: ls[0].update(kernal=3), "unknown key model.layers.0.kernal (expected one of: type, filters, kernel"),
        (lambda ls: ls[0].update(filters="eight"), "model.layers.0.filters: Input should be a valid integer"),
        (lambda ls: ls[0].update(kernel=0), "model.layers.0.kernel: Input should be greater than or equal to 1"),
        (lambda ls: ls[0].update(stride=2), "model.layers.0: padding 'same' needs stride 1"),
        (lambda ls: ls.insert(3, {"type": "avg_pool", "size": 3}), "model.layers.3: avg_pool size 3: the window area"),
        (lambda ls: ls.insert(0, {"type": "lstm"}), "model.layers.0: Input tag 'lstm'"),
        (lambda ls: ls.insert(3, {"type": "residual", "layers": [{"type": "conv"}]}),
         "missing key model.layers.3.layers.0.filters"),
        (lambda ls: ls.insert(3, {"type": "residual", "layers": []}), "model.layers.3.layers: List should have at least 1"),
    ],
)
def test_bad_layers_name_the_key(make_flow, change, expected):
    tree = yaml.safe_load(load_flow("jet_cnn").to_yaml())
    change(tree["model"]["layers"])
    with pytest.raises(EdgeannError) as e:
        load_flow(make_flow(tree))
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "layers, shape, expected",
    [
        ([conv(4, kernel=5), RELU, FLAT], (4, 4, 1), r"model.layers\[0\] \(conv\): window \[5, 5\] is larger than its"),
        ([conv(4), RELU, {"type": "dense", "units": 4}], (6, 6, 1), r"model.layers\[2\] \(dense\): needs a flat input"),
        ([conv(4), RELU, FLAT, conv(2)], (6, 6, 1), r"model.layers\[3\] \(conv\): needs a \(..., channels\) input"),
        ([conv(4), conv(4), RELU, FLAT], (6, 6, 1), r"model.layers\[1\] \(conv\): its input is not quantized"),
        ([conv(4), RELU, {"type": "residual", "layers": [conv(4)]}, FLAT], (6, 6, 1),
         r"model.layers\[2\] \(residual\): its layers turn shape \[4, 4, 4\] into \[2, 2, 4\]"),
        ([conv(4, kernel=[3, 3]), RELU, FLAT], (6, 1), r"kernel \[3, 3\] has 2 entries but the data has 1 spatial"),
        ([conv(4), RELU], (6, 6, 1), r"model.layers: the last layer leaves shape \[4, 4, 4\]; end with a flatten"),
        ([conv(4), RELU, FLAT], (6, 6, 1, 1), r"channels-last samples"),
        ([conv(4), RELU, FLAT], (36,), r"channels-last samples"),
        ([conv(4), RELU, {"type": "max_pool", "size": 8}, FLAT], (6, 6, 1), r"model.layers\[2\] \(max_pool\): window"),
    ],
)
def test_impossible_shapes_stop_before_training(layers, shape, expected):
    for quant in (QuantConfig(), None):
        with pytest.raises(EdgeannError, match=expected):
            create_model(cnn(*layers), shape, 5, quant)


# --------------------------------------------------------------------------------------------
# Lowering: PyTorch (float64) == fixed-point graph == onnxruntime, bit for bit

MAX_POOL, AVG_POOL = {"type": "max_pool"}, {"type": "avg_pool"}
CASES = {
    "2d-jet-like": ([conv(4, padding="same"), BN, RELU, MAX_POOL, conv(6), RELU, MAX_POOL, FLAT,
                     {"type": "dense", "units": 8}, RELU], (12, 12, 1)),
    "2d-residual-avgpool": ([conv(3, kernel=[3, 1], padding=1), RELU,
                             {"type": "residual",
                              "layers": [conv(3, kernel=2, padding="same"), BN, RELU, conv(3, padding="same")]},
                             {**AVG_POOL, "size": [2, 1]}, FLAT], (6, 5, 2)),
    "2d-stride-pad": ([conv(5, kernel=[2, 3], stride=[2, 1], padding=[1, 0]), RELU, {**MAX_POOL, "size": 2, "stride": 1},
                       FLAT], (7, 8, 3)),
    "1d": ([conv(4, kernel=3, stride=2), RELU, conv(4, kernel=2, padding="same"), BN, RELU, {**AVG_POOL, "size": 2},
            {"type": "residual", "layers": [conv(4, kernel=3, padding=1)], "activation": "none"},
            FLAT, {"type": "dense", "units": 6}, RELU], (20, 3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lowered_graph_and_onnx_equal_pytorch(case):
    layers, shape = CASES[case]
    quant = QuantConfig(input_bits=7, weight_bits=5, activation_bits=5, layers={"conv1": {"weight_bits": 3}})
    m = trained(cnn(*layers), shape, quant)
    g = lower(m, case)
    assert g.input.shape == shape  # channels-last in, as every artifact
    x = (np.random.default_rng(1).normal(0, 1.5, (400, *shape))).astype(np.float32)
    ref = torch_reference(m, x)
    assert np.array_equal(g.predict(x), ref)
    assert np.array_equal(onnx_qcdq.run(onnx_qcdq.to_onnx(g), x), ref)
    assert g.node("conv1").weight_type.width == 3


def test_pytorch_model_takes_channels_last_input():
    m = trained(cnn(conv(2, kernel=[3, 1]), RELU, FLAT), (5, 4, 1))
    x = torch.randn(3, 5, 4, 1)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (3, 5)
        with pytest.raises(RuntimeError):
            m(x.permute(0, 3, 1, 2))  # channels-first is not what it takes


def test_batchnorm_quantizes_the_same_in_float64():
    """The check runs the model in float64; batch norm's quantized scale and shift must not change with the dtype."""
    m = trained(cnn(conv(3), BN, RELU, FLAT), (5, 5, 1), steps=5)
    bn = m.layers.bn1
    s32 = bn.quantized(bn.running_mean, bn.running_var)
    bn64 = copy.deepcopy(bn).double()
    s64 = bn64.quantized(bn64.running_mean, bn64.running_var)
    assert all(torch.equal(a.double(), b.double()) for a, b in zip(s32, s64))


# --------------------------------------------------------------------------------------------
# Pruning and the report


def test_pruning_removes_convolution_weights_and_the_report_counts_them():
    layers, shape = CASES["2d-jet-like"]
    m = trained(cnn(*layers), shape)
    pruner = Pruner(m, PruneConfig(method="iterative", target_sparsity=0.6), epochs=4, steps_per_epoch=1)
    pruner.prune_to(0.6)
    assert {"conv1", "conv2", "fc1", "fc2"} <= set(pruner.layers)
    assert float((m.layers.conv2.weight == 0).float().mean()) > 0.3
    g = lower(m, "pruned")
    rows = {r["layer"]: r for r in layer_table(g)}
    conv2 = rows["conv2"]
    assert conv2["op"] == "Conv" and conv2["n_in"] == 3 * 3 * 4 and conv2["n_out"] == 6 and conv2["positions"] == 16
    assert conv2["nonzero_weights"] == int(np.count_nonzero(g.node("conv2").weight)) < conv2["n_weights"]
    assert conv2["macs"] == 16 * conv2["nonzero_weights"] and conv2["macs_saved_by_pruning"] > 0
    assert conv2["multiplications"] <= conv2["nonzero_weights"]
    b_a = g.infos()[g.node("conv2").inputs[0]].type.width
    assert conv2["bops"] == pytest.approx(16 * bops(36, 6, b_a, conv2["weight_bits"], conv2["sparsity"]))
    assert rows["bn1"]["op"] == "BatchNorm" and rows["bn1"]["positions"] == 144


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_latency_estimate_covers_convolutions(io_type):
    g = testing.jet_cnn()
    est = latency_estimate(g, HlsOptions(io_type=io_type))
    assert est["cycles"] == sum(est["per_layer"].values())
    per = est["per_layer"]
    if io_type == "io_parallel":  # one output position after the other
        assert per["conv1"] > 16 * 16 and per["conv2"] > 6 * 6 and per["relu1"] == 1
    else:  # one input pixel after the other
        assert per["conv1"] > 16 * 16 and per["conv2"] > 8 * 8 and per["relu1"] == 16 * 16 and per["fc1"] < 10
    assert est["initiation_interval"] >= 16 * 16


def test_graph_with_cnn_nodes_round_trips(tmp_path):
    g = testing.random_cnn(np.random.default_rng(8))
    g.save(tmp_path / "g.npz")
    again = ir.Graph.load(tmp_path / "g.npz")
    assert [type(n) for n in again.nodes] == [type(n) for n in g.nodes]
    x = testing.random_inputs(g, np.random.default_rng(0), 50)
    assert np.array_equal(again.predict(x), g.predict(x))
