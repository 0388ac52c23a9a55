"""The image transformation network of Johnson, Alahi & Fei-Fei (2016), "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", supplementary Table 1, with the fixes the field
adopted since: instance norm (Ulyanov et al. 2016) instead of batch norm, reflection padding, and
nearest-neighbour upsampling followed by a convolution instead of transposed convolutions
(Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").

With ``styles`` > 1 its instance norms are conditional (Dumoulin, Shlens & Kudlur 2017, "A Learned
Representation for Artistic Style"): every convolution is shared, each style has its own scale and shift,
and a forward pass takes style weights N,S that mix them (one-hot: one style; convex: a blend).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fststyle.nets.transformer_config import TransformerConfig

#: an output value within this of 0 or 1 sits where the output bound's slope, (1 - tanh^2) / 2 = 2 * margin,
#: is 2e-3 or less: the losses' gradients barely reach it, so a region pushed there stays, a solid black or
#: white blob (the GPU-trained models in checkpoints/README.md: pre-tanh values down to -854 in their blobs)
SATURATION_MARGIN = 1e-3


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

    def __init__(self, num_features: int, styles: int = 1) -> None:
        super().__init__(num_features, affine=True)
        #: > 1: conditional instance norm; ``weight`` and ``bias`` are S,C (one row per style), else C
        self.styles = styles
        if styles > 1:
            self.weight = nn.Parameter(torch.ones(styles, num_features))
            self.bias = nn.Parameter(torch.zeros(styles, num_features))
        self.takes_style_weights = True  # forward(x, style_weights); see StyledSequential
        self.keep_layout = False
        #: "own": statistics of the input; "record": also keep them in ``statistics``; "reuse": apply ``statistics``
        self.statistics_mode = "own"
        self.statistics: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        """N,C,H,W -> N,C,H,W; ``style_weights`` N,S or 1,S mix the styles' scale and shift (styles > 1 only)."""
        if self.training and x.requires_grad:
            uniform = (x.amax(dim=(2, 3)) == x.amin(dim=(2, 3))).all(dim=1)  # N: every channel is constant
            x = torch.where(uniform[:, None, None, None], x.detach(), x)
        weight, bias = self.style_affine(style_weights)
        if torch.jit.is_scripting() or not (self.keep_layout or self.statistics_mode != "own"):
            if self.styles == 1:
                return F.instance_norm(x, None, None, weight, bias, True, 0.0, self.eps)
            normalised = F.instance_norm(x, None, None, None, None, True, 0.0, self.eps)
            return torch.addcmul(bias[:, :, None, None], normalised, weight[:, :, None, None])
        return self._scale_and_shift(x, weight, bias)

    def style_affine(self, style_weights: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: UP045
        """(scale, shift): C and C for one style, else N,C each, the ``style_weights`` N,S mix of the rows."""
        if self.styles == 1:
            return self.weight, self.bias
        if style_weights is None or style_weights.dim() != 2 or style_weights.shape[1] != self.styles:
            raise ValueError(f"this network holds {self.styles} styles: pass style_weights of shape N,{self.styles} "
                             "(one-hot rows choose a style, convex rows blend)")
        style_weights = style_weights.to(self.weight.dtype)
        return style_weights @ self.weight, style_weights @ self.bias

    @torch.jit.unused
    def _scale_and_shift(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x * scale + shift`` in ``x``'s layout, with this input's, recorded or reused statistics."""
        # out= writes support neither autograd nor Inductor, which fuses the reductions, the multiply-add and
        # the ReLU into one pass in x's layout itself
        out = None if x.requires_grad or torch.compiler.is_compiling() else torch.empty_like(x)
        if self.statistics_mode == "reuse":
            if self.statistics is None:
                raise RuntimeError("reusing instance-norm statistics that were never recorded")
            scale, shift = self.statistics
        else:
            count = x.shape[-2] * x.shape[-1]
            mean = x.sum(dim=(2, 3), keepdim=True, dtype=torch.float32) / count
            mean_square = _channel_sums_of_squares(x, out) / count
            variance = (mean_square - mean * mean).clamp_min_(0)
            channels = x.shape[1]
            scale = weight.float().reshape(-1, channels, 1, 1) * torch.rsqrt(variance + self.eps)
            shift = bias.float().reshape(-1, channels, 1, 1) - mean * scale
            if self.statistics_mode == "record":
                self.statistics = (scale, shift)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype), out=out)


def _channel_sums_of_squares(x: torch.Tensor, scratch: torch.Tensor | None) -> torch.Tensor:
    """N,C,H,W -> N,C,1,1 float32: the sum over H, W of x^2 per image and channel.

    With a ``scratch`` buffer (eager inference: no autograd, no Inductor) on NHWC float32 (the CPU's fast form):
    the diagonal of the N,C,C Gram matrix of the N,HW,C view, one matrix product that never writes x^2 (2.5x
    faster than x*x then a sum at 32 channels and 1024^2, 2x at 64 x 512^2, the same at 128 x 256^2; 2 cores).
    Otherwise (Inductor, autograd, NCHW, half precision): x^2 summed, in ``scratch`` when given; Inductor fuses
    it into one pass."""
    batch, channels = x.shape[0], x.shape[1]
    if scratch is not None and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last):
        rows = x.permute(0, 2, 3, 1).reshape(batch, -1, channels)  # a view: NHWC memory is N,HW,C
        gram = torch.bmm(rows.transpose(1, 2), rows)
        return gram.diagonal(dim1=1, dim2=2).reshape(batch, channels, 1, 1)
    squares = torch.mul(x, x, out=scratch) if x.dtype == torch.float32 else x.float().square()
    return squares.sum(dim=(2, 3), keepdim=True, dtype=torch.float32)


class DemodulatedConv2d(nn.Conv2d):
    """A convolution whose weights are demodulated before use (Karras et al. 2020, "Analyzing and Improving the
    Image Quality of StyleGAN", section 2.2, eq. 3): each output channel's weights are divided by their L2
    norm and multiplied by a learned ``gain``, so the scale of the output is set by the weights alone, as for
    unit-variance inputs, and no statistic of the data normalises it. StyleGAN2 replaced instance norm so
    because the generator learned to make a strong local spike that dominates the norm's statistics and so
    scales the signal everywhere else; here no such lever exists. With one style this is weight normalisation
    (Salimans & Kingma 2016). N,Cin,H,W -> N,Cout,H',W'."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, gain: float = 1.0) -> None:
        super().__init__(cin, cout, kernel, stride)
        self.gain = nn.Parameter(torch.full((cout,), gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1e-8: StyleGAN2's epsilon under the square root (their official code, ``modulated_conv2d``)
        scale = self.gain * torch.rsqrt(self.weight.square().sum(dim=(1, 2, 3)) + 1e-8)
        return self._conv_forward(x, self.weight * scale[:, None, None, None], self.bias)


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


def _norm(kind: str, channels: int, styles: int) -> nn.Module:
    if kind == "instance":
        return InstanceNorm2d(channels, styles)
    return nn.BatchNorm2d(channels)


class StyledSequential(nn.Sequential):
    """``nn.Sequential`` that hands the style weights N,S to the layers that take them: N,C,H,W -> N,C',H',W'.
    (A Sequential keeps the state-dict names of the single-style network, so its files load unchanged.)"""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        #: what marks a layer that takes style weights (an instance attribute: TorchScript's ``isinstance`` and
        #: ``hasattr`` see neither subclasses nor class attributes)
        self.takes_style_weights = True

    def forward(self, x: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        for layer in self:
            if hasattr(layer, "takes_style_weights"):
                x = layer(x, style_weights)
            else:
                x = layer(x)
        return x


class ConvNormAct(StyledSequential):
    """Reflection pad + conv (+ norm + ReLU): N,Cin,H,W -> N,Cout,H/stride,W/stride. ``norm=None``: the output
    layer. ``norm="demodulated"``: the norm is the convolution's own demodulation (the output layer's too, as
    every convolution of StyleGAN2 is modulated); its gain starts at sqrt(2) before a ReLU, which keeps the
    second moment of unit-variance maps (He et al. 2015), else at 1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = "instance",
                 relu: bool = True, styles: int = 1) -> None:
        if norm is None:
            conv: nn.Conv2d = OutputConv(cin, cout, kernel, stride)
        elif norm == "demodulated":
            conv = DemodulatedConv2d(cin, cout, kernel, stride, gain=math.sqrt(2) if relu else 1.0)
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride)
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), conv]
        if norm not in (None, "demodulated"):
            layers.append(_norm(norm, cout, styles))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity shortcut (He et al. 2016; Gross & Wilber 2016): N,C,H,W -> same."""

    def __init__(self, channels: int, norm: str, styles: int = 1) -> None:
        super().__init__()
        self.takes_style_weights = True  # see StyledSequential
        self.body = StyledSequential(
            ConvNormAct(channels, channels, 3, norm=norm, styles=styles),
            ConvNormAct(channels, channels, 3, norm=norm, relu=False, styles=styles),
        )
        if norm == "demodulated":
            # Each block starts as the identity, as zeroing the scale of each block's last norm does (Goyal et al.
            # 2017, "Accurate, Large Minibatch SGD", section 5.1): with no norm to rescale their sum, the maps
            # grew 1.4x per block at initialisation.
            nn.init.zeros_(self.body[1][1].gain)

    def forward(self, x: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        return x + self.body(x, style_weights)


#: which rows (and columns) of a 3x3 kernel fall on each low-resolution row after a nearest 2x upsample, for the
#: output's even (phase 0) and odd (phase 1) rows: phase 0 reads rows i-1 (kernel row 0) and i (rows 1 and 2),
#: phase 1 reads rows i (kernel rows 0 and 1) and i+1 (row 2)
SUBPIXEL_ROWS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)),
                 ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def subpixel_kernels(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution's weight Cout,Cin,3,3 -> the 2x2 kernels 4*Cout,Cin,2,2 that give its output on a nearest
    2x upsampled input, one block of Cout per output phase (row parity, column parity) (Aitken et al. 2017,
    "Checkerboard artifact free sub-pixel convolution", arXiv 1707.02937): 16 multiply-adds per low-resolution
    pixel and channel pair instead of 36."""
    rows = torch.tensor(SUBPIXEL_ROWS, dtype=weight.dtype, device=weight.device)
    kernels = torch.einsum("apk,oikl,bql->aboipq", rows, weight, rows)  # 2,2,Cout,Cin,2,2
    return kernels.reshape(4 * weight.shape[0], weight.shape[1], 2, 2)


class UpsampleConv(nn.Module):
    """x2 upsampling then conv-norm-ReLU: N,Cin,H,W -> N,Cout,2H,2W.

    ``subpixel`` (set by ``TransformerNet.fast_inference``): the nearest upsample and the 3x3 convolution run as
    one 2x2 convolution with four output phases on the small input, interleaved into the large output; the
    upsampled tensor is never made. Reflection padding of the upsampled image is replicate padding of the
    small one, so the output is the same to float rounding, from the same stored weights."""

    def __init__(self, cin: int, cout: int, norm: str, mode: str, styles: int = 1) -> None:
        super().__init__()
        self.takes_style_weights = True  # see StyledSequential
        self.mode = mode
        self.subpixel = False
        if mode == "nearest":
            self.conv = ConvNormAct(cin, cout, 3, norm=norm, styles=styles)
        else:  # the paper's fractionally strided convolution
            self.conv = StyledSequential(
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                _norm(norm, cout, styles),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        if self.subpixel and not self.training and not torch.jit.is_scripting():
            return self._subpixel_forward(x, style_weights)
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # a float: TorchScript rejects an int
        return self.conv(x, style_weights)

    def can_run_subpixel(self) -> bool:
        """Nearest upsampling into a plain convolution (not the transposed one, not a demodulated one)."""
        return self.mode == "nearest" and type(self.conv[1]) is nn.Conv2d

    @torch.jit.unused
    def _subpixel_forward(self, x: torch.Tensor, style_weights: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045
        conv = self.conv[1]
        channels, (height, width) = conv.out_channels, x.shape[-2:]
        phases = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), subpixel_kernels(conv.weight),
                          conv.bias.repeat(4))  # N,4*Cout,H+1,W+1: phase (a, b) is rows a.., columns b..
        memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        out = x.new_empty((x.shape[0], channels, 2 * height, 2 * width)).contiguous(memory_format=memory_format)
        for phase in range(4):
            a, b = divmod(phase, 2)
            out[:, :, a::2, b::2] = phases[:, phase * channels:(phase + 1) * channels, a:a + height, b:b + width]
        for layer in list(self.conv)[2:]:  # the norm and the ReLU
            out = layer(out, style_weights) if getattr(layer, "takes_style_weights", False) else layer(out)
        return out


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
        #: training only: the smallest slope the output bound passes back (0: tanh's own, which vanishes where
        #: the bound saturates); the forward value is unchanged, so it is not part of the architecture
        self.bound_gradient_floor = 0.0
        c1, c2, c3 = self.config.channels()
        norm, styles = self.config.norm, self.config.styles
        self.encoder = StyledSequential(
            ConvNormAct(3, c1, 9, norm=norm, styles=styles),
            ConvNormAct(c1, c2, 3, stride=2, norm=norm, styles=styles),
            ConvNormAct(c2, c3, 3, stride=2, norm=norm, styles=styles),
        )
        self.residuals = StyledSequential(*(ResidualBlock(c3, norm, styles)
                                            for _ in range(self.config.residual_blocks)))
        self.decoder = StyledSequential(
            UpsampleConv(c3, c2, norm, self.config.upsample, styles),
            UpsampleConv(c2, c1, norm, self.config.upsample, styles),
            # demodulated too: the first run with a plain output layer had every output pixel pinned by the
            # bound by step 29 (docs/artefacts.md), as Adam's steps on its 2,592 weights added up unscaled
            ConvNormAct(c1, 3, 9, norm="demodulated" if norm == "demodulated" else None, relu=False),
        )

    def forward(self, images: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        """N,3,H,W in [0,1] -> N,3,H,W in [0,1]; a network of S > 1 styles also takes ``style_weights`` N,S
        (or 1,S for the whole batch): one-hot rows choose a style, convex rows blend styles."""
        # export-safe: no data-dependent branch, padding a function of the input size (ONNX, TorchScript)
        height, width = images.shape[-2], images.shape[-1]
        return self.transform(self._pad(images), style_weights)[..., :height, :width]

    def transform(self, images: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        """``forward`` without its padding: N,3,H,W in [0,1] with H, W multiples of STRIDE and at least MIN_SIZE
        -> N,3,H,W in [0,1]. The mobile exports run this, since their converters take no padding whose amount
        depends on a dynamic size (fststyle.stylize.mobile)."""
        x = self.encoder(images, style_weights)
        x = self.residuals(x, style_weights)
        x = self.decoder(x, style_weights)
        # Johnson et al. bound the output with a scaled tanh (150*tanh on 0-255 images);
        # on [0,1] images the same bound is (tanh + 1) / 2.
        bounded = (torch.tanh(x) + 1) / 2
        if self.training and self.bound_gradient_floor > 0:
            # same value; slope (1 - tanh^2) / 2 + floor, so a pixel pushed deep into the bound still learns
            bounded = bounded + self.bound_gradient_floor * (x - x.detach())
        return bounded

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of STRIDE and at least MIN_SIZE: N,3,H,W -> N,3,H',W'."""
        height, width = images.shape[-2], images.shape[-1]
        # (n + s - 1) // s, not -(-n // s): the exporter's symbolic sizes must stay non-negative
        pad_h = max(self.MIN_SIZE, (height + self.STRIDE - 1) // self.STRIDE * self.STRIDE) - height
        pad_w = max(self.MIN_SIZE, (width + self.STRIDE - 1) // self.STRIDE * self.STRIDE) - width
        # Reflection needs the pad to be smaller than the side; replicate covers tiny images.
        mode = "reflect" if height > pad_h and width > pad_w else "replicate"
        return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)

    def with_style(self, style_weights: torch.Tensor) -> TransformerNet:
        """The one-style network whose norms hold the ``style_weights`` S mix of this network's styles' scale and
        shift (same output as ``forward(x, style_weights[None])``, one copy of the shared weights, and the cost
        of a single-style network however many styles this one holds)."""
        if self.config.styles == 1:
            raise ValueError("with_style() takes a network of several styles; this one holds one")
        device = next(self.parameters()).device
        single = TransformerNet(replace(self.config, styles=1)).to(device)
        state = self.state_dict()
        mix = style_weights.reshape(1, -1).to(device)
        for name, norm in self.named_modules():
            if isinstance(norm, InstanceNorm2d):
                weight, bias = norm.style_affine(mix)
                state[f"{name}.weight"], state[f"{name}.bias"] = weight[0], bias[0]
        single.load_state_dict(state)
        return single.train(self.training)

    def with_new_styles(self, count: int) -> TransformerNet:
        """This network with ``count`` more styles after its own: the same weights, and each new style's scale and
        shift starting at the mean of the existing styles' (a fine-tune then trains only those)."""
        grown = TransformerNet(replace(self.config, styles=self.config.styles + count))
        state = self.state_dict()
        for name, norm in self.named_modules():
            if isinstance(norm, InstanceNorm2d):
                for key in (f"{name}.weight", f"{name}.bias"):
                    rows = state[key].reshape(self.config.styles, -1)
                    state[key] = torch.cat([rows, rows.mean(dim=0, keepdim=True).expand(count, -1)])
        grown.load_state_dict(state)
        return grown.to(next(self.parameters()).device)

    def fast_inference(self, enabled: bool = True) -> TransformerNet:
        """Switch to (or from) the fast CPU inference form: channels_last weights, layout-keeping instance
        norms and a 4-channel last convolution; same output to float rounding. Not for training or export."""
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        for module in self.modules():
            if isinstance(module, InstanceNorm2d):
                module.keep_layout = enabled
            elif isinstance(module, OutputConv):
                module.four_channels = enabled
            elif isinstance(module, UpsampleConv):
                module.subpixel = enabled and module.can_run_subpixel()
        return self

    def instance_norms(self) -> list[InstanceNorm2d]:
        """The network's instance norms in forward order (empty for batch norm and demodulation)."""
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


def saturated_share(outputs: torch.Tensor) -> torch.Tensor:
    """Share of the pixels of network outputs N,3,H,W (in [0,1]) that the tanh bound pins to pure black or
    white: every channel within SATURATION_MARGIN of 0, or of 1 (scalar tensor, outputs' device, no sync)."""
    black = (outputs < SATURATION_MARGIN).all(dim=1)
    white = (outputs > 1 - SATURATION_MARGIN).all(dim=1)
    return (black | white).float().mean()
