"""Instant stylisation with a trained style model: any photo size, tiling, batching, colour and strength.

    stylizer = Stylizer.load("checkpoints/starry_night.safetensors")
    stylised = stylizer(Image.open("photo.jpg"))          # PIL in, PIL out (alpha carried over)
    batch = stylizer(torch.rand(2, 3, 480, 640))           # N,3,H,W in [0,1] in, same shape out
    blend = Stylizer.load("several.safetensors", style={"starry_night": 0.7, "the_scream": 0.3})

Plain PyTorch; ``fststyle stylize`` (fststyle/cli/jobs.py) is the command line over it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from fststyle.color import preserve_colors
from fststyle.devices import resolve_device
from fststyle.errors import InputNotFoundError, UserError
from fststyle.files import check_writable, mark_output_folder, refuse_overwriting_inputs
from fststyle.images import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    check_image_suffix,
    labelled_grid,
    list_images,
    longer_side_size,
    pil_to_tensor,
    read_photo,
    save_image,
    tensor_to_pil,
)
from fststyle.style_model import StyleModel
from fststyle.transformer import TransformerNet

log = logging.getLogger(__name__)

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
        if not 0.0 <= self.strength <= 1.0:
            raise UserError(f"strength must be in [0, 1], got {self.strength}; e.g. strength=0.7")
        if self.tile is not None and self.tile < MIN_TILE:
            raise UserError(f"tile={self.tile} is too small: every pixel of it would be within the network's "
                             f"{RECEPTIVE_RADIUS} px receptive radius of a cut; use tile >= {MIN_TILE}")
        if self.tile is not None and not 0 <= 2 * self.tile_overlap < self.tile:
            raise UserError(f"tile_overlap={self.tile_overlap} must be >= 0 and less than half of tile={self.tile}")
        self.network = self.network.to(self.device, self.dtype).eval()
        #: NHWC batches: for the compiled network and the CPU's fast form; CUDA's eager forward runs NCHW
        self._channels_last = self.compile or self.device.type == "cpu"
        if self.compile:  # inductor fuses the plain network itself (it fails on the fast form's out= writes)
            self._forward = torch.compile(self.network.to(memory_format=torch.channels_last))
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
    def stylize(self, images: torch.Tensor) -> torch.Tensor:
        """N,3,H,W float in [0,1] (any device) -> stylised N,3,H,W float32 on the same device."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape N,3,H,W; got {tuple(images.shape)}")
        original = images.float()
        if self.strength == 0:
            return original.clone()
        if self.tile is not None and max(images.shape[-2:]) > self.tile:
            stylised = self._run_tiled(original)
        else:
            stylised = self._run(original).to(original.device)
        if self.preserve_color:
            stylised = preserve_colors(stylised, original)
        if self.strength < 1:
            stylised = torch.lerp(original, stylised, self.strength)
        return stylised

    def _run(self, images: torch.Tensor, shared_statistics: bool = False) -> torch.Tensor:
        """The network on N,3,h,w (moved to the run device and dtype) -> float32 on the run device.
        ``shared_statistics``: run the uncompiled network, whose instance norms record or reuse statistics."""
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        batch = images.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=memory_format)
        return (self.network if shared_statistics else self._forward)(batch).float()

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


def check_file_job(source: str | Path, target: str | Path, grid: str | Path | None = None) -> None:
    """Raise UserError unless stylising the file ``source`` into ``target`` (and ``grid``) can run: the input
    exists, the outputs have image suffixes and writable folders, and no output is the input."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise InputNotFoundError(f"input not found: {source}; pass input=<photo or folder of photos>")
    outputs = [target] if grid is None else [target, Path(grid)]
    for output in outputs:
        check_writable(check_image_suffix(output))
    refuse_overwriting_inputs([source], outputs)


def check_folder_job(source: str | Path, target: str | Path, grid: str | Path | None = None) -> list[Path]:
    """The images under the folder ``source``, after the checks of ``check_file_job`` for every output under
    ``target`` (the input folder itself is refused as ``target``; a folder inside it is fine)."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise InputNotFoundError(f"input folder not found: {source}; pass input=<photo or folder of photos>")
    check_writable(target, folder=True)
    outputs = [target]
    if grid is not None:
        outputs.append(check_image_suffix(grid))
        check_writable(grid)
    paths = list_images(source)
    refuse_overwriting_inputs([source, *paths], [*outputs, *(target / path.relative_to(source) for path in paths)])
    return paths


def stylize_file(stylizer: Stylizer, source: str | Path, target: str | Path,
                 max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = DEFAULT_JPEG_QUALITY) -> Path:
    """Stylise one image file into ``target`` (format from its suffix; alpha kept where the format has it;
    EXIF without orientation carried over; ``quality`` for JPEG/WebP). Refuses to overwrite ``source``."""
    check_file_job(source, target)
    photo = read_photo(source, max_pixels=max_pixels)
    stylised = stylizer.stylize(pil_to_tensor(photo.rgb).unsqueeze(0))
    return save_image(stylised, target, alpha=photo.alpha, exif=photo.exif, quality=quality)


