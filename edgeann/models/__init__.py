"""The model registry: one contract for every family (MLP, CNN, GRU).

A family registers a builder with :func:`register_model`; the builder receives the family's
config, a layer factory (quantized or float, see :mod:`edgeann.quant`), the per-sample input
shape and the number of classes, and returns a named :class:`torch.nn.Sequential`.
:func:`create_model` wraps it in an :class:`EdgeModel`, the surface the trainer, the pruner and
the exporter rely on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgeann.config import QuantConfig
from edgeann.quant import FloatLayers, QuantLayers
from edgeann.registry import Registry

Builder = Callable[..., nn.Sequential]
_REGISTRY = Registry("model family")
register_model = _REGISTRY.register


def list_models() -> list[str]:
    return sorted(_REGISTRY)


class EdgeModel(nn.Module):
    """A named stack of layers with the metadata every stage needs."""

    def __init__(self, family: str, layers: nn.Sequential, input_shape: tuple[int, ...], n_classes: int, quantized: bool):
        super().__init__()
        self.family = family
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.quantized = quantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def prunable(self) -> dict[str, nn.Module]:
        """Layers whose weight matrices (or convolution kernels) are pruned and counted, by name (e.g. ``fc1``).

        Layers inside a block (a residual connection) go by their own name, which is unique in the network."""
        return {
            name.rpartition(".")[2]: m
            for name, m in self.layers.named_modules()
            if name and isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2
        }


def create_model(cfg, input_shape: tuple[int, ...], n_classes: int, quant: QuantConfig | None) -> EdgeModel:
    """Build the family ``cfg.family``; ``quant=None`` gives the float twin of the same network."""
    from edgeann.models import cnn, mlp, recurrent  # noqa: F401  (registers the families)

    factory = QuantLayers(quant) if quant is not None else FloatLayers()
    layers = _REGISTRY[cfg.family](cfg, factory, tuple(input_shape), n_classes)
    model = EdgeModel(cfg.family, layers, input_shape, n_classes, quantized=quant is not None)
    model.quant_layer_names = list(getattr(factory, "layer_names", []))
    return model


def check_layer_names(model: EdgeModel, quant, pruning) -> None:
    """Layer names in ``quantization.layers`` and ``pruning.exclude`` must exist in ``model``: a typo would
    otherwise be ignored silently and train the baseline."""
    from edgeann.errors import EdgeannError

    checks = [("pruning.exclude", pruning.exclude, list(model.prunable()))]
    if model.quantized:
        checks.insert(0, ("quantization.layers", list(quant.layers), model.quant_layer_names))
    for key, asked, known in checks:
        unknown = [n for n in asked if n not in known]
        if unknown:
            raise EdgeannError(f"{key}: no layer named {unknown[0]} in this {model.family} model "
                               f"(its layers: {', '.join(known) or 'none'})")
