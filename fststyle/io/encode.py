"""Encode [0,1] sRGB images to bytes or to a file (atomically): the format follows the suffix, with an sRGB
ICC profile, the source's EXIF and alpha where the format holds them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image

from fststyle.errors import UserError, check_integer_setting
from fststyle.io.convert import tensor_to_pil, to_rgb_and_alpha
from fststyle.io.decode import srgb_icc
from fststyle.io.files import atomic_write

_SAVE_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_FORMATS_WITH_ALPHA = {"PNG", "WEBP", "TIFF"}
_FORMATS_WITH_METADATA = {"JPEG", "PNG", "WEBP", "TIFF"}  # Pillow writes ICC profiles and EXIF into these
DEFAULT_JPEG_QUALITY = 95  # fststyle's fixed value before it became a setting (Pillow's own default is 75)


def alpha_to_pil(alpha: Image.Image | torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """Alpha as PIL "L" or Tensor[1,H,W]/[H,W] in [0,1] -> "L" image of `size` (W, H)."""
    if isinstance(alpha, torch.Tensor):
        plane = alpha.detach().float().cpu().reshape(alpha.shape[-2], alpha.shape[-1])
        if alpha.numel() != plane.numel():
            raise ValueError(f"alpha must be a single channel (1,H,W or H,W); got {tuple(alpha.shape)}")
        array = plane.nan_to_num(0.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        alpha = Image.fromarray(array)
    alpha = alpha.convert("L")
    # A stylised image may come back at a different size than its source; stretch the mask to fit.
    return alpha if alpha.size == size else alpha.resize(size, Image.Resampling.BICUBIC)


def check_image_suffix(path: str | os.PathLike, setting: str | None = None) -> Path:
    """Return `path` if its suffix names an image format save_image writes, else raise UserError (naming the
    caller's ``setting``, e.g. ``output``, when given)."""
    path = Path(path)
    if path.suffix.lower() not in _SAVE_FORMATS:
        example = path.with_suffix(".png")
        raise UserError(
            f"{f'{setting} ' if setting else ''}{path}: unknown image suffix {path.suffix!r}; use one of "
            f"{', '.join(sorted(_SAVE_FORMATS))} (e.g. {f'{setting}=' if setting else ''}{example})"
        )
    return path


def check_jpeg_quality(quality: int, setting: str = "quality") -> int:
    """Return `quality` if it is a JPEG/WebP quality Pillow accepts (an integer 1..100), else raise UserError
    naming ``setting`` (the caller's name for it)."""
    return check_integer_setting(setting, quality, 1, 100, "Pillow's JPEG/WebP quality scale", DEFAULT_JPEG_QUALITY)


def encode_image(
    image: torch.Tensor | Image.Image,
    suffix: str = ".png",
    *,
    alpha: Image.Image | torch.Tensor | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
    exif: bytes | None = None,
) -> bytes:
    """A [0,1] sRGB Tensor[3,H,W]/[1,3,H,W] or PIL image -> the bytes of a file of that ``suffix``'s format.

    `alpha` is attached for PNG, WebP and TIFF and dropped for JPEG and BMP. A PIL image's own alpha
    is kept unless `alpha` is given. JPEG, PNG, WebP and TIFF get an sRGB ICC profile and `exif` (an
    EXIF block, e.g. ``Photo.exif``); `quality` (1..100) applies to JPEG and WebP.
    """
    buffer = io.BytesIO()
    _write_encoded(image, buffer, check_image_suffix(Path("image" + suffix)), alpha, quality, exif)
    return buffer.getvalue()


def save_image(
    image: torch.Tensor | Image.Image,
    path: str | os.PathLike,
    *,
    alpha: Image.Image | torch.Tensor | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
    exif: bytes | None = None,
) -> Path:
    """Write what ``encode_image`` encodes to ``path`` atomically; the format follows the suffix. Returns the
    written path."""
    path = check_image_suffix(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        _write_encoded(image, handle, path, alpha, quality, exif)
    return path


def _write_encoded(image: torch.Tensor | Image.Image, handle: BinaryIO, path: Path,
                   alpha: Image.Image | torch.Tensor | None, quality: int, exif: bytes | None) -> None:
    """Encode ``image`` into the open binary ``handle`` in the format of ``path``'s (checked) suffix."""
    fmt = _SAVE_FORMATS[path.suffix.lower()]
    if isinstance(image, Image.Image):
        rgb, own_alpha = to_rgb_and_alpha(image)
        alpha = own_alpha if alpha is None else alpha
    else:
        rgb = tensor_to_pil(image)
    out = rgb
    if alpha is not None and fmt in _FORMATS_WITH_ALPHA:
        out = rgb.copy()
        out.putalpha(alpha_to_pil(alpha, rgb.size))
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = check_jpeg_quality(quality)
    if fmt in _FORMATS_WITH_METADATA:
        options["icc_profile"] = srgb_icc()
        if exif:
            options["exif"] = exif
    out.save(handle, format=fmt, **options)
