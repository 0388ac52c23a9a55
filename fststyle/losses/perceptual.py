"""``PerceptualLoss``, the one loss both engines use (training optimises a network, the optimisation engine an
image): a frozen VGG and a list of named terms. The list is the loss: ``total`` is the sum of the terms' weighted
values, and every name a loss reports (TensorBoard scalars, optimisation histories, the comparison's columns)
comes from it (docs/design.md §Losses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fststyle.losses.histogram import HistogramLoss
from fststyle.losses.mrf import MRFStyleLoss
from fststyle.losses.stability import StabilityLoss
from fststyle.losses.terms import (
    ContentLoss,
    Features,
    GramStyleLoss,
    LossTerm,
    PerturbationTerm,
    PerturbedOutput,
    Scored,
    StyleLoss,
    TotalVariationLoss,
)
from fststyle.nets.blend import blend_weights
from fststyle.nets.vgg import VGGFeatures

#: the style kinds a loss config chooses with ``style_loss`` (spatial Gram comes with masks, never from a config)
STYLE_LOSSES: dict[str, type[StyleLoss]] = {"gram": GramStyleLoss, "mrf": MRFStyleLoss}


def style_term(config: Mapping[str, Any]) -> StyleLoss | None:
    """The style term of a loss config: the ``style_loss`` kind on ``style_layers``, weighted ``style_weight``,
    with the kind's own settings (``config[kind]``, e.g. ``mrf: {patch_size: 3}``); None without style layers."""
    layers = dict(config.get("style_layers") or {})
    kind = config.get("style_loss", "gram")
    if kind not in STYLE_LOSSES:
        raise ValueError(f"unknown style_loss {kind!r}; choose one of {sorted(STYLE_LOSSES)}")
    if not layers:
        return None
    return STYLE_LOSSES[kind](layers, weight=float(config.get("style_weight", 1.0)), **dict(config.get(kind) or {}))


#: how a loss config becomes terms, in the order the loss reports them: each reads its own keys and returns its
#: term, or None when the term is off
TERM_BUILDERS = (ContentLoss.from_config, style_term, TotalVariationLoss.from_config, HistogramLoss.from_config,
                 StabilityLoss.from_config)


def term_names(keys: Iterable[str]) -> list[str]:
    """The whole terms (``content``, ``style``, ``tv``, ..., ``total``) among the keys of a loss's results, in
    order; the other keys are the per-layer shares, ``<term>.<layer>``."""
    return [key for key in keys if "." not in key]


