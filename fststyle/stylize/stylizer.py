"""Instant stylisation with a trained style model: any photo size, tiling, batching, colour and strength.

    stylizer = Stylizer.load("checkpoints/starry_night.safetensors")
    stylised = stylizer(Image.open("photo.jpg"))          # PIL in, PIL out (alpha carried over)
    batch = stylizer(torch.rand(2, 3, 480, 640))           # N,3,H,W in [0,1] in, same shape out
    blend = Stylizer.load("several.safetensors", style={"starry_night": 0.7, "the_scream": 0.3})

Plain PyTorch; fststyle.stylize.runner.stylize_paths runs it over files and folders (``fststyle stylize``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from fststyle.color import preserve_colors
from fststyle.devices import resolve_device
from fststyle.errors import UserError
from fststyle.io.convert import longer_side_size, pil_to_tensor, tensor_to_pil
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import StyleModel

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: receptive-field radius of the Johnson network in input pixels: 9x9 conv (4) + two stride-2 3x3 (1 + 2)
#: + ten 3x3 at 1/4 scale (40) + two upsampling 3x3 (2 + 1) + 9x9 conv (4) = 54. The default overlap is
#: more than twice that, so every pixel gets most of its weight from a tile where it is not near a cut.
RECEPTIVE_RADIUS = 54
DEFAULT_TILE_OVERLAP = 128
#: smallest tile: twice the receptive diameter, so a tile's centre sees no cut (measured: tile=112 leaves
#: 13.7 levels of mean error even with exact statistics, tile=224 0.03; docs/stylize.md)
MIN_TILE = 4 * RECEPTIVE_RADIUS
#: longer side of the statistics pass for tiled images: exact statistics up to 2048 px (a full-width pass
#: there holds a few 512 MiB activation tensors, estimated); larger images use a downscale (docs/stylize.md)
DEFAULT_STATISTICS_SIZE = 2048


def resolve_precision(precision: str) -> torch.dtype:
    """``auto`` -> fp32 on every device. CPU: the AVX2 CPUs here have no bf16 units. CUDA: on an H100 the fp32
    forward (TF32 convolutions, PyTorch's default) ran 1.2-1.6x faster than any eager bf16 or fp16 form at
    512^2 and 1024^2, batch 8 (bench/infer.py, docs/stylize.md); fp16 and bf16 only halve activation memory."""
    if precision == "auto":
        return torch.float32
    if precision not in PRECISIONS:
        raise UserError(f"precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}; "
                        "e.g. precision=auto")
    return PRECISIONS[precision]


def compile_for_inference(network: TransformerNet, device: torch.device) -> TransformerNet:
    """``torch.compile`` of the fast inference form: N,3,H,W -> N,3,H,W, one graph per input shape.

    Static shapes, since Inductor's dynamic-shape graphs keep no channels_last (0.61x eager on an H100:
    docs/stylize.md); the layout-keeping norms and their ReLU fuse into one pass in NHWC, and Inductor is told
    to keep NHWC for every convolution (it turns that off for shrinking ones: ``decide_layout_opt``).
    ``freezing`` folds the weights into constants (oneDNN packs them once on the CPU); on CUDA, repeated
    shapes (a video, a folder of equal photos) replay a CUDA graph."""
    options = {"freezing": True, "force_layout_optimization": True, "triton.cudagraphs": device.type == "cuda"}
    return torch.compile(network, dynamic=False, options=options)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``, overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D tile weights: raised-cosine rise over the first ``ramp`` samples (and/or fall over the last);
    strictly positive, so the weighted sum of overlapping tiles can always be normalised."""
    weights = torch.ones(length)
    ramp = min(ramp, length)
    if ramp > 0:
        edge = torch.sin(0.5 * math.pi * (torch.arange(ramp) + 0.5) / ramp) ** 2
        if rise:
            weights[:ramp] = torch.minimum(weights[:ramp], edge)
        if fall:
            weights[-ramp:] = torch.minimum(weights[-ramp:], edge.flip(0))
    return weights


def check_strength(strength: float) -> float:
    """``strength`` if it is in [0, 1] (0 = the photo, 1 = fully stylised), else a UserError."""
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"strength must be in [0, 1], got {strength}; e.g. strength=0.7")
    return strength


