"""Image I/O: decode anything a user hands us to sRGB [0,1] tensors, and write results back safely.

Plain PyTorch + Pillow (no Lightning, no Hydra) so it works from a notebook.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps

from fststyle.errors import InputNotFoundError, UserError, check_integer_setting
from fststyle.files import OUTPUT_MARKER, atomic_write

# Pillow raises DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS (= 178,956,970 pixels, about
# 13,400 x 13,400); we keep that same ceiling as our default but raise our own error, which names the
# file and the override. At this size the float32 RGB tensor alone takes 2.1 GB.
DEFAULT_MAX_PIXELS = 178_956_970

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}

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
def _srgb_icc() -> bytes:
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


def _to_rgb_and_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Convert any Pillow mode to ("RGB" image, "L" alpha or None)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_depth_to_l(img).convert("RGB"), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return (img if img.mode == "RGB" else img.convert("RGB")), None


def open_image(
    path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, Image.Image | None]:
    """Decode `path` (EXIF-oriented, converted to sRGB) to an "RGB" image and its "L" alpha (None if opaque).

    Grey, palette, CMYK, LA/RGBA/PA and 16-bit/float modes are converted; 16-bit values are scaled
    (65535 -> 255), not clipped. An embedded RGB ICC profile (Display P3, Adobe RGB, ...) is converted to
    sRGB. Raises ImageReadError for corrupt, truncated, non-image or oversized files; a missing file raises
    FileNotFoundError.
    """
    photo = read_photo(path, max_pixels=max_pixels)
    return photo.rgb, photo.alpha


def read_photo(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """``open_image`` plus the file's EXIF block without its orientation (already applied to the pixels)."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            with _pillow_bomb_check_disabled():
                img = Image.open(handle)
            pixels = img.width * img.height
            if pixels > max_pixels:
                raise ImageReadError(
                    f"{path}: image is {img.width}x{img.height} = {pixels:,} pixels, more than the limit of "
                    f"max_pixels={max_pixels:,}. If you trust this file, raise the limit: pass "
                    f"max_pixels= to open_image/load_image, or set the config key max_pixels "
                    f"(e.g. max_pixels={pixels})."
                )
            img.load()
            icc = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img)
            rgb, alpha = _to_rgb_and_alpha(img)
            transform = _to_srgb_transform(icc) if icc else None
            if transform is not None:
                rgb = transform.apply(rgb)
            return Photo(rgb, alpha, _exif_without_orientation(img))
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as err:
            raise ImageReadError(
                f"{path}: cannot read image ({type(err).__name__}: {err}). Supported formats: {_SUPPORTED}. "
                "Fix: re-download or re-export the file (e.g. as PNG or JPEG), or remove it."
            ) from err


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode; alpha dropped) -> float32 Tensor[3,H,W] in [0,1]."""
    rgb, _ = _to_rgb_and_alpha(img)
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


def _resized(img: Image.Image, size: int | tuple[int, int] | None) -> Image.Image:
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


def load_image(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Read an image as Tensor[1,3,H,W] in [0,1]; int `size` = longer side, (H, W) = exact, None = as is."""
    rgb, _ = open_image(path, max_pixels=max_pixels)
    return pil_to_tensor(_resized(rgb, size)).unsqueeze(0)


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,h,w], resampled as `load_image` does (int = longer side)."""
    return pil_to_tensor(_resized(tensor_to_pil(image), size)).unsqueeze(0)


def _alpha_to_pil(alpha: Image.Image | torch.Tensor, size: tuple[int, int]) -> Image.Image:
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


def check_image_suffix(path: str | os.PathLike) -> Path:
    """Return `path` if its suffix names an image format save_image writes, else raise UserError."""
    path = Path(path)
    if path.suffix.lower() not in _SAVE_FORMATS:
        raise UserError(
            f"output {path}: unknown image suffix {path.suffix!r}; use one of {', '.join(sorted(_SAVE_FORMATS))} "
            f"(e.g. output={path.with_suffix('.png')})"
        )
    return path


def check_jpeg_quality(quality: int) -> int:
    """Return `quality` if it is a JPEG/WebP quality Pillow accepts (an integer 1..100), else raise UserError."""
    return check_integer_setting("jpeg_quality", quality, 1, 100, "Pillow's JPEG/WebP quality scale",
                                 DEFAULT_JPEG_QUALITY)


def save_image(
    image: torch.Tensor | Image.Image,
    path: str | os.PathLike,
    *,
    alpha: Image.Image | torch.Tensor | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
    exif: bytes | None = None,
) -> Path:
    """Write a [0,1] sRGB Tensor[3,H,W]/[1,3,H,W] or PIL image atomically; the format follows the suffix.

    `alpha` is attached for PNG, WebP and TIFF and dropped for JPEG and BMP. A PIL image's own alpha
    is kept unless `alpha` is given. JPEG, PNG, WebP and TIFF get an sRGB ICC profile and `exif` (an
    EXIF block, e.g. ``Photo.exif``); `quality` (1..100) applies to JPEG and WebP. Returns the written path.
    """
    path = check_image_suffix(path)
    fmt = _SAVE_FORMATS[path.suffix.lower()]
    if isinstance(image, Image.Image):
        rgb, own_alpha = _to_rgb_and_alpha(image)
        alpha = own_alpha if alpha is None else alpha
    else:
        rgb = tensor_to_pil(image)
    out = rgb
    if alpha is not None and fmt in _FORMATS_WITH_ALPHA:
        out = rgb.copy()
        out.putalpha(_alpha_to_pil(alpha, rgb.size))
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = check_jpeg_quality(quality)
    if fmt in _FORMATS_WITH_METADATA:
        options["icc_profile"] = _srgb_icc()
        if exif:
            options["exif"] = exif
    with atomic_write(path) as tmp:
        out.save(tmp, format=fmt, **options)
    return path


def list_images(folder: str | os.PathLike, suffixes: Collection[str] | None = IMAGE_SUFFIXES) -> list[Path]:
    """All image files (or files with other ``suffixes``, lower case; None: every file) under `folder` (recursive,
    sorted); hidden files and folders are skipped, and so are sub-folders that fststyle wrote outputs into (they
    hold files.OUTPUT_MARKER)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = []
    for directory, subfolders, names in os.walk(folder):
        # Skips macOS "._x.jpg" resource forks, .ipynb_checkpoints and our own atomic-write temp files.
        subfolders[:] = [name for name in subfolders
                         if not name.startswith(".") and not os.path.isfile(os.path.join(directory, name, OUTPUT_MARKER))]
        for name in names:
            path = Path(directory, name)
            if not name.startswith(".") and (suffixes is None or path.suffix.lower() in suffixes) and path.is_file():
                found.append(path)
    return sorted(found)