@dataclass
class FolderReport:
    """What ``stylize_folder`` did: written outputs, outputs skipped as already there, (file, reason) failures,
    wall seconds."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = len(self.written) / self.seconds if self.seconds > 0 else 0.0
        line = (f"stylised {len(self.written)} images in {self.seconds:.1f} s ({rate:.2f} images/s): "
                f"{len(self.written)} written, {len(self.skipped)} skipped (already there), {len(self.failed)} failed")
        if self.failed:
            line += ": " + ", ".join(str(path) for path, _ in self.failed)
        return line


def stylize_folder(stylizer: Stylizer, source: str | Path, target: str | Path, batch_size: int = 4,
                   max_pixels: int = DEFAULT_MAX_PIXELS, grid: str | Path | None = None,
                   grid_cell_height: int = 256, quality: int = DEFAULT_JPEG_QUALITY,
                   skip_existing: bool = False, images: Sequence[Path] | None = None) -> FolderReport:
    """Stylise every image under ``source`` (recursive) into the same relative paths under ``target``.

    Images of equal size run together in batches of up to ``batch_size``. A file that cannot be read or
    written is logged by name and skipped; the others are still written. ``grid``: also write a labelled
    (photo | stylised) grid of every processed image there. ``skip_existing``: leave outputs that are already
    there (writes are atomic, so they are complete) and stylise only the rest, to resume an interrupted run.
    Refuses (before any work) to write onto an input; ``target`` is marked as an output folder, so it may
    lie inside ``source`` without becoming an input of a later run. ``images``: the list ``check_folder_job``
    returned for these arguments, when the caller checked them already (else they are checked here)."""
    source, target = Path(source), Path(target)
    paths = list(images) if images is not None else check_folder_job(source, target, grid)
    mark_output_folder(target, [source])
    report = FolderReport()
    thumbnails: list[tuple[str, Image.Image, Image.Image]] = []
    pending: dict[tuple[int, int], list[tuple[Path, torch.Tensor, Image.Image | None, bytes | None]]] = {}

    def thumbnail(image: torch.Tensor | Image.Image) -> Image.Image:
        picture = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image.copy()
        picture.thumbnail((4 * grid_cell_height, grid_cell_height))
        return picture

    def flush(size: tuple[int, int]) -> None:
        items = pending.pop(size)
        try:
            stylised = stylizer.stylize(torch.stack([image for _, image, _, _ in items]))
        except RuntimeError as error:  # out of memory on a huge batch: name every file, go on
            for path, _, _, _ in items:
                report.failed.append((path, f"{type(error).__name__}: {error}"))
                log.error("%s: stylisation failed (%s); try tile=1024 or batch_size=1", path, error)
            progress.update(len(items))
            return
        for (path, image, alpha, exif), output in zip(items, stylised, strict=True):
            destination = target / path.relative_to(source)
            try:
                save_image(output, destination, alpha=alpha, exif=exif, quality=quality)
            except (OSError, ValueError) as error:
                report.failed.append((path, str(error)))
                log.error("%s: cannot write %s (%s)", path, destination, error)
                progress.update(1)
                continue
            report.written.append(destination)
            progress.update(1)
            if grid is not None:
                thumbnails.append((str(path.relative_to(source)), thumbnail(image), thumbnail(output)))

    start = time.perf_counter()
    progress = tqdm(total=len(paths), desc=f"stylising {source}", unit="image")
    for path in paths:
        destination = target / path.relative_to(source)
        if skip_existing and destination.exists():
            report.skipped.append(destination)
            progress.update(1)
            continue
        try:
            photo = read_photo(path, max_pixels=max_pixels)
        except (ImageReadError, OSError) as error:
            report.failed.append((path, str(error)))
            log.error("skipping %s", error)
            progress.update(1)
            continue
        image = pil_to_tensor(photo.rgb)
        size = (image.shape[-2], image.shape[-1])
        pending.setdefault(size, []).append((path, image, photo.alpha, photo.exif))
        if len(pending[size]) >= batch_size:
            flush(size)
        elif sum(len(group) for group in pending.values()) >= 4 * batch_size:  # bound decoded images held
            flush(max(pending, key=lambda key: len(pending[key])))
    for size in list(pending):
        flush(size)
    progress.close()
    report.seconds = time.perf_counter() - start
    if grid is not None and thumbnails:
        write_grid([(photo, stylised) for _, photo, stylised in thumbnails], [name for name, _, _ in thumbnails],
                   grid, stylizer.style_name, grid_cell_height)
    return report


def write_grid(pairs: Sequence[tuple[Image.Image, Image.Image]], names: Sequence[str], path: str | Path,
               style_name: str, cell_height: int = 256) -> Path:
    """Save a labelled grid with one (photo | stylised) row per image to ``path``."""
    grid = labelled_grid([list(pair) for pair in pairs], col_labels=["photo", style_name], row_labels=list(names),
                         cell_height=cell_height)
    return save_image(grid, path)


def default_output(source: Path, style_name: str) -> Path:
    """``photo.jpg`` -> ``photo_<style>.jpg``; ``photos/`` -> ``photos_<style>/``."""
    if source.is_dir():
        return source.with_name(f"{source.name}_{style_name}")
    return source.with_name(f"{source.stem}_{style_name}{source.suffix}")
