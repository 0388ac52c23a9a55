"""Decode what a user hands us (a path or bytes) to sRGB: EXIF orientation applied, ICC profiles converted,
EXIF kept, oversized files refused before their pixels are decoded. Plain Pillow + PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

from fststyle.errors import UserError
from fststyle.io.convert import pil_to_tensor, resized_pil, to_rgb_and_alpha

# Pillow raises DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS (= 178,956,970 pixels, about
# 13,400 x 13,400); we keep that same ceiling as our default but raise our own error, which names the
# file and the override. At this size the float32 RGB tensor alone takes 2.1 GB.
DEFAULT_MAX_PIXELS = 178_956_970

#: EXIF tag of the orientation that open_image has already applied to the pixels
_ORIENTATION = 0x0112
#: TIFF 6.0 tags that describe a source file's pixel layout (size, samples, compression, strips, tiles,
#: colour map, thumbnail offsets, ICC tag 34675), not the photo: not carried into an output's EXIF
_LAYOUT_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 301, 317,
                          320, 322, 323, 324, 325, 338, 339, 513, 514, 34675})
#: sRGB-equivalent profiles map every probe colour to within this many 8-bit levels of itself (measured on the
#: coco128 profiles: "sRGB IEC61966-2.1" variants 1 level, Adobe RGB 143, a camera RGB profile 64)
_SRGB_TOLERANCE = 1
_SUPPORTED = "JPEG, PNG, WebP, TIFF, BMP"

# Image.MAX_IMAGE_PIXELS is a process-wide setting; we lift it only while opening, under this lock,
# and apply our own per-call limit instead.
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageReadError(UserError):
    """A file could not be decoded as an image, or is larger than allowed; the message says how to fix it."""


class ImageTooLarge(ImageReadError):
    """An image with more pixels than the caller allows (``max_pixels``); its header was read, its pixels never."""


class Photo(NamedTuple):
    """A decoded image: "RGB" pixels in sRGB, its "L" alpha (None if opaque), its EXIF without orientation."""

    rgb: Image.Image
    alpha: Image.Image | None
    exif: bytes | None


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    """LittleCMS's built-in sRGB profile (IEC 61966-2.1): what decoded images are converted to, outputs carry."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def srgb_icc() -> bytes:
    return _srgb_profile().tobytes()


@functools.cache
def _probe_colours() -> Image.Image:
    """A 1xN "RGB" image: grey, red, green and blue ramps (all 256 levels) and a 9x9x9 colour cube."""
    levels = np.arange(256, dtype=np.uint8)
    zeros = np.zeros_like(levels)
    ramps = [np.stack(channels, axis=-1) for channels in
             ((levels, levels, levels), (levels, zeros, zeros), (zeros, levels, zeros), (zeros, zeros, levels))]
    grid = np.linspace(0, 255, 9).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    return Image.fromarray(np.concatenate([*ramps, cube])[None])


@functools.lru_cache(maxsize=64)
def _to_srgb_transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    """The RGB -> sRGB transform of an embedded ICC profile; None when no conversion is needed or possible: an
    sRGB profile (probe colours stay within _SRGB_TOLERANCE), a grey or CMYK profile, or an unreadable one."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "RGB":
            return None
        transform = ImageCms.buildTransform(profile, _srgb_profile(), "RGB", "RGB")
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as error:
        warnings.warn(f"ignoring an unreadable embedded ICC colour profile ({error}); reading the image as sRGB",
                      stacklevel=4)
        return None
    probe = _probe_colours()
    converted = np.asarray(transform.apply(probe), dtype=np.int16)
    if np.abs(converted - np.asarray(probe, dtype=np.int16)).max() <= _SRGB_TOLERANCE:
        return None
    return transform


def uint8_to_srgb(pixels: torch.Tensor, icc_profile: bytes | None) -> torch.Tensor:
    """uint8 Tensor[3,H,W] decoded by a decoder that ignores ICC profiles (torchvision's), and the file's
    embedded profile -> the pixels converted to sRGB as open_image converts them (the same tensor when no
    conversion is needed)."""
    transform = _to_srgb_transform(icc_profile) if icc_profile else None
    if transform is None:
        return pixels
    converted = transform.apply(Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()))
    return torch.from_numpy(np.array(converted, dtype=np.uint8)).permute(2, 0, 1)


def _exif_without_orientation(img: Image.Image) -> bytes | None:
    """The EXIF block of a decoded image, minus its orientation and TIFF layout tags (None if there is none)."""
    try:
        exif = img.getexif()
        for tag in (_ORIENTATION, *_LAYOUT_TAGS):
            exif.pop(tag, None)
        return exif.tobytes() if len(exif) else None
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return None  # damaged EXIF: the pixels are still good, the metadata is dropped


@contextlib.contextmanager
def _pillow_bomb_check_disabled() -> Iterator[None]:
    """Let Pillow open any size; the caller enforces `max_pixels` itself."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(
    path: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, Image.Image | None]:
    """Decode `path` (a file, or its bytes), EXIF-oriented and converted to sRGB, to an "RGB" image and its "L"
    alpha (None if opaque).

    Grey, palette, CMYK, LA/RGBA/PA and 16-bit/float modes are converted; 16-bit values are scaled
    (65535 -> 255), not clipped. An embedded RGB ICC profile (Display P3, Adobe RGB, ...) is converted to
    sRGB. Raises ImageReadError for corrupt, truncated, non-image or oversized files; a missing file raises
    FileNotFoundError.
    """
    photo = read_photo(path, max_pixels=max_pixels)
    return photo.rgb, photo.alpha


