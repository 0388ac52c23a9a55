"""Loss modules shared by both engines: training optimises a network, the optimisation engine an image,
and both call the same ``PerceptualLoss``."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fststyle.blend import blend_weights
from fststyle.losses.functional import feature_mse, gram_matrix, total_variation
from fststyle.vgg import VGGFeatures

Features = dict[str, torch.Tensor]
#: the summed terms every ``PerceptualLoss`` returns (besides one ``content.<layer>`` / ``style.<layer>`` per layer)
LOSS_TERMS = ("content", "style", "tv", "total")


class StyleLoss(nn.Module):
    """Base of style terms: targets from style-image features, then ``{layer: weighted loss}`` per call."""

    def __init__(self, layer_weights: Mapping[str, float]) -> None:
        super().__init__()
        if not layer_weights:
            raise ValueError("a style loss needs at least one layer")
        self.layer_weights = dict(layer_weights)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        raise NotImplementedError

    def untargeted_copy(self) -> StyleLoss:
        """The same term (layers, weights, settings) without targets; setting its targets leaves this one's
        alone. Targets are a style term's only buffers, and it has no parameters or submodules."""
        clone = copy.copy(self)
        clone._parameters, clone._modules = dict(self._parameters), dict(self._modules)
        clone._buffers, clone._non_persistent_buffers_set = {}, set()
        return clone

    def set_targets_from_images(self, vgg: VGGFeatures, images: Sequence[torch.Tensor], blend: Sequence[float],
                                **options: Any) -> None:
        """Targets from style images 1,3,H,W: one VGG pass each (the MRF loss adds rotated / scaled copies)."""
        self.set_targets([vgg(image, self.layers) for image in images], blend, **options)

    def forward(self, features: Features) -> Features:
        raise NotImplementedError


class GramStyleLoss(StyleLoss):
    """Gram-matrix style loss (Gatys et al. 2015): per layer, MSE between the output's Gram N,C,C and the
    blended style Gram 1,C,C. Several styles blend by a weighted mean of their Gram matrices."""

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        if options:
            raise TypeError(f"GramStyleLoss takes no target options, got {sorted(options)}")
        for layer in self.layers:
            grams = [w * gram_matrix(f[layer]).mean(dim=0, keepdim=True) for f, w in zip(style_features, blend, strict=True)]
            self.register_buffer(f"target_{layer}", torch.stack(grams).sum(dim=0), persistent=False)

    def forward(self, features: Features) -> Features:
        return {
            layer: weight * feature_mse(gram_matrix(features[layer]), getattr(self, f"target_{layer}"))
            for layer, weight in self.layer_weights.items()
        }


STYLE_LOSSES: dict[str, type[StyleLoss]] = {"gram": GramStyleLoss}


class PerceptualLoss(nn.Module):
    """Content + style + TV loss on a frozen VGG: output N,3,H,W in [0,1] -> dict of named, weighted terms.

    Keys: ``content.<layer>``, ``style.<layer>``, ``content``, ``style``, ``tv`` and ``total``; every value
    already includes its weights, so ``total`` is the sum of ``content``, ``style`` and ``tv``.
    """

    def __init__(self, vgg: VGGFeatures, content_layers: Mapping[str, float], style: StyleLoss | None, *,
                 content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0) -> None:
        super().__init__()
        self.vgg = vgg
        self.content_layers = dict(content_layers)
        self.style = style
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self._content_features: Features | None = None
        self._style_ready = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PerceptualLoss:
        """Build from a plain mapping (the ``loss`` config group, also stored in exported models' metadata)."""
        network = dict(config.get("network", {}))
        style_layers = dict(config.get("style_layers") or {})
        content_layers = dict(config.get("content_layers") or {})
        kind = config.get("style_loss", "gram")
        if kind not in STYLE_LOSSES:
            raise ValueError(f"unknown style_loss {kind!r}; choose one of {sorted(STYLE_LOSSES)}")
        style = STYLE_LOSSES[kind](style_layers, **dict(config.get(kind) or {})) if style_layers else None
        vgg = VGGFeatures(
            arch=network.get("arch", "vgg16"),
            weights=network.get("weights", "torchvision"),
            pooling=network.get("pooling", "max"),
            layers=[*content_layers, *style_layers],
        )
        return cls(vgg, content_layers, style, content_weight=float(config.get("content_weight", 1.0)),
                   style_weight=float(config.get("style_weight", 1.0)),
                   tv_weight=float(config.get("tv_weight", 0.0)))

    def untargeted_copy(self, style: StyleLoss | None = None) -> PerceptualLoss:
        """The same loss (layers, weights) on this loss's own frozen VGG (shared, not copied) without content or
        style targets, so a caller's loss keeps its targets while the copy gets others; ``style`` replaces the
        style term (default: a target-free copy of this one's)."""
        if style is None and self.style is not None:
            style = self.style.untargeted_copy()
        return PerceptualLoss(self.vgg, self.content_layers, style, content_weight=self.content_weight,
                              style_weight=self.style_weight, tv_weight=self.tv_weight)

    @torch.no_grad()
    def set_style(self, images: torch.Tensor | Sequence[torch.Tensor], blend: Sequence[float] | None = None,
                  **options: Any) -> None:
        """Compute style targets once from one image 1,3,H,W or several (any sizes), blended by ``blend``."""
        if self.style is None:
            raise ValueError("this loss has no style layers")
        images = [images] if isinstance(images, torch.Tensor) else list(images)
        weights = blend_weights(len(images), blend)
        device = self.vgg.mean.device
        self.style.set_targets_from_images(self.vgg, [image.to(device) for image in images], weights, **options)
        self._style_ready = True

    @torch.no_grad()
    def set_content(self, content: torch.Tensor) -> None:
        """Cache the content target of a fixed image N,3,H,W (the optimisation engine's case)."""
        self._content_features = self.vgg(content, self.content_layers) if self.content_layers else {}

    def forward(self, output: torch.Tensor, content: torch.Tensor | None = None,
                style: StyleLoss | None = None) -> dict[str, torch.Tensor]:
        """Score ``output`` N,3,H,W against ``content`` N,3,H,W (or the cached content) and the style targets
        (those of ``style``, a targeted copy of this loss's style term, when given: one per style when one
        network learns several)."""
        style_term = self.style if style is None else style
        wanted = list(self.content_layers) + (style_term.layers if style_term is not None else [])
        features = self.vgg(output, wanted)
        terms: dict[str, torch.Tensor] = {}
        zero = output.new_zeros((), dtype=torch.float32)
        content_total = style_total = zero
        if self.content_layers:
            targets = self._content_targets(content)
            for layer, weight in self.content_layers.items():
                term = self.content_weight * weight * feature_mse(features[layer], targets[layer])
                terms[f"content.{layer}"] = term
                content_total = content_total + term
        if style_term is not None:
            if style is None and not self._style_ready:
                raise RuntimeError("call set_style(style_images) before computing the loss")
            for layer, value in style_term(features).items():
                term = self.style_weight * value
                terms[f"style.{layer}"] = term
                style_total = style_total + term
        tv = self.tv_weight * total_variation(output) if self.tv_weight else zero
        terms.update(content=content_total, style=style_total, tv=tv, total=content_total + style_total + tv)
        return terms

    def _content_targets(self, content: torch.Tensor | None) -> Features:
        if content is not None:
            with torch.no_grad():
                return self.vgg(content, self.content_layers)
        if self._content_features is None:
            raise RuntimeError("pass content images to the loss, or call set_content() first")
        return self._content_features
