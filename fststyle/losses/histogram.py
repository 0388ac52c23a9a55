"""Histogram loss (Risser, Wilmot & Barnes 2017, "Stable and Controllable Neural Texture Synthesis and Style
Transfer Using Histogram Losses", arXiv 1701.08893): Gram matrices can match while the activations' means and
variances do not (their account of the instability of Gram-only synthesis); the histogram loss pulls each
feature channel's whole distribution toward the style's.

Risser et al. remap the output's activations O_l of layer l, channel by channel, onto the style's histogram by
histogram matching, R(O_l), and add sum_l gamma_l ||O_l - R(O_l)||^2 with no gradient through R; they use relu1_1
and relu4_1. Histogram matching is usually done through binned histograms; here it is exact, by sorting (the
limit of ever finer bins), and the squared norm is a mean, as in every fststyle term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fststyle.losses.functional import feature_mse
from fststyle.losses.terms import Features, StyleLoss


def sorted_mixture(samples: Sequence[torch.Tensor], blend: Sequence[float]) -> torch.Tensor:
    """The quantile function of a weighted mixture, per channel: samples C,M_i of each distribution and their
    weights -> C,K sorted values at the mixture's mid-quantiles (k + 1/2) / K, K = the count of samples of
    weight > 0. One distribution (the others weighted 0) gives exactly its own sorted samples."""
    kept = [(values, weight) for values, weight in zip(samples, blend, strict=True) if weight > 0]
    values = torch.cat([v for v, _ in kept], dim=1)
    mass = torch.cat([torch.full((v.shape[1],), w / v.shape[1], dtype=torch.float64, device=v.device)
                      for v, w in kept])
    ordered, order = values.sort(dim=1)
    cumulative = mass[order].cumsum(dim=1)  # float64: the step between mid-quantiles is 1/K, far above its error
    cumulative /= cumulative[:, -1:].clone()
    count = values.shape[1]
    quantiles = ((torch.arange(count, dtype=torch.float64, device=values.device) + 0.5) / count)
    index = torch.searchsorted(cumulative, quantiles.expand(values.shape[0], count).contiguous())
    return ordered.gather(1, index.clamp_(max=count - 1))


def match_histograms(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Exact 1-D histogram matching per channel: features N,C,h,w and a target's sorted values C,K -> N,C,h,w
    with the same order of values in each channel and the target's values: the value of rank r of n = h*w takes
    the target's value at quantile (r + 1/2) / n, linearly interpolated between its K sorted values (each at
    quantile (k + 1/2) / K; for n = K, exactly the target's values)."""
    n, c, height, width = features.shape
    count, known = height * width, target.shape[1]
    flat = features.reshape(n, c, count)
    ranks = torch.arange(count, dtype=torch.float64, device=features.device)
    position = ((ranks + 0.5) * known / count - 0.5).clamp(0, known - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=known - 1)
    fraction = (position - low).to(target.dtype)
    resampled = target[:, low] + fraction * (target[:, high] - target[:, low])  # C, n
    remapped = torch.empty_like(flat).scatter_(2, flat.argsort(dim=2), resampled.expand(n, c, count))
    return remapped.reshape(n, c, height, width)


class HistogramLoss(StyleLoss):
    """Histogram term (Risser et al. 2017): per layer, layer weight * MSE between the output's features N,C,h,w
    and their copy remapped by ``match_histograms`` onto the style's distribution (no gradient through the remap).

    Targets: per layer, each channel's sorted style activations C,K. Several styles blend as a mixture, the
    weighted mean of their histograms, as the Gram targets are the weighted mean of the style Gram matrices (the
    Gram matrix of that same mixture); a blend weight of 0 drops a style.
    """

    name = "histogram"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HistogramLoss | None:
        """The term of a loss config's ``histogram_weight`` and ``histogram_layers``; None when the weight is 0."""
        weight = float(config.get("histogram_weight", 0.0))
        if weight < 0:
            raise ValueError(f"histogram_weight must be >= 0 (0: off), got {weight}")
        return cls(dict(config.get("histogram_layers") or {}), weight=weight) if weight else None

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        if options:
            raise TypeError(f"HistogramLoss takes no target options (masks need the Gram loss), got {sorted(options)}")
        for layer in self.layers:
            samples = [f[layer].float().transpose(0, 1).flatten(1) for f in style_features]  # C, N*h*w each
            self.register_buffer(f"target_{layer}", sorted_mixture(samples, blend), persistent=False)

    def layer_losses(self, features: Features) -> Features:
        losses = {}
        for layer, weight in self.layer_weights.items():
            feats = features[layer].float()
            remapped = match_histograms(feats.detach(), getattr(self, f"target_{layer}"))
            losses[layer] = weight * feature_mse(feats, remapped)
        return losses
