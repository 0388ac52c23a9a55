"""CNNMRF's coarse-to-fine image pyramid (Li & Wand 2016): every resize of an optimisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fststyle.io.convert import longer_side_size
from fststyle.losses import (
    MRFStyleLoss,
    PerceptualLoss,
)
from fststyle.losses.mrf import PatchSizeError
from fststyle.optimize.settings import OptimizeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PyramidLevel:
    """One level of an ``ImagePyramid``: its index in the full pyramid (0 = coarsest), image size (H, W), steps."""

    index: int
    size: tuple[int, int]
    steps: int


class ImagePyramid:
    """Every resize of the optimisation (CNNMRF's coarse-to-fine pyramid): the levels, coarse to fine, for a
    content image of (``height``, ``width``), and content, style and running images resized onto each level.

    The finest level has longer side ``settings.image_size``, each coarser one ``pyramid_ratio`` times its
    neighbour's; style images get longer side ``style_scale`` times the level's (at least 16 px). With an MRF
    ``loss``, coarse levels at which an MRF layer of the output or of a style image (of sizes ``style_sizes``)
    holds no full patch are skipped with a warning in the log; PatchSizeError when the finest one is.
    Content masks are not resized here: the spatial loss fits them to each feature map."""

    def __init__(self, height: int, width: int, settings: OptimizeSettings, loss: PerceptualLoss | None = None,
                 style_sizes: Sequence[tuple[int, int]] = ()) -> None:
        self.style_scale = settings.style_scale
        count = settings.pyramid_levels
        longer = [round(settings.image_size * settings.pyramid_ratio ** (count - 1 - i)) for i in range(count)]
        levels = [PyramidLevel(index, longer_side_size(height, width, side), steps)
                  for index, (side, steps) in enumerate(zip(longer, settings.steps_per_level(), strict=True))]
        if loss is not None and isinstance(loss.style, MRFStyleLoss):
            levels = self._with_full_patches(levels, loss, style_sizes, settings.image_size)
        self.levels = levels

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the levels, coarse to fine."""
        return [level.size for level in self.levels]

    @property
    def finest(self) -> PyramidLevel:
        return self.levels[-1]

    @staticmethod
    def style_side(level_side: int, style_scale: float) -> int:
        """Longer side of the style images at a level of longer side ``level_side``."""
        return max(16, round(style_scale * level_side))

    def style_size(self, style_size: tuple[int, int], level: PyramidLevel) -> tuple[int, int]:
        """(H, W) at ``level`` of a style image of (H, W) ``style_size``, aspect kept."""
        return longer_side_size(*style_size, self.style_side(max(level.size), self.style_scale))

    @staticmethod
    def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """N,C,H,W -> N,C,h,w, antialiased bicubic, clamped to [0,1]."""
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)

    def image(self, image: torch.Tensor, level: PyramidLevel) -> torch.Tensor:
        """A content-shaped image N,3,H,W (content, running image, colour source) at ``level``."""
        return self.resize(image, level.size)

    def styles(self, styles: Sequence[torch.Tensor], level: PyramidLevel) -> list[torch.Tensor]:
        """Style images 1,3,h,w at ``level``: longer side ``style_scale`` times the level's."""
        return [self.resize(style, self.style_size(tuple(style.shape[-2:]), level)) for style in styles]

    def _with_full_patches(self, levels: list[PyramidLevel], loss: PerceptualLoss,
                           style_sizes: Sequence[tuple[int, int]], image_size: int) -> list[PyramidLevel]:
        def problem(level: PyramidLevel) -> str | None:
            return loss.style.size_problem(loss.vgg, level.size, [self.style_size(s, level) for s in style_sizes])

        finest = problem(levels[-1])
        if finest:
            raise PatchSizeError(f"image_size={image_size} is too small for the MRF loss: {finest}; use a "
                                 "larger image_size (or style_scale)")
        kept = []
        for level in levels:
            skipped = problem(level)
            if skipped:
                log.warning("MRF pyramid level %d of %d (%dx%d px) skipped with its %d steps: %s", level.index + 1,
                            len(levels), level.size[1], level.size[0], level.steps, skipped)
            else:
                kept.append(level)
        return kept