class PerceptualLoss(nn.Module):
    """A frozen VGG and named, weighted terms: output N,3,H,W in [0,1] -> ``{name: value}`` of every term, the
    per-layer shares ``<name>.<layer>`` of the terms on VGG features, and ``total``, the sum of the terms.

    ``from_config`` builds ``content``, ``style`` and ``tv`` whenever they have layers (``tv`` always, 0 when off:
    the keys every fststyle model has logged and every report shows), ``histogram`` and ``stability`` when their
    weight is > 0.
    """

    def __init__(self, vgg: VGGFeatures, terms: Sequence[LossTerm]) -> None:
        super().__init__()
        names = [term.name for term in terms]
        if len(set(names)) < len(names) or "total" in names:
            raise ValueError(f"a loss needs terms of different names, none of them 'total'; got {names}")
        self.vgg = vgg
        self.terms = nn.ModuleDict({term.name: term for term in terms})
        self._content_features: Features | None = None
        self._style_ready = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PerceptualLoss:
        """Build from a plain mapping (the ``loss`` config group, also stored in exported models' metadata)."""
        network = dict(config.get("network", {}))
        terms = [term for build in TERM_BUILDERS if (term := build(config)) is not None]
        vgg = VGGFeatures(
            arch=network.get("arch", "vgg16"),
            weights=network.get("weights", "torchvision"),
            pooling=network.get("pooling", "max"),
            layers=[layer for term in terms for layer in (*term.content_layers, *term.layers)],
        )
        return cls(vgg, terms)

    @property
    def style(self) -> StyleLoss | None:
        """The style term (Gram, MRF or spatial Gram), or None without style layers."""
        return self.terms["style"] if "style" in self.terms else None

    def untargeted_copy(self, *replacements: LossTerm) -> PerceptualLoss:
        """The same loss (terms, layers, weights) on this loss's own frozen VGG (shared, not copied) without content
        or style targets, so a caller's loss keeps its targets while the copy gets others; each of
        ``replacements`` takes the place of the term of its name."""
        terms = {name: term.untargeted_copy() for name, term in self.terms.items()}
        return PerceptualLoss(self.vgg, list((terms | {term.name: term for term in replacements}).values()))

    def _style_terms(self) -> list[StyleLoss]:
        return [term for term in self.terms.values() if isinstance(term, StyleLoss)]

    @torch.no_grad()
    def set_style(self, images: torch.Tensor | Sequence[torch.Tensor], blend: Sequence[float] | None = None,
                  **options: Any) -> None:
        """Compute the style terms' targets once from one image 1,3,H,W or several (any sizes), blended by
        ``blend``."""
        self._set_targets(self._style_terms(), images, blend, options)
        self._style_ready = True

    @torch.no_grad()
    def targeted_style_terms(self, images: torch.Tensor | Sequence[torch.Tensor],
                             blend: Sequence[float] | None = None, **options: Any) -> nn.ModuleDict:
        """Target-free copies of this loss's style terms with targets from ``images`` (as ``set_style`` takes
        them), to score against with ``style=``: one set per style when one network learns several."""
        terms = [term.untargeted_copy() for term in self._style_terms()]
        self._set_targets(terms, images, blend, options)
        return nn.ModuleDict({term.name: term for term in terms})

    def _set_targets(self, terms: list[StyleLoss], images: torch.Tensor | Sequence[torch.Tensor],
                     blend: Sequence[float] | None, options: dict[str, Any]) -> None:
        if not terms:
            raise ValueError("this loss has no style layers")
        images = [images] if isinstance(images, torch.Tensor) else list(images)
        weights = blend_weights(len(images), blend)
        device = self.vgg.mean.device
        for term in terms:
            term.set_targets_from_images(self.vgg, [image.to(device) for image in images], weights, **options)

    @property
    def _content_layers(self) -> list[str]:
        return list(dict.fromkeys(layer for term in self.terms.values() for layer in term.content_layers))

    @torch.no_grad()
    def set_content(self, content: torch.Tensor) -> None:
        """Cache the content target of a fixed image N,3,H,W (the optimisation engine's case)."""
        layers = self._content_layers
        self._content_features = self.vgg(content, layers) if layers else {}

    def perturb(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, tuple[int, int]]]:
        """For each term that compares the network's outputs for clean and perturbed inputs (stability): its
        perturbed copy N,3,H,W of the network's input images N,3,H,W and the move (dy, dx) it shows; {} for none."""
        return {term.name: term.perturb(images) for term in self.terms.values() if isinstance(term, PerturbationTerm)}

    def forward(self, output: torch.Tensor, content: torch.Tensor | None = None,
                style: Mapping[str, LossTerm] | None = None,
                perturbed: Mapping[str, PerturbedOutput] | None = None) -> dict[str, torch.Tensor]:
        """Score ``output`` N,3,H,W against ``content`` N,3,H,W (or the cached content) and the style targets (those
        of ``style``, copies from ``targeted_style_terms``, when given: one set per style when one network learns
        several); ``perturbed``: the network's outputs for the copies ``perturb`` made (training only)."""
        if style is None and self._style_terms() and not self._style_ready:
            raise RuntimeError("call set_style(style_images) before computing the loss")
        terms = [style[name] if style is not None and name in style else term for name, term in self.terms.items()]
        wanted = list(dict.fromkeys(layer for term in terms for layer in term.layers))
        scored = Scored(output, self.vgg(output, wanted) if wanted else {}, self._content_targets(content),
                        perturbed or {})
        shares, values = {}, {}
        for term in terms:
            result = term(scored)
            if result:  # {}: nothing to score (a perturbation term without the network's output)
                values[term.name] = result.pop(term.name)
                shares.update(result)
        return {**shares, **values, "total": sum(values.values(), scored.zero())}

    def _content_targets(self, content: torch.Tensor | None) -> Features:
        layers = self._content_layers
        if not layers:
            return {}
        if content is not None:
            with torch.no_grad():
                return self.vgg(content, layers)
        if self._content_features is None:
            raise RuntimeError("pass content images to the loss, or call set_content() first")
        return self._content_features
