"""The MLP family: input -> [dense -> ReLU] x N -> dense -> output quantizer."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from edgeann.config import MLPConfig
from edgeann.errors import EdgeannError
from edgeann.models import register_model


@register_model("mlp")
def build_mlp(cfg: MLPConfig, layers, input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if len(input_shape) != 1:
        raise EdgeannError(f"the mlp family takes flat feature vectors, but the data has per-sample shape {input_shape}")
    return nn.Sequential(OrderedDict(input=layers.input(), **dense_head(layers, input_shape[0], cfg.hidden, n_classes)))


def dense_head(layers, width: int, hidden: list[int], n_classes: int) -> OrderedDict[str, nn.Module]:
    """[fc_i -> relu_i] for each hidden width, then the last dense layer and the output quantizer: the MLP, and
    the classifier after another family's feature layers (same names, so lowering and checkpoints match)."""
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    for i, units in enumerate(hidden, start=1):
        mods[f"fc{i}"] = layers.linear(f"fc{i}", width, units)
        mods[f"relu{i}"] = layers.relu(f"fc{i}")
        width = units
    last = f"fc{len(hidden) + 1}"
    mods[last] = layers.linear(last, width, n_classes)
    mods["output"] = layers.output()
    return mods
