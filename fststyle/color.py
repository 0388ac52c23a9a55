"""Colour control (Gatys, Ecker, Bethge, Hertzmann & Shechtman 2017, "Controlling Perceptual Factors in
Neural Style Transfer", §5): keep the photo's colours by transferring luminance only, in YIQ space."""

from __future__ import annotations

import torch

#: NTSC RGB -> YIQ matrix (FCC 1953; the colour space Gatys et al. 2017 use)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    """N,3,H,W RGB in [0,1] -> N,3,H,W YIQ (Y in [0,1])."""
    return torch.einsum("ij,njhw->nihw", RGB_TO_YIQ.to(images), images)


def yiq_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """N,3,H,W YIQ -> N,3,H,W RGB, clamped to [0,1]."""
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(RGB_TO_YIQ).to(images), images).clamp(0, 1)


def preserve_colors(stylised: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylised`` with the chroma (I, Q) of ``original``: both N,3,H,W -> N,3,H,W."""
    y = rgb_to_yiq(stylised)[:, :1]
    iq = rgb_to_yiq(original)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1))


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey style image whose luminance has the content's mean and std (Gatys et al. 2017 eq. 8):
    style 1,3,H,W and content 1,3,h,w -> 1,3,H,W, for luminance-only optimisation."""
    y_style = rgb_to_yiq(style)[:, :1]
    y_content = rgb_to_yiq(content)[:, :1]
    scale = y_content.std() / y_style.std().clamp_min(1e-6)
    y = ((y_style - y_style.mean()) * scale + y_content.mean()).clamp(0, 1)
    return y.expand(-1, 3, -1, -1).contiguous()
