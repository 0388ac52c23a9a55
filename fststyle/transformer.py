"""The image transformation network of Johnson, Alahi & Fei-Fei (2016), "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", supplementary Table 1, with the fixes the field
adopted since: instance norm (Ulyanov et al. 2016) instead of batch norm, reflection padding, and
nearest-neighbour upsampling followed by a convolution instead of transposed convolutions
(Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch")
UPSAMPLINGS = ("nearest", "transposed")
#: Bounds on what a config (also one read from an untrusted model file) may ask for. The field's networks
#: stay far below them: Johnson et al. 2016 use 5 residual blocks of 128 channels, the ResNet generator of
#: CycleGAN (Zhu et al. 2017) 9 blocks of 256. 64 blocks of 1024 channels (4 * MAX_BASE_WIDTH) is already
#: a 1.2e9-parameter (4.8 GB) network; a larger ask is a broken or hostile file, not a style model.
MAX_RESIDUAL_BLOCKS = 64
MAX_BASE_WIDTH = 256


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture arguments; stored in exported style models so they can be rebuilt exactly."""

    base_channels: int = 32  # Johnson: 32 -> 64 -> 128; a width multiplier scales all three
    width: float = 1.0
    residual_blocks: int = 5
    norm: str = "instance"
    upsample: str = "nearest"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {self.upsample!r}")
        if not math.isfinite(self.width) or self.width <= 0 or self.base_channels < 1:
            raise ValueError(f"width must be a finite number > 0 and base_channels >= 1, got width={self.width}, "
                             f"base_channels={self.base_channels}")
        if not 0 <= self.residual_blocks <= MAX_RESIDUAL_BLOCKS:
            raise ValueError(f"residual_blocks must be in 0..{MAX_RESIDUAL_BLOCKS}, got {self.residual_blocks}")
        if self.base_channels * self.width > MAX_BASE_WIDTH:
            raise ValueError(f"base_channels * width must be at most {MAX_BASE_WIDTH} (the first level's channels), "
                             f"got {self.base_channels} * {self.width}")

    def channels(self) -> tuple[int, int, int]:
        """Channel widths of the three resolution levels (full, 1/2, 1/4)."""
        c = max(4, round(self.base_channels * self.width))
        return c, 2 * c, 4 * c

    def to_dict(self) -> dict:
        return asdict(self)


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters, same output) that can keep the memory layout, record its
    statistics or reuse recorded ones, and passes no gradient into an image's maps when every one of them is
    constant: N,C,H,W -> N,C,H,W.

    Uniform images: a uniform training image (a blank frame, an all-black scan) makes every map of every
    layer constant. The norm turns a constant map into its bias whatever the constant, and all the parameters
    upstream can only move a constant map by a constant, so their true gradient is exactly zero. Autograd
    reaches that zero only by cancellation: each norm multiplies the incoming gradient by
    1/sqrt(var + eps) = 1/sqrt(1e-5) = 316 (var = 0) and subtracts its mean, and the terms cancel only when
    the weight gradients are summed. Through the 15 norms of the network that is 316^15, about 3e37, times
    the output's gradient: float32 overflows to inf, inf - inf gives NaN in the first convolution's
    gradients, Adam writes NaN into the weights and every later loss is NaN. Detaching the input of such an
    image makes those gradients the exact zero; the norm's own weight and bias still learn, and images with
    any variation are untouched.

    Inference (``TransformerNet.fast_inference``, ``recording``, ``reusing``; never under TorchScript or an
    exporter, which see plain ``F.instance_norm``): the norm is one multiply-add ``x * scale + shift`` with
    per-image, per-channel scale and shift from E[x] and E[x^2] in fp32 (two fast reductions instead of the
    slow Welford pass on NHWC), written into one buffer of ``x``'s layout. ``F.instance_norm`` returns NCHW
    for channels_last input (docs/design.md §Performance), which costs a reorder before every convolution. Recording keeps
    (scale, shift); reusing applies recorded ones, so tiles of an image share the whole image's statistics.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True)
        self.keep_layout = False
        #: "own": statistics of the input; "record": also keep them in ``statistics``; "reuse": apply ``statistics``
        self.statistics_mode = "own"
        self.statistics: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.requires_grad:
            uniform = (x.amax(dim=(2, 3)) == x.amin(dim=(2, 3))).all(dim=1)  # N: every channel is constant
            x = torch.where(uniform[:, None, None, None], x.detach(), x)
        if torch.jit.is_scripting() or not (self.keep_layout or self.statistics_mode != "own"):
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return self._scale_and_shift(x)

    @torch.jit.unused
    def _scale_and_shift(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale + shift`` in ``x``'s layout, with this input's, recorded or reused statistics."""
        out = None if x.requires_grad else torch.empty_like(x)  # out= writes do not support autograd
        if self.statistics_mode == "reuse":
            if self.statistics is None:
                raise RuntimeError("reusing instance-norm statistics that were never recorded")
            scale, shift = self.statistics
        else:
            count = x.shape[-2] * x.shape[-1]
            squares = torch.mul(x, x, out=out) if x.dtype == torch.float32 else x.float().square()
            mean = x.sum(dim=(2, 3), keepdim=True, dtype=torch.float32) / count
            mean_square = squares.sum(dim=(2, 3), keepdim=True, dtype=torch.float32) / count
            variance = (mean_square - mean * mean).clamp_min_(0)
            scale = self.weight.float().view(1, -1, 1, 1) * torch.rsqrt(variance + self.eps)
            shift = self.bias.float().view(1, -1, 1, 1) - mean * scale
            if self.statistics_mode == "record":
                self.statistics = (scale, shift)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype), out=out)


class OutputConv(nn.Conv2d):
    """The last convolution (3 output channels); with ``four_channels`` it runs with a 4th, all-zero output
    channel that is then dropped: oneDNN is more than 2x faster with 4 output channels than 3 (measured:
    670 ms -> 280 ms at 1024^2, full width, 2 cores). N,Cin,H,W -> N,3,H',W'."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride)
        self.four_channels = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or not self.four_channels or self.out_channels != 3:
            return self._conv_forward(x, self.weight, self.bias)
        return self._four_channel_forward(x)

    @torch.jit.unused
    def _four_channel_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.pad(self.weight, (0, 0, 0, 0, 0, 0, 0, 1)).contiguous(memory_format=torch.channels_last)
        bias = F.pad(self.bias, (0, 1)) if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride)[:, :3]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return InstanceNorm2d(channels)
    return nn.BatchNorm2d(channels)


