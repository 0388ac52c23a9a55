"""MRF style loss (Li & Wand 2016, "Combining Markov Random Fields and Convolutional Neural Networks for Image
Synthesis", CNNMRF): every k x k patch of the output's feature map is pulled toward its nearest style patch.

The nearest patch is found by normalised cross-correlation, computed as a convolution of the output's features
with the L2-normalised style patches (Li & Wand 2016 eq. 3), one chunk of patches at a time so memory stays
bounded; matching runs without gradients, only the distance to the gathered matches is differentiated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import InterpolationMode, rotate

from fststyle.errors import UserError
from fststyle.losses.functional import feature_mse
from fststyle.losses.terms import Features, StyleLoss
from fststyle.nets.vgg import VGGFeatures

#: CNNMRF's fixed augmentation steps (chuanli11/CNNMRF, transfer_CNNMRF_wrapper.lua: target_step_rotation
#: = pi/24, target_step_scale = 1.05)
ROTATION_STEP = math.pi / 24
SCALE_STEP = 1.05
#: most rotated / scaled copies per side: 12 rotation steps reach pi/2, 12 scale steps 1.05^12 = 1.8;
#: CNNMRF's examples use 1. A style-loss config may come from a model file, so its copy count is bounded.
MAX_AUGMENTATION_STEPS = 12


class PatchSizeError(UserError):
    """A feature map smaller than the MRF patch: the image (or a pyramid level of it) is too small."""


def patch_size_problem(layer: str, height: int, width: int, patch: int, what: str) -> str | None:
    """Why a ``height`` x ``width`` feature map of ``layer`` holds no ``patch`` x ``patch`` patch, or None
    (sizes written width x height, as image sizes are)."""
    if height >= patch and width >= patch:
        return None
    return f"{layer} of the {what} is {width}x{height}, smaller than the {patch}x{patch} MRF patch"


def extract_patches(features: torch.Tensor, size: int, stride: int = 1) -> torch.Tensor:
    """All size x size patches of features N,C,H,W (every ``stride`` pixels) -> L,C,size,size."""
    n, c, h, w = features.shape
    if h < size or w < size:
        raise PatchSizeError(f"a {w}x{h} feature map is smaller than the {size}x{size} MRF patch; use a larger image")
    columns = F.unfold(features, size, stride=stride)  # N, C*size*size, L per image
    return columns.transpose(1, 2).reshape(-1, c, size, size)


def normalise_patches(patches: torch.Tensor) -> torch.Tensor:
    """Patches L,C,k,k -> the same patches scaled to unit L2 norm (all-zero patches stay zero)."""
    norms = patches.flatten(1).norm(dim=1).clamp_min(1e-8)
    return patches / norms.view(-1, 1, 1, 1)


@torch.no_grad()
def nearest_patches(features: torch.Tensor, normalised_bank: torch.Tensor, stride: int = 1,
                    chunk_size: int | None = None) -> torch.Tensor:
    """Index of the best style patch for each output patch: features N,C,H,W and a unit-norm bank L,C,k,k
    -> N,P (P = output patches, row-major at ``stride``), maximising the normalised cross-correlation.

    The output patch's own norm is the same for every candidate, so the argmax only needs the style patches
    normalised (Li & Wand 2016 eq. 3). ``chunk_size`` bounds the response tensor to N x chunk x P floats.
    """
    count = normalised_bank.shape[0]
    chunk = count if not chunk_size else int(chunk_size)
    best_score = best_index = None
    for start in range(0, count, chunk):
        response = F.conv2d(features, normalised_bank[start:start + chunk], stride=stride).flatten(2)
        score, index = response.max(dim=1)  # N, P
        index += start
        if best_score is None:
            best_score, best_index = score, index
        else:
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best_index = torch.where(better, index, best_index)
    return best_index


def _rotation_crop(height: int, width: int, angle: float) -> tuple[int, int]:
    """Size of the largest centred rectangle without empty corners in a height x width image rotated by ``angle``."""
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    keep = min(width / (width * cos + height * sin), height / (width * sin + height * cos))
    return max(1, int(height * keep)), max(1, int(width * keep))


def _scaled(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, round(height * factor)), max(1, round(width * factor))


def augmented_sizes(height: int, width: int, rotations: int = 0, scales: int = 0,
                    rotation_step: float = ROTATION_STEP, scale_step: float = SCALE_STEP) -> list[tuple[int, int]]:
    """The (H, W) of each copy ``augmented_styles`` makes of a height x width image, in the same order."""
    sizes = []
    for r in range(-rotations, rotations + 1):
        cropped = _rotation_crop(height, width, r * rotation_step) if r else (height, width)
        sizes += [_scaled(*cropped, scale_step**s) if s else cropped for s in range(-scales, scales + 1)]
    return sizes


def augmented_styles(image: torch.Tensor, rotations: int = 0, scales: int = 0, rotation_step: float = ROTATION_STEP,
                     scale_step: float = SCALE_STEP) -> list[torch.Tensor]:
    """CNNMRF's style augmentation: 1,3,H,W -> (2*rotations+1) * (2*scales+1) images, rotated by multiples of
    ``rotation_step`` radians (cropped to the largest centred rectangle without empty corners) and resized by
    powers of ``scale_step``."""
    copies = []
    height, width = image.shape[-2:]
    for r in range(-rotations, rotations + 1):
        angle = r * rotation_step
        rotated = image
        if r:
            rotated = rotate(image, math.degrees(angle), interpolation=InterpolationMode.BILINEAR)
            crop_h, crop_w = _rotation_crop(height, width, angle)
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            rotated = rotated[..., top:top + crop_h, left:left + crop_w]
        for s in range(-scales, scales + 1):
            size = _scaled(*rotated.shape[-2:], scale_step**s)
            scaled = rotated if s == 0 else F.interpolate(rotated, size=size, mode="bilinear", antialias=True,
                                                          align_corners=False)
            copies.append(scaled.contiguous())
    return copies


class MRFStyleLoss(StyleLoss):
    """MRF style term per layer: mean squared distance between each output patch (``patch_size``, every ``stride``
    pixels) and its nearest style patch (sampled every ``style_stride`` pixels from the style images and their
    rotated / scaled copies). Several style images pool their patches; blend weights of 0 drop a style."""

    def __init__(self, layer_weights: Mapping[str, float], patch_size: int = 3, stride: int = 1,
                 style_stride: int = 1, chunk_size: int | None = 4096, rotations: int = 0, scales: int = 0,
                 rotation_step: float = ROTATION_STEP, scale_step: float = SCALE_STEP, *,
                 weight: float = 1.0) -> None:
        super().__init__(layer_weights, weight=weight)
        if patch_size < 1 or stride < 1 or style_stride < 1:
            raise ValueError("patch_size, stride and style_stride must be >= 1")
        if not (0 <= rotations <= MAX_AUGMENTATION_STEPS and 0 <= scales <= MAX_AUGMENTATION_STEPS):
            raise ValueError(f"rotations and scales count copies on each side and must be in "
                             f"0..{MAX_AUGMENTATION_STEPS}, got {rotations} and {scales}")
        self.patch_size, self.stride, self.style_stride = int(patch_size), int(stride), int(style_stride)
        self.chunk_size = int(chunk_size) if chunk_size else None
        self.rotations, self.scales = int(rotations), int(scales)
        self.rotation_step, self.scale_step = float(rotation_step), float(scale_step)

    def size_problem(self, vgg: VGGFeatures, output_size: tuple[int, int],
                     style_sizes: Sequence[tuple[int, int]]) -> str | None:
        """Why an output image of ``output_size`` (H, W) and style images of ``style_sizes`` (before CNNMRF's
        copies) leave some MRF layer without a full patch, or None when every layer has one."""
        images = [("output", output_size)] + [
            ("style image", size) for style in style_sizes
            for size in augmented_sizes(*style, self.rotations, self.scales, self.rotation_step, self.scale_step)]
        for what, (height, width) in images:
            for layer in self.layers:
                problem = patch_size_problem(layer, *vgg.feature_size(layer, height, width), self.patch_size,
                                             f"{width}x{height} px {what}")
                if problem:
                    return problem
        return None

    def set_targets_from_images(self, vgg: torch.nn.Module, images: Sequence[torch.Tensor], blend: Sequence[float],
                                **options: Any) -> None:
        """Patch banks from style images 1,3,H,W plus their rotated and scaled copies (CNNMRF's augmentation)."""
        features, weights = [], []
        for image, weight in zip(images, blend, strict=True):
            for copy in augmented_styles(image, self.rotations, self.scales, self.rotation_step, self.scale_step):
                features.append(vgg(copy, self.layers))
                weights.append(weight)
        self.set_targets(features, weights, **options)

    def set_targets(self, style_features: Sequence[Features], blend: Sequence[float], **options: Any) -> None:
        if options:
            raise TypeError(f"MRFStyleLoss takes no target options (masks need the Gram loss), got {sorted(options)}")
        used = [f for f, w in zip(style_features, blend, strict=True) if w > 0]
        positive = {round(w, 9) for w in blend if w > 0}
        if len(positive) > 1:
            raise ValueError(f"the MRF loss pools the patches of all styles and cannot weight them; "
                             f"use equal blend weights (0 drops a style), got {list(blend)}")
        for layer in self.layers:
            for style in used:
                problem = patch_size_problem(layer, *style[layer].shape[-2:], self.patch_size, "style image")
                if problem:
                    raise PatchSizeError(f"{problem}: the style image is too small for the MRF loss; use a larger "
                                         "image_size or style_scale")
            bank = torch.cat([extract_patches(f[layer].float(), self.patch_size, self.style_stride) for f in used])
            self.register_buffer(f"bank_{layer}", bank, persistent=False)
            self.register_buffer(f"unit_bank_{layer}", normalise_patches(bank), persistent=False)

    def layer_losses(self, features: Features) -> Features:
        terms = {}
        for layer, weight in self.layer_weights.items():
            feats = features[layer].float()
            problem = patch_size_problem(layer, *feats.shape[-2:], self.patch_size, "output")
            if problem:
                raise PatchSizeError(f"{problem}: the image is too small for the MRF loss; use a larger image_size")
            bank = getattr(self, f"bank_{layer}")
            index = nearest_patches(feats.detach(), getattr(self, f"unit_bank_{layer}"), self.stride, self.chunk_size)
            patches = F.unfold(feats, self.patch_size, stride=self.stride)  # N, C*k*k, P
            matched = bank.flatten(1)[index].transpose(1, 2)  # N, C*k*k, P
            terms[layer] = weight * feature_mse(patches, matched)
        return terms
