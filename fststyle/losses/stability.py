"""The stability term (Gupta, Johnson, Alahi & Fei-Fei 2017, "Characterizing and Improving Stability in Neural
Style Transfer"): weight * MSE between the network's outputs for its input and for a perturbed copy of it, so
a model trained with it flickers less on video. Training only: it needs the network (``PerturbationTerm``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from fststyle.errors import UserError
from fststyle.losses.functional import feature_mse
from fststyle.losses.terms import Features, PerturbationTerm, Scored
from fststyle.nets.transformer import TransformerNet

#: default noise sigma, 5/255: twice the sensor noise of bench/stability.py's still scene (2.5/255)
DEFAULT_STABILITY_NOISE = 5.0 / 255.0
#: largest shift the term takes: a reflection pad must be shorter than the image it pads
MAX_STABILITY_SHIFT = 16


class StabilityLoss(PerturbationTerm):
    """Stability term: ``weight`` * MSE(output of a perturbed copy, output of the images), outputs N,3,H,W.

    The copy has Gaussian noise of sigma ``noise`` ([0,1] pixel units) and, with ``shift`` s > 0, shows the scene
    moved by (dy, dx), each drawn from -s..s per batch: copy[y, x] = images[y + dy, x + dx]. The outputs are then
    compared where both show the same scene, a margin of s + ``TransformerNet.STRIDE`` pixels in from every edge
    (the reflected border the move brings in, and one down-sampled pixel more). Its settings are the loss
    config's ``stability_weight``, ``stability_noise`` and ``stability_shift``, checked here.
    """

    name = "stability"

    def __init__(self, weight: float, noise: float = DEFAULT_STABILITY_NOISE, shift: int = 0) -> None:
        super().__init__(weight)
        self.noise, self.shift = float(noise), shift
        if self.weight < 0 or self.noise < 0:
            raise UserError(f"loss.stability_weight and loss.stability_noise must be >= 0, got "
                            f"{self.weight} and {self.noise}; e.g. loss.stability_weight=0")
        if not isinstance(shift, int) or not 0 <= shift <= MAX_STABILITY_SHIFT:
            raise UserError(f"loss.stability_shift must be a whole number of pixels from 0 to "
                            f"{MAX_STABILITY_SHIFT}, got {shift!r}; e.g. loss.stability_shift=2")
        if self.weight > 0 and self.noise == 0 and shift == 0:
            raise UserError("loss.stability_weight > 0 compares outputs for a perturbed input, and "
                            "loss.stability_noise=0 with loss.stability_shift=0 perturbs nothing; set either")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StabilityLoss | None:
        """The term of a loss config's ``stability_*`` keys (checked even when off); None when its weight is 0."""
        term = cls(float(config.get("stability_weight", 0.0)),
                   float(config.get("stability_noise", DEFAULT_STABILITY_NOISE)), config.get("stability_shift", 0))
        return term if term.weight > 0 else None

    @property
    def margin(self) -> int:
        """Pixels in from each edge that the outputs are not compared at (with a shift)."""
        return self.shift + TransformerNet.STRIDE

    def perturb(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        height, width = images.shape[-2:]
        if self.shift and min(height, width) <= 2 * self.margin:
            raise UserError(f"loss.stability_shift={self.shift} compares outputs {self.margin} px in from each "
                            f"edge, and the training images are {height}x{width}; use a smaller shift or larger "
                            "images")
        perturbed = (images + self.noise * torch.randn_like(images)).clamp(0.0, 1.0)
        if not self.shift:
            return perturbed, (0, 0)
        dy, dx = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
        shift = self.shift
        padded = F.pad(perturbed, (shift, shift, shift, shift), mode="reflect")
        return padded[..., shift + dy:shift + dy + height, shift + dx:shift + dx + width], (dy, dx)

    def forward(self, scored: Scored) -> Features:
        perturbed = scored.perturbed.get(self.name)
        if perturbed is None:
            return {}
        clean, moved = scored.output, perturbed.output
        if self.shift:  # moved[y, x] should be clean[y + dy, x + dx]
            (dy, dx), margin = perturbed.shift, self.margin
            height, width = clean.shape[-2:]
            moved = moved[..., margin:height - margin, margin:width - margin]
            clean = clean[..., margin + dy:height - margin + dy, margin + dx:width - margin + dx]
        return {self.name: self.weight * feature_mse(moved, clean)}