class ConvNormAct(nn.Sequential):
    """Reflection pad + conv (+ norm + ReLU): N,Cin,H,W -> N,Cout,H/stride,W/stride."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = "instance",
                 relu: bool = True) -> None:
        conv = nn.Conv2d(cin, cout, kernel, stride) if norm is not None else OutputConv(cin, cout, kernel, stride)
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), conv]
        if norm is not None:
            layers.append(_norm(norm, cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity shortcut (He et al. 2016; Gross & Wilber 2016): N,C,H,W -> same."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, norm=norm),
            ConvNormAct(channels, channels, 3, norm=norm, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Module):
    """x2 upsampling then conv-norm-ReLU: N,Cin,H,W -> N,Cout,2H,2W."""

    def __init__(self, cin: int, cout: int, norm: str, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = ConvNormAct(cin, cout, 3, norm=norm)
        else:  # the paper's fractionally strided convolution
            self.conv = nn.Sequential(
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                _norm(norm, cout),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # a float: TorchScript rejects an int
        return self.conv(x)


class TransformerNet(nn.Module):
    """Johnson et al. feed-forward stylisation network: N,3,H,W in [0,1] -> N,3,H,W in [0,1], any H,W."""

    #: total down-sampling factor; inputs are padded to a multiple of this and cropped back
    STRIDE = 4
    #: smallest padded side for which every reflection pad in the network is valid (2 px at 1/4 scale)
    MIN_SIZE = 8
    __constants__ = ["STRIDE", "MIN_SIZE"]  # TorchScript reads class attributes only when named here

    def __init__(self, config: TransformerConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else TransformerConfig(**kwargs)
        c1, c2, c3 = self.config.channels()
        norm = self.config.norm
        self.encoder = nn.Sequential(
            ConvNormAct(3, c1, 9, norm=norm),
            ConvNormAct(c1, c2, 3, stride=2, norm=norm),
            ConvNormAct(c2, c3, 3, stride=2, norm=norm),
        )
        self.residuals = nn.Sequential(*(ResidualBlock(c3, norm) for _ in range(self.config.residual_blocks)))
        self.decoder = nn.Sequential(
            UpsampleConv(c3, c2, norm, self.config.upsample),
            UpsampleConv(c2, c1, norm, self.config.upsample),
            ConvNormAct(c1, 3, 9, norm=None, relu=False),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # export-safe: no data-dependent branch, padding a function of the input size (ONNX, TorchScript)
        height, width = images.shape[-2], images.shape[-1]
        x = self._pad(images)
        x = self.decoder(self.residuals(self.encoder(x)))
        # Johnson et al. bound the output with a scaled tanh (150*tanh on 0-255 images);
        # on [0,1] images the same bound is (tanh + 1) / 2.
        x = (torch.tanh(x) + 1) / 2
        return x[..., :height, :width]

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of STRIDE and at least MIN_SIZE: N,3,H,W -> N,3,H',W'."""
        height, width = images.shape[-2], images.shape[-1]
        # (n + s - 1) // s, not -(-n // s): the exporter's symbolic sizes must stay non-negative
        pad_h = max(self.MIN_SIZE, (height + self.STRIDE - 1) // self.STRIDE * self.STRIDE) - height
        pad_w = max(self.MIN_SIZE, (width + self.STRIDE - 1) // self.STRIDE * self.STRIDE) - width
        # Reflection needs the pad to be smaller than the side; replicate covers tiny images.
        mode = "reflect" if height > pad_h and width > pad_w else "replicate"
        return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)

    def fast_inference(self, enabled: bool = True) -> TransformerNet:
        """Switch to (or from) the fast CPU inference form: channels_last weights, layout-keeping instance
        norms and a 4-channel last convolution; same output to float rounding. Not for training or export."""
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        for module in self.modules():
            if isinstance(module, InstanceNorm2d):
                module.keep_layout = enabled
            elif isinstance(module, OutputConv):
                module.four_channels = enabled
        return self

    def instance_norms(self) -> list[InstanceNorm2d]:
        """The network's instance norms in forward order (empty for batch norm)."""
        return [module for module in self.modules() if isinstance(module, InstanceNorm2d)]

    @contextmanager
    def recording(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Within this block, a forward pass records its instance-norm (scale, shift) pairs, each N,C,1,1
        in forward order, into the yielded list (filled when the block ends)."""
        statistics: list[tuple[torch.Tensor, torch.Tensor]] = []
        norms = self.instance_norms()
        for norm in norms:
            norm.statistics_mode, norm.statistics = "record", None
        try:
            yield statistics
        finally:
            statistics.extend(norm.statistics for norm in norms if norm.statistics is not None)
            for norm in norms:
                norm.statistics_mode, norm.statistics = "own", None

    @contextmanager
    def reusing(self, statistics: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """Within this block, forward passes use recorded ``statistics`` instead of their own (tiling)."""
        norms = self.instance_norms()
        if len(statistics) != len(norms):
            raise ValueError(f"{len(statistics)} recorded statistics for a network with {len(norms)} instance norms")
        for norm, pair in zip(norms, statistics, strict=True):
            norm.statistics_mode, norm.statistics = "reuse", pair
        try:
            yield
        finally:
            for norm in norms:
                norm.statistics_mode, norm.statistics = "own", None
