"""Adaptive gradient clipping: each step's gradients clipped to a multiple of the run's running mean norm."""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: the weight of the newest step in the running mean of gradient norms that a step's norm is clipped against
#: (0.99: a memory of about 100 steps)
GRADIENT_NORM_MOMENTUM = 0.99


class RunningNormClip:
    """Scales gradients so their global norm is at most ``multiple`` x the running mean of the past steps'
    (clipped) norms, on the device with no host sync.

    A fixed ``gradient_clip_val`` would need a value per preset, as the loss weights differ by 1e5 between them;
    a multiple of the run's own typical norm needs none (AutoClip, Seetharaman et al. 2020, clips to a percentile
    of the norm history likewise). A non-finite norm (a skipped fp16 step) leaves the gradients and the mean alone.
    """

    def __init__(self, multiple: float) -> None:
        self.multiple = multiple
        #: running mean of the clipped gradient norms (a scalar tensor); 0 until the first step of this process
        self.mean = torch.zeros(())

    def __call__(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Clip the gradients of ``parameters`` in place and update the running mean."""
        gradients = [p.grad for p in parameters if p.grad is not None]
        if not gradients:
            return
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients)).float())
        mean = self.mean.to(norm.device)
        limit = torch.where(mean > 0, self.multiple * mean, norm)
        finite = torch.isfinite(norm)
        scale = torch.where(finite, (limit / norm.clamp_min(1e-30)).clamp(max=1.0), torch.ones_like(norm))
        torch._foreach_mul_(gradients, scale)
        clipped = torch.minimum(norm, limit)
        updated = torch.where(mean > 0, GRADIENT_NORM_MOMENTUM * mean + (1 - GRADIENT_NORM_MOMENTUM) * clipped, norm)
        self.mean = torch.where(finite, updated, mean)
