"""The two artefacts a fast style-transfer network paints that the loss terms do not show, as figures.

- **Blobs**: solid near-black or near-white patches where the photo has none, the droplets that fast
  style-transfer trainers are known for (jcjohnson/fast-neural-style #81, lengstrom/fast-style-transfer #149,
  pytorch/examples #1121) and that fststyle's first GPU-trained models painted into flat areas
  (checkpoints/README.md). ``blob_share``: the share of pixels inside such a patch.
- **Hatching**: a high-frequency mesh over skies and walls. ``hatching``: the mean absolute Laplacian of the
  output's luminance where the photo is flat; lower is smoother.

Both compare an output with the photo it was made from, so a dark painting style on a dark photo is no blob.
Training logs them on the held-out preview photos (``val/blobs``, ``val/hatching``), the artefact guard
(fststyle.training.guard) watches them, and exported models record them; bench/multistyle.py scores models with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: ITU-R BT.601 luma weights (the Y of JPEG's YCbCr)
LUMA = (0.299, 0.587, 0.114)
#: a photo pixel is "flat" when its luminance gradient (Sobel magnitude after a 5x5 box blur) is below this,
#: in [0,1] units per pixel: skies, walls and table tops of the preview photos, not their edges or textures
FLAT_GRADIENT = 0.01
#: a blob pixel: luminance below BLOB_DARK (or above 1 - BLOB_DARK) over the whole BLOB_SIZE x BLOB_SIZE patch
#: around it, where the photo's luminance is not below (above) PHOTO_DARK (1 - PHOTO_DARK). Chosen on the
#: preview photos: the GPU-trained starry_night / the_scream models score 0.9 / 3.3 % on the vase photo, the
#: CPU-trained ones 0.0 %, whose darkest strokes are thinner than 9 px.
BLOB_DARK, PHOTO_DARK, BLOB_SIZE = 0.06, 0.04, 9
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def luminance(images: torch.Tensor) -> torch.Tensor:
    """N,3,H,W in [0,1] -> N,1,H,W luma (float32)."""
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    return (images.float() * weights).sum(dim=1, keepdim=True)


def _filter(luma: torch.Tensor, kernel: tuple[tuple[float, ...], ...], scale: float = 1.0) -> torch.Tensor:
    """N,1,H,W -> N,1,H,W: a 3x3 ``kernel`` (times ``scale``) over the replicate-padded luminance."""
    weight = torch.tensor(kernel, device=luma.device).view(1, 1, 3, 3) * scale
    return F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), weight)


def flat_mask(photos: torch.Tensor) -> torch.Tensor:
    """N,3,H,W photos -> N,1,H,W bool: where their blurred luminance gradient is below FLAT_GRADIENT."""
    blurred = F.avg_pool2d(luminance(photos), 5, stride=1, padding=2, count_include_pad=False)
    gx = _filter(blurred, SOBEL_X, 1 / 8)
    gy = _filter(blurred, tuple(zip(*SOBEL_X, strict=True)), 1 / 8)
    return (gx.square() + gy.square()).sqrt() < FLAT_GRADIENT


def hatching(outputs: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
    """Mean |Laplacian| of the outputs' luminance over their photos' flat pixels: N,3,H,W, N,3,H,W -> N
    (NaN for a photo without flat pixels)."""
    mask = flat_mask(photos).float()
    response = _filter(luminance(outputs), LAPLACIAN).abs()
    return (response * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))


def blob_share(outputs: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
    """Share of each output's pixels inside a solid near-black or near-white patch its photo lacks there:
    N,3,H,W, N,3,H,W -> N."""
    output_luma, photo_luma = luminance(outputs.clamp(0, 1)), luminance(photos)
    unexpected = (((output_luma < BLOB_DARK) & (photo_luma >= PHOTO_DARK))
                  | ((output_luma > 1 - BLOB_DARK) & (photo_luma <= 1 - PHOTO_DARK))).float()
    solid = F.avg_pool2d(unexpected, BLOB_SIZE, stride=1, padding=BLOB_SIZE // 2, count_include_pad=False)
    return (solid > 1 - 1e-6).float().mean(dim=(1, 2, 3))
