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
    mods: OrderedDict[str, nn.Module] = OrderedDict(input=layers.input())
    width = input_shape[0]
    for i, hidden in enumerate(cfg.hidden, start=1):
        mods[f"fc{i}"] = layers.linear(f"fc{i}", width, hidden)
        mods[f"relu{i}"] = layers.relu(f"fc{i}")
        width = hidden
    last = f"fc{len(cfg.hidden) + 1}"
    mods[last] = layers.linear(last, width, n_classes)
    mods["output"] = layers.output()
    return nn.Sequential(mods)
