"""Blend weights of several styles, shared by the loss (blended Gram targets) and the style model (blended
instance-norm scale and shift); plain Python, so loading a model for inference does not import the losses."""

from __future__ import annotations

from collections.abc import Sequence


def blend_weights(count: int, blend: Sequence[float] | None) -> list[float]:
    """Normalised, validated blend weights for ``count`` style images (equal weights when ``blend`` is None)."""
    if blend is None:
        return [1.0 / count] * count
    if len(blend) != count:
        raise ValueError(f"got {count} style images but {len(blend)} blend weights; give one weight per style")
    if any(w < 0 for w in blend) or sum(blend) <= 0:
        raise ValueError(f"blend weights must be >= 0 with a positive sum, got {list(blend)}")
    return [float(w) / sum(blend) for w in blend]
