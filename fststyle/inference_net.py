"""An inference-only form of the Johnson transformer: same weights, same output (to float rounding), faster.

Why it is faster than ``TransformerNet.forward`` in eager mode (measured in ``bench/infer.py``, see
docs/stylize.md):
- channels_last throughout, so oneDNN convolutions run on NHWC without reorders. ``nn.InstanceNorm2d``
  returns NCHW for channels_last input (docs/design.md §Performance); the instance norm here keeps the layout.
- Instance norm is one multiply-add with per-image, per-channel scale and shift, fused with the ReLU,
  the residual add, or the nearest x2 upsampling, and written straight into the reflection-padded input
  buffer of the next convolution (no separate pad pass).
- The last 9x9 convolution has 3 output channels; oneDNN runs it more than 2x faster with a 4th, zero
  channel (measured: 670 ms -> 280 ms at 1024^2), which is then dropped.

It can also *record* the instance-norm statistics of one image and *reuse* them for others: tiling runs
every tile with the statistics of the whole (downscaled) image, so tiles agree with each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from fststyle.transformer import ConvNormAct, ResidualBlock, TransformerNet, UpsampleConv


def supports(net: TransformerNet) -> bool:
    """Whether ``net`` has the architecture this fast form implements (instance norm, nearest upsampling)."""
    return net.config.norm == "instance" and net.config.upsample == "nearest"


def _conv_of(layer: ConvNormAct) -> nn.Conv2d:
    return next(m for m in layer if isinstance(m, nn.Conv2d))


def _norm_of(layer: ConvNormAct) -> nn.InstanceNorm2d:
    return next(m for m in layer if isinstance(m, nn.InstanceNorm2d))


def _fill_reflection_border(padded: torch.Tensor, pad: int) -> torch.Tensor:
    """Fill the ``pad``-wide border of N,C,H+2p,W+2p from its interior, as ``F.pad(mode="reflect")`` would."""
    if pad == 0:
        return padded
    height, width = padded.shape[-2] - 2 * pad, padded.shape[-1] - 2 * pad
    for i in range(pad):  # rows first (interior columns), then full columns (corners included)
        padded[:, :, pad - 1 - i, pad:pad + width] = padded[:, :, pad + 1 + i, pad:pad + width]
        padded[:, :, pad + height + i, pad:pad + width] = padded[:, :, pad + height - 2 - i, pad:pad + width]
    for i in range(pad):
        padded[:, :, :, pad - 1 - i] = padded[:, :, :, pad + 1 + i]
        padded[:, :, :, pad + width + i] = padded[:, :, :, pad + width - 2 - i]
    return padded


def _padded_buffer(like: torch.Tensor, height: int, width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An uninitialised channels_last N,C,height+2p,width+2p buffer and a view of its interior."""
    n, c = like.shape[:2]
    buffer = torch.empty((n, c, height + 2 * pad, width + 2 * pad), dtype=like.dtype, device=like.device,
                         memory_format=torch.channels_last)
    return buffer, buffer[:, :, pad:pad + height, pad:pad + width]


def _upsample_nearest_into(source: torch.Tensor, out: torch.Tensor) -> None:
    """Nearest x2 upsampling of N,C,H,W ``source`` written into the (strided) N,C,2H,2W view ``out``."""
    n, c, h, w = source.shape
    s_n, s_c, s_h, s_w = out.stride()
    blocks = torch.as_strided(out, (n, c, h, 2, w, 2), (s_n, s_c, 2 * s_h, s_h, 2 * s_w, s_w), out.storage_offset())
    blocks.copy_(source.view(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2))


class InstanceNormStatistics:
    """Per-image scale and shift of every instance norm of one forward pass, in network order."""

    def __init__(self) -> None:
        self.scale_shift: list[tuple[torch.Tensor, torch.Tensor]] = []


