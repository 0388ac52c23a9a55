"""Conversions between Pillow images and [0,1] tensors, and resizing (the longer-side rule lives here)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a single-channel 16/32-bit or float image to 8-bit "L" (Pillow's own convert clips)."""
    values = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        full_scale = 65535.0
    elif img.mode == "I":
        # Older Pillow (and some TIFFs) hold 16-bit samples in 32-bit "I"; treat them as 16-bit.
        full_scale = 65535.0
    else:  # "F": float TIFFs are usually [0, 1]; otherwise assume 8- or 16-bit ranges.
        peak = float(np.nanmax(values)) if values.size else 0.0
        full_scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    scaled = np.clip(np.nan_to_num(values) * (255.0 / full_scale), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


def to_rgb_and_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Convert any Pillow mode to ("RGB" image, "L" alpha or None)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_depth_to_l(img).convert("RGB"), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return (img if img.mode == "RGB" else img.convert("RGB")), None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode; alpha dropped) -> float32 Tensor[3,H,W] in [0,1]."""
    rgb, _ = to_rgb_and_alpha(img)
    array = np.array(rgb, dtype=np.uint8)  # copy: torch wants a writable buffer
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _as_chw(image: torch.Tensor) -> torch.Tensor:
    """Tensor[3,H,W] or Tensor[1,3,H,W] -> Tensor[3,H,W] (float32, CPU)."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image tensor of shape 3,H,W or 1,3,H,W; got {tuple(image.shape)}")
    return image.detach().to(device="cpu", dtype=torch.float32)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Tensor[3,H,W] or [1,3,H,W] in [0,1] -> "RGB" PIL image (clamped, rounded; NaN -> 0)."""
    chw = _as_chw(image).nan_to_num(0.0).clamp(0.0, 1.0)
    array = chw.mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array)


def longer_side_size(height: int, width: int, longer: int) -> tuple[int, int]:
    """(H, W) scaled so that the longer side is ``longer`` px, aspect kept (each side at least 1 px)."""
    scale = longer / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resized_pil(img: Image.Image, size: int | tuple[int, int] | None) -> Image.Image:
    """Resize so the longer side is `size` (int), to exactly (H, W) (tuple), or not at all (None)."""
    if size is None:
        return img
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        height, width = longer_side_size(img.height, img.width, size)
        target = (width, height)
    else:
        height, width = size
        if height <= 0 or width <= 0:
            raise ValueError(f"size must be positive, got {size}")
        target = (int(width), int(height))
    if target == img.size:
        return img
    # Pillow's bicubic widens its kernel when shrinking, i.e. it is antialiased.
    return img.resize(target, Image.Resampling.BICUBIC)


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,h,w], resampled as `load_image` does (int = longer side)."""
    return pil_to_tensor(resized_pil(tensor_to_pil(image), size)).unsqueeze(0)


