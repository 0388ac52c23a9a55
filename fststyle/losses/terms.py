"""The terms a ``PerceptualLoss`` sums: what every term is (a name, a weight, the VGG layers it reads), and
the content, total-variation and Gram style terms. The other style kinds (MRF, spatial Gram), the histogram
term and the stability term build on the classes here."""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from fststyle.losses.functional import feature_mse, gram_matrix, total_variation
from fststyle.nets.vgg import VGGFeatures

Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PerturbedOutput:
    """The network's output N,3,H,W for a perturbed copy of its input, a copy that shows the scene moved by
    ``shift`` (dy, dx): copy[y, x] = input[y + dy, x + dx]."""

    output: torch.Tensor
    shift: tuple[int, int]


@dataclass(frozen=True)
class Scored:
    """What one call of a ``PerceptualLoss`` scores, as its terms read it: ``output`` N,3,H,W in [0,1]; its VGG
    ``features`` at every layer a term reads; the content images' ``content`` features at every content layer;
    and ``perturbed``, the network's outputs for perturbed inputs by the name of the term that asked for them
    (training only: the optimisation engines and the comparison have no network to perturb)."""

    output: torch.Tensor
    features: Features
    content: Features
    perturbed: Mapping[str, PerturbedOutput]

    def zero(self) -> torch.Tensor:
        """A float32 scalar 0 on the output's device, where a sum of terms starts."""
        return self.output.new_zeros((), dtype=torch.float32)


class LossTerm(nn.Module, abc.ABC):
    """One named, weighted term of a ``PerceptualLoss``: ``forward(scored)`` -> ``{name: weighted value}``, plus
    ``{name.layer: share}`` for each VGG layer of a term on VGG features (the shares sum to the value), or ``{}``
    when the term has nothing to score (stability without a perturbed output)."""

    #: the term's key in the loss's results, in TensorBoard (``train/<name>``) and in the comparison's columns
    name: ClassVar[str]
    #: True for a term that scores the output alone, with no content or style target (TV, stability); a run of
    #: several styles logs every other term per style too
    regulariser: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    @property
    def layers(self) -> list[str]:
        """The VGG layers of the output this term reads."""
        return []

    @property
    def content_layers(self) -> list[str]:
        """The VGG layers of the content images this term compares the output with."""
        return []

    def untargeted_copy(self) -> LossTerm:
        """The same term (settings, weights) without targets; setting the copy's targets leaves this one's alone.
        Targets are a term's only buffers, and a term has no parameters or submodules."""
        clone = copy.copy(self)
        clone._parameters, clone._modules = dict(self._parameters), dict(self._modules)
        clone._buffers, clone._non_persistent_buffers_set = {}, set()
        return clone

    @abc.abstractmethod
    def forward(self, scored: Scored) -> Features:
        """This term's weighted value (and per-layer shares) for ``scored``."""

    def _with_shares(self, shares: Features, scored: Scored) -> Features:
        """``{name.layer: share}`` for each layer's weighted share, and their sum under ``name``."""
        keyed = {f"{self.name}.{layer}": share for layer, share in shares.items()}
        return {**keyed, self.name: sum(shares.values(), scored.zero())}


class ContentLoss(LossTerm):
    """Content term (Johnson et al. 2016, eq. 2; Gatys et al. 2016, eq. 1): per layer, ``weight * layer weight *``
    the MSE between the output's features N,C,h,w and the content images' N,C,h,w."""

    name = "content"

    def __init__(self, layer_weights: Mapping[str, float], weight: float = 1.0) -> None:
        super().__init__(weight)
        self.layer_weights = dict(layer_weights)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ContentLoss | None:
        """The term of a loss config's ``content_layers`` and ``content_weight``; None without content layers."""
        layers = dict(config.get("content_layers") or {})
        return cls(layers, float(config.get("content_weight", 1.0))) if layers else None

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    @property
    def content_layers(self) -> list[str]:
        return list(self.layer_weights)

    def forward(self, scored: Scored) -> Features:
        return self._with_shares({
            layer: self.weight * layer_weight * feature_mse(scored.features[layer], scored.content[layer])
            for layer, layer_weight in self.layer_weights.items()}, scored)


class TotalVariationLoss(LossTerm):
    """TV term: ``weight * total_variation(output)`` of the output N,3,H,W (0 without computing it when the
    weight is 0)."""

    name = "tv"
    regulariser = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TotalVariationLoss:
        """The term of a loss config's ``tv_weight``: always built (0 when off), so every loss reports ``tv``."""
        return cls(float(config.get("tv_weight", 0.0)))

    def forward(self, scored: Scored) -> Features:
        return {self.name: self.weight * total_variation(scored.output) if self.weight else scored.zero()}


class PerturbationTerm(LossTerm):
    """Base of the terms that compare the network's outputs for its input and for a perturbed copy of it. Training
    runs the network on the copy ``perturb`` makes and hands that output to the loss (``scored.perturbed[name]``);
    without it (validation, the optimisation engines, the comparison: no network to perturb) the term scores
    nothing."""

    regulariser = True

    @abc.abstractmethod
    def perturb(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(a perturbed copy N,3,H,W of the network's input images N,3,H,W, the move (dy, dx) the copy shows)."""


class StyleLoss(LossTerm):
    """Base of the terms scored against targets from the style images: targets once per style (``set_targets``),
    then per call ``weight`` times each layer's loss (``layer_losses``, already times the layer's weight)."""

    name = "style"

    def __init__(self, layer_weights: Mapping[str, float], *, weight: float = 1.0) -> None:
        super().__init__(weight)
        if not layer_weights:
            raise ValueError(f"a {self.name} loss needs at least one layer")
        self.layer_weights = dict(layer_weights)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    @abc.abstractmethod
    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        """Targets from each style image's features ``{layer: 1,C,h,w}``, blended by ``blend`` (sums to 1)."""

    def set_targets_from_images(self, vgg: VGGFeatures, images: Sequence[torch.Tensor], blend: Sequence[float],
                                **options: Any) -> None:
        """Targets from style images 1,3,H,W: one VGG pass each (the MRF loss adds rotated / scaled copies)."""
        self.set_targets([vgg(image, self.layers) for image in images], blend, **options)

    @abc.abstractmethod
    def layer_losses(self, features: Features) -> Features:
        """``{layer: layer weight * loss}`` of the output's features ``{layer: N,C,h,w}``."""

    def forward(self, scored: Scored) -> Features:
        return self._with_shares({layer: self.weight * value
                                  for layer, value in self.layer_losses(scored.features).items()}, scored)


class GramStyleLoss(StyleLoss):
    """Gram-matrix style loss (Gatys et al. 2015): per layer, MSE between the output's Gram N,C,C and the
    blended style Gram 1,C,C. Several styles blend by a weighted mean of their Gram matrices."""

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        if options:
            raise TypeError(f"GramStyleLoss takes no target options, got {sorted(options)}")
        for layer in self.layers:
            grams = [w * gram_matrix(f[layer]).mean(dim=0, keepdim=True) for f, w in zip(style_features, blend, strict=True)]
            self.register_buffer(f"target_{layer}", torch.stack(grams).sum(dim=0), persistent=False)

    def layer_losses(self, features: Features) -> Features:
        return {
            layer: weight * feature_mse(gram_matrix(features[layer]), getattr(self, f"target_{layer}"))
            for layer, weight in self.layer_weights.items()
        }
