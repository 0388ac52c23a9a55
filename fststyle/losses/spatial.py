"""Spatial control of style (Gatys, Ecker, Bethge, Hertzmann & Shechtman 2017, "Controlling Perceptual
Factors in Neural Style Transfer", §4): masks split the image into regions, each region gets its own Gram
matrix, normalised by the region's size, and each content region is bound to one style (or a style region)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fststyle.losses.functional import feature_mse
from fststyle.losses.terms import Features, StyleLoss


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask N,1,H,W in [0,1] -> N,1,h,w by area averaging (every pixel of a region counts, at any layer)."""
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"a mask must have shape N,1,H,W, got {tuple(mask.shape)}")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_avg_pool2d(mask.float(), size)


def masked_gram_matrix(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gram matrix of one region: features N,C,H,W times mask N|1,1,H,W -> N,C,C, divided by ``C * sum(mask^2)``.

    Gatys et al. 2017 eq. 6 multiply the feature maps by the region mask; dividing by the region's size
    (instead of H*W) makes a region's Gram independent of how much of the image it covers, and a mask of
    ones gives exactly ``gram_matrix``.
    """
    n, c, h, w = features.shape
    mask = resize_mask(mask, (h, w)).to(features.device)
    with torch.autocast(device_type=features.device.type, enabled=False):
        weighted = (features.float() * mask).reshape(n, c, h * w)
        size = mask.square().sum(dim=(1, 2, 3)).clamp_min(1e-8).expand(n)
        return torch.bmm(weighted, weighted.transpose(1, 2)) / (c * size.view(n, 1, 1))


def _check_masks(masks: Sequence[torch.Tensor], count: int, what: str) -> list[torch.Tensor]:
    masks = list(masks)
    if len(masks) != count:
        raise ValueError(f"got {count} style images but {len(masks)} {what}; give one mask per style")
    for index, mask in enumerate(masks):
        if mask.dim() != 4 or mask.shape[:2] != (1, 1):
            raise ValueError(f"{what}[{index}] must have shape 1,1,H,W, got {tuple(mask.shape)}")
    return masks


class SpatialGramStyleLoss(StyleLoss):
    """Gram style loss per region: region r of the output (``content_masks[r]``) matches the Gram matrix of style
    image r (or of the region ``style_masks[r]`` of style image r), at every style layer.

    Each region's loss is weighted by the fraction of the image it covers, so complementary masks give a loss on
    the same scale as ``GramStyleLoss`` and a single all-white mask gives exactly ``GramStyleLoss``. (Gatys et al.
    sum the regions unweighted; the area weight keeps a tiny region from dominating the style term.)
    """

    def __init__(self, layer_weights: Mapping[str, float], *, weight: float = 1.0) -> None:
        super().__init__(layer_weights, weight=weight)
        self.content_masks: list[torch.Tensor] = []

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], *,
                    content_masks: Sequence[torch.Tensor] | None = None,
                    style_masks: Sequence[torch.Tensor] | None = None, **options: Any) -> None:
        """Targets: one Gram 1,C,C per style and layer; masks are 1,1,H,W in [0,1] (any resolution)."""
        if options:
            raise TypeError(f"SpatialGramStyleLoss takes content_masks and style_masks, got {sorted(options)}")
        if content_masks is None:
            raise ValueError("spatial control needs content_masks: one mask per style image")
        count = len(style_features)
        self.content_masks = [m.float() for m in _check_masks(content_masks, count, "content_masks")]
        if style_masks is not None:
            style_masks = _check_masks(style_masks, count, "style_masks")
        for layer in self.layers:
            targets = []
            for index, features in enumerate(style_features):
                feats = features[layer]
                mask = style_masks[index] if style_masks is not None else torch.ones_like(feats[:, :1])
                targets.append(masked_gram_matrix(feats, mask).mean(dim=0))
            self.register_buffer(f"target_{layer}", torch.stack(targets), persistent=False)

    def layer_losses(self, features: Features) -> Features:
        terms = {}
        for layer, weight in self.layer_weights.items():
            targets = getattr(self, f"target_{layer}")
            feats = features[layer]
            term = feats.new_zeros((), dtype=torch.float32)
            for index, mask in enumerate(self.content_masks):
                resized = resize_mask(mask.to(feats.device), tuple(feats.shape[-2:]))
                area = resized.mean()
                term = term + area * feature_mse(masked_gram_matrix(feats, resized), targets[index])
            terms[layer] = weight * term
        return terms
