"""The float twin of a fixed-point graph: float64 torch layers with the graph's weights.

Every node other than the requantizing ones (Input, Relu, Quantize) and the recurrent tables is exact in the
graph, and its values are short dyadic fractions that float64 holds exactly, so each such node's twin, fed
the graph's own input values, must give the graph's output values exactly: this pins down the twin's
layouts (channels-last), padding, strides, pooling and residual additions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeann import ir
from edgeann.float_twin import distance_to_float, float_twin
from edgeann.testing import random_cnn, random_inputs, random_mlp

REQUANTIZING = (ir.Input, ir.Relu, ir.Quantize)


def _values(graph: ir.Graph, x: np.ndarray) -> dict[str, torch.Tensor]:
    codes, infos = graph.execute(x, keep=True), graph.infos()
    return {k: torch.as_tensor(v.astype(np.float64) * infos[k].type.scale) for k, v in codes.items()}


@pytest.mark.parametrize("seed", range(40))
def test_every_exact_node_of_a_random_cnn_has_an_equal_twin(seed):
    rng = np.random.default_rng(seed)
    graph = random_cnn(rng, dims=1 + seed % 2)
    values = _values(graph, random_inputs(graph, rng, 12))
    twin = float_twin(graph)
    checked = []
    with torch.no_grad():
        for node, layer in zip(graph.nodes, twin.layers):
            if not isinstance(node, REQUANTIZING):
                got = layer(*[values[i] for i in node.inputs])
                assert np.array_equal(got.numpy(), values[node.name].numpy()), f"{type(node).__name__} {node.name}"
                checked.append(type(node).__name__)
    assert {"Conv", "Flatten", "Dense"} <= set(checked)


def test_random_cnns_cover_every_convolutional_node():
    """The seeds above meet every node type the CNN family lowers to."""
    seen = {type(n).__name__ for seed in range(40) for n in random_cnn(np.random.default_rng(seed), dims=1 + seed % 2).nodes}
    assert {"Conv", "BatchNorm", "MaxPool", "AvgPool", "Add", "Flatten", "Dense"} <= seen


def test_twin_of_a_lossless_graph_is_the_graph():
    """With no requantization between them, the whole twin and the graph compute the same values."""
    rng = np.random.default_rng(3)
    t = ir.FixedType(8, 4)
    graph = random_mlp(rng, (6, 5, 3), input_type=t, weight_types=[ir.FixedType(6, 4)] * 2,
                       act_types=[ir.FixedType(24, 12, False)], output_type=None, bias_bits=12)
    x = np.round(rng.uniform(-8, 7.9, size=(50, 6)) * 16) / 16  # on the input grid, in range
    with torch.no_grad():
        got = float_twin(graph)(torch.as_tensor(x)).numpy()
    assert np.array_equal(got, graph.predict(x))


def test_distance_to_float_reports_a_cnn():
    rng = np.random.default_rng(7)
    graph = random_cnn(rng, dims=2)
    t = graph.input.type
    x = rng.uniform(t.int_min * t.scale, t.int_max * t.scale, size=(64, *graph.input.shape))  # like data, finite
    labels = rng.integers(0, graph.infos()[graph.outputs[0]].shape[0], len(x))
    d = distance_to_float(graph, x, graph.predict(x), labels)
    assert d["available"] and d["n_samples"] == len(x)
    assert 0 <= d["mean_abs_diff"] <= d["max_abs_diff"]
    assert 0 <= d["accuracy_fixed_point"] <= 1 and 0 <= d["accuracy_float"] <= 1