def check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    """Raise ImageTooLarge (naming ``name`` and the override) for an image of more than ``max_pixels``."""
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust this file, raise the limit: max_pixels={width * height}."
        )


def read_photo(source: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> Photo:
    """``open_image`` of a file path or of the file's bytes (an upload), plus its EXIF block without the
    orientation (already applied to the pixels). Errors name ``name``: the path, or "uploaded image"."""
    if name is None:
        name = "uploaded image" if isinstance(source, bytes | bytearray) else str(source)
    with contextlib.ExitStack() as stack:
        handle = (io.BytesIO(source) if isinstance(source, bytes | bytearray)
                  else stack.enter_context(open(source, "rb")))
        try:
            with _pillow_bomb_check_disabled():
                img = Image.open(handle)
            check_pixels(name, img.width, img.height, max_pixels)
            img.load()
            icc = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img)
            rgb, alpha = to_rgb_and_alpha(img)
            transform = _to_srgb_transform(icc) if icc else None
            if transform is not None:
                rgb = transform.apply(rgb)
            return Photo(rgb, alpha, _exif_without_orientation(img))
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as err:
            raise ImageReadError(
                f"{name}: cannot read image ({type(err).__name__}: {err}). Supported formats: {_SUPPORTED}. "
                "Fix: re-download or re-export the file (e.g. as PNG or JPEG), or remove it."
            ) from err


def load_image(
    path: str | os.PathLike | bytes,
    size: int | tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Read an image (a file, or its bytes) as Tensor[1,3,H,W] in [0,1]; int `size` = longer side, (H, W) =
    exact, None = as is."""
    rgb, _ = open_image(path, max_pixels=max_pixels)
    return pil_to_tensor(resized_pil(rgb, size)).unsqueeze(0)


def _decode_jpeg(data: torch.Tensor) -> torch.Tensor:
    """JPEG bytes (uint8 Tensor[L]) -> EXIF-oriented RGB uint8 Tensor[3,H,W] (libjpeg-turbo)."""
    from torchvision.io import ImageReadMode, decode_jpeg  # deferred: torchvision adds ~0.5 s to a bare start

    return decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)


#: torchvision's decoder for each format (Pillow's name) it decodes here: JPEG only, which is what COCO
#: holds and where it is about 2x faster than Pillow. Not PNG: torchvision 0.29's libpng wrapper crashes the
#: whole process (SIGSEGV) on a damaged PNG instead of raising (82 of 150 randomly corrupted PNGs here,
#: e.g. one flipped byte in the pixel data), while Pillow decodes PNG about as fast (2.9 vs 2.5 ms for a
#: 431x288 COCO photo). Not WebP: torchvision ignores its EXIF orientation (1.3 vs 0.8 ms in Pillow).
_TORCHVISION_DECODERS = {"JPEG": _decode_jpeg, "MPO": _decode_jpeg}


def _torchvision_decoder(data: bytes, path: str,
                         max_pixels: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], bytes | None] | None:
    """(the torchvision decoder, the embedded ICC profile or None) for the image in `data` once its header
    passed the size check, or None: let Pillow (open_image) decode it. Raises ImageReadError if the
    header declares more than max_pixels.

    Pillow reads the header only (no pixel data) and names the format; the bytes go to torchvision's decoder
    of that same format, which reads the same header, so the size checked is the size decoded (libjpeg
    rejects the files where the two could disagree: a second SOF marker). A header Pillow refuses, its own
    DecompressionBombError included, never reaches torchvision: open_image checks the size against
    max_pixels itself before decoding anything.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the limit here
            header = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    check_pixels(path, *header.size, max_pixels)
    decoder = _TORCHVISION_DECODERS.get(header.format)
    return None if decoder is None else (decoder, header.info.get("icc_profile"))


def read_rgb_uint8(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode `path` to a uint8 Tensor[3,H,W] (EXIF-oriented RGB): torchvision for JPEG, Pillow for the rest.

    torchvision's libjpeg-turbo decoder handles 8-bit JPEG (grey and CMYK included); PNG, WebP, TIFF, BMP
    and anything torchvision rejects go through open_image. The header's size is checked against
    max_pixels before any pixel is decoded. Both paths convert an embedded ICC profile to sRGB
    (torchvision ignores it, uint8_to_srgb applies it). Raises ImageReadError for corrupt or
    oversized files.
    """
    data = Path(path).read_bytes()
    torchvision_decoder = _torchvision_decoder(data, str(path), max_pixels)
    try:
        if torchvision_decoder is not None:
            decoder, icc_profile = torchvision_decoder
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a dependency yet).
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = decoder(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            if decoded.dtype == torch.uint8:
                return uint8_to_srgb(decoded, icc_profile)
    except RuntimeError:
        pass  # damaged data: Pillow decodes it or names the problem
    rgb = read_photo(data, max_pixels=max_pixels, name=str(path)).rgb  # the bytes already read, not the file again
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)