def image_files(sources: str | os.PathLike | Sequence[str | os.PathLike], setting: str = "input") -> list[Path]:
    """The image files ``sources`` names: each one a file, or a folder (its images, as ``list_images``).

    Raises InputNotFoundError naming ``setting`` for a source that does not exist or a folder without images."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise InputNotFoundError(f"{setting}: no images in {item} (looked for "
                                         f"{', '.join(sorted(IMAGE_SUFFIXES))}); pass a folder of photos")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise InputNotFoundError(f"{setting} not found: {item}; pass an image file or a folder of images")
    if not files:
        raise InputNotFoundError(f"{setting}: no image given; pass an image file or a folder of images")
    return files


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (the fixed bitmap font on Pillow < 10.1 or without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _cell_image(cell: torch.Tensor | Image.Image | None, height: int) -> Image.Image | None:
    """A grid cell as an RGB PIL image of the given height (aspect kept); None stays empty."""
    if cell is None:
        return None
    img = _to_rgb_and_alpha(cell)[0] if isinstance(cell, Image.Image) else tensor_to_pil(cell)
    width = max(1, round(img.width * height / img.height))
    return img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BICUBIC)


def labelled_grid(
    rows: Sequence[Sequence[torch.Tensor | Image.Image | None]],
    *,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_height: int = 256,
    pad: int = 4,
) -> Image.Image:
    """Lay out images (Tensor[3,H,W]/[1,3,H,W] or PIL; None = blank) in a white grid with text labels.

    Every cell is scaled to `cell_height` keeping its aspect; a column is as wide as its widest cell
    (or label) and narrower cells are centred. Column labels form a header row, row labels a left column.
    """
    n_rows = len(rows)
    n_cols = max((len(row) for row in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("labelled_grid needs at least one cell")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"got {len(col_labels)} col_labels for {n_cols} columns")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"got {len(row_labels)} row_labels for {n_rows} rows")

    font = _font(max(12, cell_height // 16))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = font.getbbox(text)
        return right - left, bottom - top

    cells = [[_cell_image(cell, cell_height) for cell in row] for row in rows]
    col_widths = []
    for col in range(n_cols):
        widths = [row[col].width for row in cells if col < len(row) and row[col] is not None]
        if col_labels is not None:
            widths.append(text_size(col_labels[col])[0])
        col_widths.append(max(widths, default=cell_height))
    header_height = max(text_size(label)[1] for label in col_labels) + 2 * pad if col_labels else 0
    label_width = max(text_size(label)[0] for label in row_labels) + 2 * pad if row_labels else 0

    width = label_width + sum(col_widths) + pad * (n_cols + 1)
    height = header_height + n_rows * cell_height + pad * (n_rows + 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    col_lefts = [label_width + pad + sum(col_widths[:c]) + pad * c for c in range(n_cols)]

    for col, label in enumerate(col_labels or []):
        text_width = text_size(label)[0]
        draw.text((col_lefts[col] + (col_widths[col] - text_width) // 2, pad), label, fill="black", font=font)
    for r, row in enumerate(cells):
        top = header_height + pad + r * (cell_height + pad)
        if row_labels:
            text_height = text_size(row_labels[r])[1]
            draw.text((pad, top + (cell_height - text_height) // 2), row_labels[r], fill="black", font=font)
        for col, img in enumerate(row):
            if img is not None:
                canvas.paste(img, (col_lefts[col] + (col_widths[col] - img.width) // 2, top))
    return canvas
