"""The CNN family: channels-last input -> the flow's layers (convolutions, pooling, batch normalization,
residual blocks, flatten, dense) -> dense -> output quantizer.

The network takes channels-last samples like every other artifact, turns them channels-first for
PyTorch's convolutions and back at its flatten (see :mod:`edgeann.layers`). Shapes are followed layer by
layer here, so an impossible stack stops before training with the key of the layer at fault.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from torch import nn

from edgeann.config import CNNConfig, ConvLayer, PoolLayer, ResidualLayer
from edgeann.errors import EdgeannError
from edgeann.models import register_model


@dataclass
class _State:
    """What the next layer receives: its channels-last shape and what is known of its values."""

    shape: tuple[int, ...]
    quantized: bool = True  # on a quantizer's grid (a Brevitas layer with a bias needs that)
    signed: bool = True
    after: str = "input"  # the last weighted layer: a ReLU takes its activation bits
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def flat(self) -> bool:
        return len(self.shape) == 1

    def name(self, kind: str) -> str:
        """conv1, conv2, ...: unique in the whole network, residual blocks included (per-layer bit widths use them)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}{self.counts[kind]}"


def _per_axis(value, dims: int, key: str, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    if len(value) != dims:
        raise EdgeannError(f"{key}: {what} {value} has {len(value)} entries but the data has {dims} spatial axes")
    return tuple(value)


def _windowed(key: str, state: _State, window: tuple[int, ...], stride: tuple[int, ...],
              pads: tuple[int, ...]) -> tuple[int, ...]:
    spatial = state.shape[:-1]
    out = []
    for n, k, s, p in zip(spatial, window, stride, pads):
        if n + p < k:
            raise EdgeannError(f"{key}: window {list(window)} is larger than its (padded) input {list(spatial)}")
        out.append((n + p - k) // s + 1)
    return tuple(out)


def _layers(specs, key: str, layers, state: _State, dims: int) -> Iterator[tuple[str, nn.Module]]:
    """The modules of ``specs`` (a list of layer sections at ``key``), updating ``state`` as they go."""
    for i, spec in enumerate(specs):
        where = f"{key}[{i}] ({spec.type})"
        if spec.type in ("conv", "max_pool", "avg_pool", "batchnorm") and state.flat:
            raise EdgeannError(f"{where}: needs a (..., channels) input, but its input is already flat")
        if spec.type in ("conv", "dense") and not state.quantized:
            raise EdgeannError(f"{where}: its input is not quantized; put a relu (or a pooling after one) before it")
        if isinstance(spec, ConvLayer):
            name = state.name("conv")
            kernel = _per_axis(spec.kernel, dims, where, "kernel")
            stride = _per_axis(spec.stride, dims, where, "stride")
            if spec.padding == "same":
                pads, padding = tuple(k - 1 for k in kernel), "same"
            else:
                per_side = _per_axis(0 if spec.padding == "valid" else spec.padding, dims, where, "padding")
                pads, padding = tuple(2 * p for p in per_side), per_side
            out = _windowed(where, state, kernel, stride, pads)
            yield name, layers.conv(name, dims, state.shape[-1], spec.filters, kernel, stride, padding)
            state.shape, state.quantized, state.signed, state.after = (*out, spec.filters), False, True, name
        elif isinstance(spec, PoolLayer):
            name = state.name("pool")
            size = _per_axis(spec.size, dims, where, "size")
            stride = _per_axis(spec.stride if spec.stride is not None else spec.size, dims, where, "stride")
            out = _windowed(where, state, size, stride, (0,) * dims)
            state.shape = (*out, state.shape[-1])
            if spec.type == "max_pool":
                yield name, layers.max_pool(dims, size, stride)
            else:  # the exact mean, requantized with this layer's activation bits
                yield name, layers.avg_pool(dims, size, stride)
                yield f"{name}_q", layers.requantize(name, signed=state.signed)
                state.quantized = True
        elif spec.type == "batchnorm":
            name = state.name("bn")
            yield name, layers.batchnorm(name, dims, state.shape[-1])
            state.quantized, state.signed, state.after = False, True, name
        elif spec.type == "relu":
            yield state.name("relu"), layers.relu(state.after)
            state.quantized, state.signed = True, False
        elif spec.type == "flatten":
            if state.flat:
                raise EdgeannError(f"{where}: its input is already flat")
            yield state.name("flatten"), layers.flatten(dims)
            state.shape = (_size(state.shape),)
        elif spec.type == "dense":
            if not state.flat:
                raise EdgeannError(f"{where}: needs a flat input, got shape {list(state.shape)}; put a flatten before it")
            name = state.name("fc")
            yield name, layers.linear(name, state.shape[0], spec.units)
            state.shape, state.quantized, state.signed, state.after = (spec.units,), False, True, name
        elif isinstance(spec, ResidualLayer):
            name = state.name("res")
            entry = replace(state)
            body = nn.Sequential(OrderedDict(_layers(spec.layers, f"{where}.layers", layers, state, dims)))
            if state.shape != entry.shape:
                raise EdgeannError(f"{where}: its layers turn shape {list(entry.shape)} into {list(state.shape)}; "
                                   "a residual connection adds tensors of one shape")
            if spec.activation == "relu":
                after, state.signed = layers.relu(name), False
            else:
                after, state.signed = layers.requantize(name, signed=True), True
            yield name, layers.residual(body, after)
            state.quantized = True


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@register_model("cnn")
def build_cnn(cfg: CNNConfig, layers, input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    if len(input_shape) not in (2, 3):
        raise EdgeannError(
            f"the cnn family takes channels-last samples, (height, width, channels) or (length, channels), but the data "
            f"has per-sample shape {input_shape}"
        )
    dims = len(input_shape) - 1
    state = _State(tuple(input_shape))
    mods: OrderedDict[str, nn.Module] = OrderedDict(input=layers.input(), channels_first=layers.channels_first(dims))
    mods.update(_layers(cfg.layers, "model.layers", layers, state, dims))
    if not state.flat:
        raise EdgeannError(f"model.layers: the last layer leaves shape {list(state.shape)}; end with a flatten (and dense "
                           "layers) before the output layer")
    if not state.quantized:
        raise EdgeannError("model.layers: the output layer's input is not quantized; end with a relu")
    last = state.name("fc")
    mods[last] = layers.linear(last, state.shape[0], n_classes)
    mods["output"] = layers.output()
    return nn.Sequential(mods)
