"""Temporal stability for video stylisation: blend each stylised frame with the previous output warped by
optical flow, so sensor noise stops flickering while motion is not dragged (docs/stylize.md, "Temporal
stability", has the measurements behind the defaults).

Per frame: DIS optical flow (Kroeger et al. 2016, OpenCV; no downloaded weights) between the grey input
frames, both ways. The backward flow (current -> previous) warps the previous output onto the current
frame. A forward-backward consistency check (Sundaram, Brox & Keutzer 2010) marks occlusions,
disocclusions and pixels that came from outside the frame; the new stylised frame wins there.
Elsewhere the weight of the warped previous output falls with two things. (1) How far the warped previous
output is from the new stylised frame (averaged over a small window): flicker from sensor noise is a small
difference and is smoothed, a large one is new content or a flow miss (a ghost trail in the making) and
the new frame is taken. (2) How far the pixel moved: every warp resamples (blurs) the previous output and
flow errors grow with motion, so a moving region follows the new frame more closely; a still region,
where flicker shows most, is smoothed most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fststyle.errors import UserError

TEMPORAL_MODES = ("none", "flow")

#: weight of the warped previous output where nothing moved and the stylised frames agree; chosen with
#: the two scales below from bench/temporal.py (docs/stylize.md, "Temporal stability"): flicker falls
#: and drift on a pan rises with it
DEFAULT_MAX_WEIGHT = 0.9
#: difference between the warped previous output and the new stylised frame (mean over channels and a
#: 5x5 window, [0,1] scale) at which the previous output's weight has fallen to 1/e; the shipped model's
#: flicker under light sensor noise is about 0.03 (same measurements)
DEFAULT_CHANGE_SCALE = 0.15
#: motion (px per frame) at which the previous output's weight has fallen to 1/e (same measurements)
DEFAULT_MOTION_SCALE = 2.0
#: forward-backward consistency thresholds of Sundaram, Brox & Keutzer 2010 (eq. 5):
#: |w + w^| ^ 2 < 0.01 (|w|^2 + |w^|^2) + 0.5
CONSISTENCY_RELATIVE, CONSISTENCY_ABSOLUTE = 0.01, 0.5
CHANGE_WINDOW = 5  # box window (px) the stylised difference is averaged over, so single noisy pixels do not count


def import_cv2() -> Any:
    """OpenCV, or a UserError saying how to install the video extra."""
    try:
        import cv2
    except ImportError as error:
        raise UserError('temporal=flow needs OpenCV: pip install "fststyle[video]"') from error
    return cv2


def check_temporal_mode(mode: str) -> str:
    """``mode`` if it is one of TEMPORAL_MODES, else a UserError naming them."""
    if mode not in TEMPORAL_MODES:
        raise UserError(f"temporal={mode!r} is not a temporal mode; choose one of {', '.join(TEMPORAL_MODES)}")
    return mode


def temporal_smoother(mode: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The per-frame smoother for ``temporal=mode``: None for "none", a new ``FlowSmoother`` for "flow"."""
    return new_smoother(check_temporal_mode(mode))


def new_smoother(checked_mode: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``temporal_smoother`` for a mode already checked (the stylize plan checks it once per run): a new smoother
    per clip, since it holds the previous frame."""
    return FlowSmoother() if checked_mode == "flow" else None


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """3,H,W float tensor in [0,1] (any device) -> H,W,3 float32 numpy array."""
    return np.ascontiguousarray(image.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy())


class FlowSmoother:
    """Called per frame in order: ``smoother(frame, stylised)`` with 3,H,W [0,1] tensors -> smoothed 3,H,W
    on the stylised frame's device and dtype. ``reset()`` before a new clip."""

    def __init__(self, max_weight: float = DEFAULT_MAX_WEIGHT, change_scale: float = DEFAULT_CHANGE_SCALE,
                 motion_scale: float = DEFAULT_MOTION_SCALE) -> None:
        if not 0.0 <= max_weight < 1.0:
            raise UserError(f"max_weight={max_weight} must be in [0, 1); e.g. {DEFAULT_MAX_WEIGHT}")
        if change_scale <= 0 or motion_scale <= 0:
            raise UserError(f"change_scale={change_scale} and motion_scale={motion_scale} must be > 0; "
                            f"e.g. {DEFAULT_CHANGE_SCALE} and {DEFAULT_MOTION_SCALE}")
        self.cv2 = import_cv2()
        self.max_weight, self.change_scale, self.motion_scale = max_weight, change_scale, motion_scale
        self.flow = self.cv2.DISOpticalFlow_create(self.cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next call returns its stylised frame unchanged."""
        self.previous_grey: np.ndarray | None = None
        self.previous_output: np.ndarray | None = None

    def __call__(self, frame: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
        """Input frame 3,H,W and its stylised frame 3,H,W (both [0,1]) -> smoothed 3,H,W like ``stylised``."""
        if frame.shape != stylised.shape or frame.dim() != 3 or frame.shape[0] != 3:
            raise ValueError(f"expected frame and stylised of the same shape 3,H,W; got {tuple(frame.shape)} "
                             f"and {tuple(stylised.shape)}")
        current_stylised = to_hwc(stylised)
        grey = self.cv2.cvtColor((to_hwc(frame).clip(0, 1) * 255 + 0.5).astype(np.uint8), self.cv2.COLOR_RGB2GRAY)
        if self.previous_grey is None or self.previous_grey.shape != grey.shape:  # a clip's first frame
            self.previous_grey, self.previous_output = grey, current_stylised
            return stylised.clone()
        weight, warped_output = self.previous_weight(grey, current_stylised)
        output = current_stylised + weight[..., None] * (warped_output - current_stylised)
        self.previous_grey, self.previous_output = grey, output
        return torch.from_numpy(output).permute(2, 0, 1).to(stylised.device, stylised.dtype)

    def previous_weight(self, grey: np.ndarray, stylised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H,W weight of the previous output (0 = take the new stylised frame) and that output warped
        onto the current frame (H,W,3), from the current grey frame and the H,W,3 new stylised frame."""
        cv2 = self.cv2
        backward = self.flow.calc(grey, self.previous_grey, None)  # current pixel -> where it was before
        forward = self.flow.calc(self.previous_grey, grey, None)
        height, width = grey.shape
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = xs + backward[..., 0], ys + backward[..., 1]

        def warp(image: np.ndarray) -> np.ndarray:
            return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        forward_there = warp(forward)
        round_trip = ((backward + forward_there) ** 2).sum(-1)
        magnitudes = (backward ** 2).sum(-1) + (forward_there ** 2).sum(-1)
        consistent = round_trip < CONSISTENCY_RELATIVE * magnitudes + CONSISTENCY_ABSOLUTE
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        warped_output = warp(self.previous_output)
        change = cv2.blur(np.abs(stylised - warped_output).mean(-1), (CHANGE_WINDOW, CHANGE_WINDOW))
        motion = np.sqrt((backward ** 2).sum(-1))
        weight = (self.max_weight * np.exp(-change / self.change_scale - motion / self.motion_scale)
                  * (consistent & inside))
        return weight.astype(np.float32), warped_output
