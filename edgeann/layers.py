"""Layers the CNN family needs that Brevitas does not provide; each works on QuantTensors and tensors alike.

Layout: every artifact edgeann writes (the PyTorch model's input, ``model.onnx``, the firmware) takes
**channels-last** tensors, ``(n, *spatial, channels)``, like hls4ml. A CNN turns its input channels-first
for PyTorch's convolutions once (:class:`ChannelsFirst`) and back at its flatten
(:class:`ChannelsLastFlatten`), so the dense layer after it sees the channels-last order the firmware
uses and its weights need no permutation.

:class:`QuantBatchNorm` keeps batch normalization as its own fixed-point layer, ``x * s + t`` with
quantized per-channel ``s`` and ``t``; :class:`Residual` adds a block's input to its output.
"""

from __future__ import annotations

import torch
from brevitas.quant_tensor import QuantTensor
from torch import nn


def _value(x):
    return x.value if isinstance(x, QuantTensor) else x


class ChannelsFirst(nn.Module):
    """(n, *spatial, c) -> (n, c, *spatial), for PyTorch's convolutions and pooling."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(0, self.dims + 1, *range(1, self.dims + 1))


class ChannelsLastFlatten(nn.Module):
    """(n, c, *spatial) -> (n, spatial... x c): flattened in channels-last order, as the firmware stores it."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(0, *range(2, self.dims + 2), 1).flatten(1)


class Residual(nn.Module):
    """``after(x + body(x))``: a skip connection around ``body``, whose output has the shape of its input.

    The sum is exact (both terms are on power-of-two grids); ``after`` requantizes it (a quantized ReLU or
    identity)."""

    def __init__(self, body: nn.Sequential, after: nn.Module):
        super().__init__()
        self.body = body
        self.after = after

    def forward(self, x):
        return self.after(_value(x) + _value(self.body(x)))


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def fixed_point(v: torch.Tensor, bits: int, narrow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``v`` on a signed ``bits``-bit grid with one power-of-two scale covering max |v| (like
    :class:`edgeann.quant.FixedPointWeight`): returns (integer codes with a straight-through gradient, frac)."""
    max_int = 2 ** (bits - 1) - 1
    top = v.detach().abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    frac = -torch.ceil(torch.log2(top / max_int))
    codes = torch.clamp(round_ste(v * 2.0**frac), -max_int - (0 if narrow else 1), max_int)
    return codes, frac


class QuantBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization kept as a fixed-point layer: ``y = x * s + t`` per channel (axis 1), exact.

    ``s = gamma / sqrt(var + eps)`` is quantized like a weight (``scale_bits``, signed, narrow range, one
    power-of-two scale from max |s|, rounded to nearest) and ``t = beta - mean * s`` like a bias (``bias_bits``,
    its own power-of-two scale), in training (batch statistics, running statistics updated) as after it
    (running statistics), so QAT sees the arithmetic the firmware does. ``y`` is not requantized: the next
    layer (a quantized ReLU) does that. ``s`` and ``t`` are quantized in float32 whatever the module's dtype,
    so a float64 copy (the exactness check) computes with the same integers.
    """

    def __init__(self, channels: int, scale_bits: int, bias_bits: int):
        super().__init__(channels)
        self.scale_bits = scale_bits
        self.bias_bits = bias_bits

    def _check_input_dim(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected (n, {self.num_features}, ...) inputs, got {tuple(x.shape)}")

    def quantized(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(scale codes, scale frac, shift codes, shift frac) for the given statistics, computed in float32."""
        s = self.weight.float() / torch.sqrt(var.float() + self.eps)
        t = self.bias.float() - mean.float() * s
        s_codes, s_frac = fixed_point(s, self.scale_bits, narrow=True)
        t_codes, t_frac = fixed_point(t, self.bias_bits, narrow=False)
        return s_codes, s_frac, t_codes, t_frac

    def forward(self, x):
        v = _value(x)
        self._check_input_dim(v)
        if self.training:
            axes = [0, *range(2, v.dim())]
            mean, var = v.mean(axes), v.var(axes, unbiased=False)
            with torch.no_grad():
                n = v.numel() // v.shape[1]
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                unbiased = var.detach() * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        s_codes, s_frac, t_codes, t_frac = self.quantized(mean, var)
        shape = (1, -1) + (1,) * (v.dim() - 2)
        s = (s_codes * 2.0**-s_frac).to(v.dtype).view(shape)
        t = (t_codes * 2.0**-t_frac).to(v.dtype).view(shape)
        if torch.onnx.is_in_onnx_export():  # frozen: export a Mul and an Add of constants, not their derivation
            s, t = (torch.as_tensor(c.detach().cpu().numpy()) for c in (s, t))
        return v * s + t