@dataclass
class Stylizer:
    """A loaded style network with its run settings: maps PIL images or N,3,H,W [0,1] tensors to stylised ones."""

    network: TransformerNet
    metadata: dict[str, Any] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    tile: int | None = None  # images with a side above this run in overlapping tiles
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    strength: float = 1.0  # 0 = the photo, 1 = fully stylised
    preserve_color: bool = False
    compile: bool = False
    #: tiles use instance-norm statistics of the whole (downscaled) image; False = each tile its own
    shared_statistics: bool = True
    #: longer side of the downscaled whole image those statistics come from (None: the larger of the
    #: tile and DEFAULT_STATISTICS_SIZE); larger is closer to untiled output and costs more memory in one pass
    statistics_size: int | None = None

    def __post_init__(self) -> None:
        check_strength(self.strength)
        if self.tile is not None and self.tile < MIN_TILE:
            raise UserError(f"tile={self.tile} is too small: every pixel of it would be within the network's "
                             f"{RECEPTIVE_RADIUS} px receptive radius of a cut; use tile >= {MIN_TILE}")
        if self.tile is not None and not 0 <= 2 * self.tile_overlap < self.tile:
            raise UserError(f"tile_overlap={self.tile_overlap} must be >= 0 and less than half of tile={self.tile}")
        self.network = self.network.to(self.device, self.dtype).eval()
        #: NHWC batches: for the compiled network and the CPU's fast form; CUDA's eager forward runs NCHW
        self._channels_last = self.compile or self.device.type == "cpu"
        if self.compile:
            self._forward = compile_for_inference(self.network.fast_inference(), self.device)
        elif self.device.type == "cpu":
            self._forward = self.network.fast_inference()
        else:  # the CPU's fast form ran 1.6x slower on an H100 than the plain NCHW forward (docs/stylize.md)
            self._forward = self.network

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", precision: str = "auto",
             style: str | Mapping[str, float] | None = None, **options: Any) -> Stylizer:
        """Load a ``.safetensors`` style model (or a training ``.ckpt``, weights-only) onto ``device``; ``style``
        chooses one of a model's styles by name or blends them (``{name: weight}``; StyleModel.select)."""
        return cls.from_model(StyleModel.load(path), device, precision, style=style, **options)

    @classmethod
    def from_model(cls, model: StyleModel, device: str | torch.device = "auto", precision: str = "auto",
                   style: str | Mapping[str, float] | None = None, **options: Any) -> Stylizer:
        """Run a loaded style model's network (moved to ``device`` and the precision's dtype) on ``device``: the
        one-style network of ``style`` (a name or ``{name: weight}``; None for a model of one style)."""
        chosen = model.select(style)
        resolved = resolve_device(device)
        return cls(chosen.network, chosen.metadata, device=resolved, dtype=resolve_precision(precision),
                   **options)

    @property
    def style_name(self) -> str:
        style = self.metadata.get("style")
        name = style.get("name") if isinstance(style, dict) else style
        return str(name) if name else "stylised"

    def __call__(self, images: torch.Tensor | Image.Image) -> torch.Tensor | Image.Image:
        """PIL image -> PIL image of the same size (alpha kept), or N,3,H,W [0,1] -> N,3,H,W on the input's device."""
        if isinstance(images, Image.Image):
            alpha = images.getchannel("A") if images.mode in ("RGBA", "LA") else None
            stylised = tensor_to_pil(self.stylize(pil_to_tensor(images).unsqueeze(0)))
            if alpha is not None:
                stylised.putalpha(alpha)
            return stylised
        return self.stylize(images)

    @torch.inference_mode()
    def stylize(self, images: torch.Tensor, *, strength: float | None = None,
                preserve_color: bool | None = None) -> torch.Tensor:
        """N,3,H,W float in [0,1] (any device) -> stylised N,3,H,W float32 on the same device; ``strength`` and
        ``preserve_color`` override the stylizer's own for this call (a server's per-request settings)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape N,3,H,W; got {tuple(images.shape)}")
        strength = self.strength if strength is None else check_strength(strength)
        preserve_color = self.preserve_color if preserve_color is None else preserve_color
        original = images.float()
        if strength == 0:
            return original.clone()
        if self.tile is not None and max(images.shape[-2:]) > self.tile:
            stylised = self._run_tiled(original)
        else:
            stylised = self._run(original).to(original.device)
        if preserve_color:
            stylised = preserve_colors(stylised, original)
        if strength < 1:
            stylised = torch.lerp(original, stylised, strength)
        return stylised

    def _run(self, images: torch.Tensor, shared_statistics: bool = False) -> torch.Tensor:
        """The network on N,3,h,w (moved to the run device and dtype) -> float32 on the run device.
        ``shared_statistics``: run the uncompiled network, whose instance norms record or reuse statistics."""
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        batch = images.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=memory_format)
        if shared_statistics:
            return self.network(batch).float()
        if self.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the graph's last output may be overwritten from here
            return self._forward(batch).float().clone()
        return self._forward(batch).float()

    def _run_tiled(self, images: torch.Tensor) -> torch.Tensor:
        """Overlapping tiles blended with raised-cosine ramps: N,3,H,W -> N,3,H,W on the input's device.

        Memory on the run device is bounded by the tile size; the full-size image and the weighted sum
        stay on the input's device. Every tile uses the same instance-norm statistics, those of the whole
        image downscaled to the tile size (docs/stylize.md explains why and what it costs in accuracy)."""
        height, width = images.shape[-2:]
        tile, overlap = self.tile, self.tile_overlap
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        tiles = [(top, left) for top in rows for left in cols]

        def weight_of(top: int, left: int) -> torch.Tensor:
            h, w = min(tile, height - top), min(tile, width - left)
            return (blend_ramp(h, overlap, top > 0, top + h < height)[:, None]
                    * blend_ramp(w, overlap, left > 0, left + w < width)[None, :]).to(images.device)

        weight_sum = images.new_zeros(1, 1, height, width)
        for top, left in tiles:
            weight_sum[..., top:top + tile, left:left + tile] += weight_of(top, left)
        statistics = self._whole_image_statistics(images)
        total = torch.zeros_like(images)
        for top, left in tqdm(tiles, desc="tiles", unit="tile", leave=False, disable=len(tiles) < 4):
            crop = images[..., top:top + tile, left:left + tile]
            weight = weight_of(top, left)
            if statistics is not None:
                with self.network.reusing(statistics):
                    out = self._run(crop, shared_statistics=True)
            else:
                out = self._run(crop)
            total[..., top:top + weight.shape[-2], left:left + weight.shape[-1]] += out.to(images.device) * weight
        return total / weight_sum

    def _whole_image_statistics(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Instance-norm statistics of the whole image, downscaled so its longer side is ``statistics_size``."""
        if not self.network.instance_norms() or not self.shared_statistics:
            return None  # batch norm uses running statistics
        side = self.statistics_size or max(self.tile or 0, DEFAULT_STATISTICS_SIZE)
        height, width = images.shape[-2:]
        size = longer_side_size(height, width, min(side, max(height, width)))  # never upscaled
        small = F.interpolate(images.to(self.device), size=size, mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        with self.network.recording() as statistics:
            self._run(small, shared_statistics=True)
        return statistics