class InferenceNet(nn.Module):
    """Fast eval-only forward of a ``TransformerNet`` (shares its parameters): N,3,H,W [0,1] -> N,3,H,W [0,1]."""

    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        if not supports(net):
            raise ValueError(f"InferenceNet needs norm='instance' and upsample='nearest', got {net.config}")
        self.net = net
        encoder, residuals, decoder = list(net.encoder), list(net.residuals), list(net.decoder)
        # (conv, norm) in forward order; the last convolution has no norm
        self.encoder_layers = [(_conv_of(layer), _norm_of(layer)) for layer in encoder]
        self.residual_layers = [
            [(_conv_of(layer), _norm_of(layer)) for layer in block.body] for block in residuals
            if isinstance(block, ResidualBlock)
        ]
        self.upsample_layers = [(_conv_of(up.conv), _norm_of(up.conv)) for up in decoder[:2]
                                if isinstance(up, UpsampleConv)]
        last = _conv_of(decoder[2])
        # the 4th output channel is all zero and dropped: oneDNN is much faster with 4 output channels than 3
        self.register_buffer("last_weight", F.pad(last.weight.detach(), (0, 0, 0, 0, 0, 0, 0, 1))
                             .contiguous(memory_format=torch.channels_last), persistent=False)
        self.register_buffer("last_bias", F.pad(last.bias.detach(), (0, 1)), persistent=False)
        self.last_padding = last.kernel_size[0] // 2
        self._recording: InstanceNormStatistics | None = None
        self._reusing: InstanceNormStatistics | None = None
        self._norm_index = 0
        self.to(memory_format=torch.channels_last)

    @contextmanager
    def recording(self) -> Iterator[InstanceNormStatistics]:
        """Within this block, forward passes store their instance-norm statistics in the yielded object."""
        self._recording = InstanceNormStatistics()
        try:
            yield self._recording
        finally:
            self._recording = None

    @contextmanager
    def reusing(self, statistics: InstanceNormStatistics) -> Iterator[None]:
        """Within this block, forward passes use ``statistics`` instead of their own (tiling)."""
        self._reusing = statistics
        try:
            yield
        finally:
            self._reusing = None

    def _scale_shift(self, x: torch.Tensor, norm: nn.InstanceNorm2d,
                     scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image, per-channel (scale, shift), each N,C,1,1, so that norm(x) = x * scale + shift.

        ``scratch`` (shaped like ``x``, about to be overwritten by the caller) holds x^2: no new allocation."""
        index = self._norm_index
        self._norm_index += 1
        if self._reusing is not None:
            scale, shift = self._reusing.scale_shift[index]
            return scale.to(x.dtype), shift.to(x.dtype)
        count = x.shape[-2] * x.shape[-1]
        # E[x] and E[x^2] in fp32; two fast reductions instead of the slow Welford pass of var_mean on NHWC
        squares = torch.mul(x, x, out=scratch) if x.dtype == torch.float32 else x.float().square()
        mean = x.sum(dim=(2, 3), keepdim=True, dtype=torch.float32) / count
        mean_square = squares.sum(dim=(2, 3), keepdim=True, dtype=torch.float32) / count
        variance = (mean_square - mean * mean).clamp_min_(0)
        scale = norm.weight.float().view(1, -1, 1, 1) * torch.rsqrt(variance + norm.eps)
        shift = norm.bias.float().view(1, -1, 1, 1) - mean * scale
        if self._recording is not None:
            self._recording.scale_shift.append((scale, shift))
        return scale.to(x.dtype), shift.to(x.dtype)

    def _conv(self, padded: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return F.conv2d(padded, conv.weight, conv.bias, conv.stride)

    def _norm_relu_padded(self, x: torch.Tensor, norm: nn.InstanceNorm2d, pad: int) -> torch.Tensor:
        """relu(instance_norm(x)) written into a reflection-padded buffer: N,C,H,W -> N,C,H+2p,W+2p."""
        padded, interior = _padded_buffer(x, x.shape[-2], x.shape[-1], pad)
        scale, shift = self._scale_shift(x, norm, scratch=interior)
        torch.addcmul(shift, x, scale, out=interior)
        interior.clamp_min_(0)
        return _fill_reflection_border(padded, pad)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        self._norm_index = 0
        x = self.net._pad(images).contiguous(memory_format=torch.channels_last)
        first_conv = self.encoder_layers[0][0]
        x = F.pad(x, [first_conv.kernel_size[0] // 2] * 4, mode="reflect")
        for conv, norm in self.encoder_layers:
            x = self._norm_relu_padded(self._conv(x, conv), norm, pad=1)
        # x: padded input of the first residual block; its interior is the block's shortcut
        for (conv_a, norm_a), (conv_b, norm_b) in self.residual_layers:
            shortcut = x[:, :, 1:-1, 1:-1]
            hidden = self._norm_relu_padded(self._conv(x, conv_a), norm_a, pad=1)
            body = self._conv(hidden, conv_b)
            x, interior = _padded_buffer(body, body.shape[-2], body.shape[-1], 1)
            scale, shift = self._scale_shift(body, norm_b, scratch=interior)
            torch.addcmul(shift, body, scale, out=interior)
            interior.add_(shortcut)
            x = _fill_reflection_border(x, 1)
        for index, (conv, norm) in enumerate(self.upsample_layers):
            source = x[:, :, 1:-1, 1:-1]
            h, w = source.shape[-2:]
            x, interior = _padded_buffer(source, 2 * h, 2 * w, 1)
            _upsample_nearest_into(source, interior)
            x = _fill_reflection_border(x, 1)
            pad = 1 if index + 1 < len(self.upsample_layers) else self.last_padding
            x = self._norm_relu_padded(self._conv(x, conv), norm, pad=pad)
        x = F.conv2d(x, self.last_weight, self.last_bias)[:, :3]
        return ((torch.tanh(x) + 1) / 2)[..., :height, :width].contiguous()
