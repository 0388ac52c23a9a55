"""Pure loss functions on tensors; no state, no VGG."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``F F^T / (C*H*W)`` per image (Gatys et al. 2015, eq. 3; Johnson et al. 2016, eq. 3):
    N,C,H,W -> N,C,C, always in float32 (fp16 overflows in the product before normalisation)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w).float()
    with torch.autocast(device_type=flat.device.type, enabled=False):
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def feature_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference, reduced in float32 (Johnson et al. 2016, eq. 2): any shapes that broadcast -> scalar."""
    return F.mse_loss(output.float(), target.float().expand_as(output))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, mean absolute difference of neighbouring pixels (Rudin, Osher & Fatemi 1992;
    the TV regulariser of Johnson et al. 2016 §3.3): N,C,H,W -> scalar, independent of image size."""
    x = images.float()
    tv = x.new_zeros(())
    if x.shape[-2] > 1:
        tv = tv + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    if x.shape[-1] > 1:
        tv = tv + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return tv
