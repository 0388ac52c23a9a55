"""Measure temporal smoothing (``temporal=flow``) on two synthetic clips stylised by the shipped starry_night model.

    PYTHONPATH=. python bench/temporal.py                     # the defaults and a fixed-weight baseline
    PYTHONPATH=. python bench/temporal.py --sweep             # a grid of blend settings
    PYTHONPATH=. python bench/temporal.py --size 320x240 --frames 24 --noise 2.5 --pan 3
    PYTHONPATH=. python bench/temporal.py --table --photos data/preview/000000000030.jpg other.jpg
                                                              # the defaults over noise levels x styles x photos

Clips, from a bundled photo (data/preview): (a) still: the same view with fresh Gaussian sensor noise
(``--noise`` levels of 255) every frame; (b) pan: a crop window sliding ``--pan`` px per frame to the right
(and a third of that down); (c) object: the still clip with a third-size patch of the photo moving across
it at twice the pan speed (occlusions, disocclusions: where ghost trails would show). Figures: flicker ratio = mean |out_t - out_t-1| on the still clip with smoothing
over that without; drift = mean |smoothed - per-frame stylised| on the pan clip ([0,1] scale); trail = the
same on the object clip, over the pixels the object has just uncovered; ms per frame
of the smoother (two DIS flows, warps, blend), with the load averages. ``--table`` runs the default smoother
for every shipped style (``--models``, ``name:style`` for one style of a model of several), noise level
(``--noises``) and photo (``--photos``, any image: clips made from photos the defaults were not tuned on), and
adds the noisy pan: the pan clip with the same sensor noise, its error = mean |out - per-frame stylised clean
pan|, smoothed and per frame (smoothing helps a noisy pan where the first is lower). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from fststyle.bundled import bundled_path
from fststyle.io.decode import load_image
from fststyle.stylize.stylizer import Stylizer
from fststyle.stylize.temporal import (
    DEFAULT_CHANGE_SCALE,
    DEFAULT_MAX_WEIGHT,
    DEFAULT_MOTION_SCALE,
    FlowSmoother,
)

PHOTO = "data/preview/000000000030.jpg"
TABLE_MODELS = ("starry_night", "the_scream", "multistyle:udnie")  # every shipped style not already in a model of one
TABLE_NOISES = (1.0, 2.0, 3.0, 4.0)  # sensor noise sigmas, levels of 255 (issue 20: "from 1/255 to 4/255")
FIXED = 1e6  # scales so large that the weight is the fixed max_weight (the forward-backward mask stays)


def clips(size: tuple[int, int], frames: int, noise: float, pan: int,
          photo_path: str = PHOTO) -> tuple[torch.Tensor, ...]:
    """(still, pan, object) clips of ``frames`` frames each, T,3,H,W in [0,1], cut from ``photo_path`` (a file,
    else a path inside the package: the bundled photo by default)."""
    width, height = size
    photo = load_image(photo_path if Path(photo_path).is_file() else bundled_path(photo_path))
    scale = max((width + frames * pan) / photo.shape[-1], (height + frames * pan // 3) / photo.shape[-2])
    photo = torch.nn.functional.interpolate(photo, scale_factor=scale, mode="bilinear", antialias=True)[0].clamp(0, 1)
    view = photo[:, :height, :width]
    still = noisy(view.expand(frames, *view.shape), noise, seed=0)
    pan_clip = torch.stack([photo[:, t * pan // 3:t * pan // 3 + height, t * pan:t * pan + width]
                            for t in range(frames)])
    patch = photo[:, -height // 3:, -width // 3:].flip(-1)  # another part of the photo, moving over the view
    moving = still.clone()
    for t in range(frames):
        left = t * pan * 2
        moving[t, :, height // 3:height // 3 + patch.shape[1], left:left + patch.shape[2]] = patch[:, :, :width - left]
    return still, pan_clip, moving
def smoothed(clip: torch.Tensor, stylised: torch.Tensor, smoother: FlowSmoother) -> tuple[torch.Tensor, float]:
    """The smoothed clip T,3,H,W and the smoother's milliseconds per frame."""
    smoother.reset()
    start = time.perf_counter()
    out = torch.stack([smoother(frame, styled) for frame, styled in zip(clip, stylised, strict=True)])
    return out, (time.perf_counter() - start) * 1000 / len(clip)


def flicker(clip: torch.Tensor) -> float:
    """Mean |frame_t - frame_t-1| of a T,3,H,W clip."""
    return (clip[1:] - clip[:-1]).abs().mean().item()


def noisy(clip: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """``clip`` T,3,H,W with fresh Gaussian sensor noise of sigma ``noise`` levels of 255 per frame (from ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    return (clip + noise / 255 * torch.randn(clip.shape, generator=generator)).clamp(0, 1)


def table(args: argparse.Namespace, size: tuple[int, int]) -> None:
    """The default smoother over photos x styles x noise levels: flicker ratio, pan drift, noisy-pan error."""
    print("| photo | style | noise | stylised flicker (x input) | flicker ratio (still) | drift (pan) "
          "| noisy-pan error: smoothed / per frame |")
    print("|---|---|---|---|---|---|---|")
    for photo in args.photos:
        for model in args.models:
            name, _, style = model.partition(":")
            stylizer = Stylizer.load(name, device="cpu", style=style or None)
            for noise in args.noises:
                still, pan, _ = clips(size, args.frames, noise, args.pan, photo)
                pan_noisy = noisy(pan, noise, seed=1)
                still_styled, pan_styled, pan_noisy_styled = stylizer(still), stylizer(pan), stylizer(pan_noisy)
                smoother = FlowSmoother()
                ratio = flicker(smoothed(still, still_styled, smoother)[0]) / flicker(still_styled)
                drift = (smoothed(pan, pan_styled, smoother)[0] - pan_styled).abs().mean().item()
                pan_error = (smoothed(pan_noisy, pan_noisy_styled, smoother)[0] - pan_styled).abs().mean().item()
                per_frame_error = (pan_noisy_styled - pan_styled).abs().mean().item()
                print(f"| {Path(photo).name} | {model} | {noise:g}/255 | {flicker(still_styled) / flicker(still):.1f}x "
                      f"| {ratio:.2f}x | {drift:.4f} | {pan_error:.4f} / {per_frame_error:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--noise", type=float, default=2.5, help="sensor noise sigma in levels of 255")
    parser.add_argument("--pan", type=int, default=3, help="pan speed in px per frame")
    parser.add_argument("--sweep", action="store_true", help="a grid of max_weight x change_scale")
    parser.add_argument("--table", action="store_true", help="the defaults over --photos x --models x --noises")
    parser.add_argument("--photos", nargs="+", default=[PHOTO], help="--table: photos to cut the clips from")
    parser.add_argument("--models", nargs="+", default=list(TABLE_MODELS), help="--table: NAME or NAME:STYLE")
    parser.add_argument("--noises", nargs="+", type=float, default=list(TABLE_NOISES), help="--table: sigmas /255")
    args = parser.parse_args()
    size = tuple(int(side) for side in args.size.split("x"))
    if args.table:
        print(f"{args.size}, {args.frames} frames, pan {args.pan} px/frame; load average before {os.getloadavg()}")
        table(args, size)
        print(f"load average after {os.getloadavg()}")
        return
    still, pan, moving = clips(size, args.frames, args.noise, args.pan)
    stylizer = Stylizer.load("starry_night", device="cpu")
    still_styled, pan_styled, moving_styled = stylizer(still), stylizer(pan), stylizer(moving)
    covered = (moving != still).any(1)
    uncovered = covered[:-1] & ~covered[1:]  # background the object has just left: where a ghost trail would be
    print(f"{args.size}, {args.frames} frames, noise sigma {args.noise}/255, pan {args.pan} px/frame; "
          f"load average before {os.getloadavg()}")
    print(f"input flicker (still) {flicker(still):.4f}; stylised per frame {flicker(still_styled):.4f} "
          f"({flicker(still_styled) / flicker(still):.1f}x)")
    settings = [(DEFAULT_MAX_WEIGHT, DEFAULT_CHANGE_SCALE, DEFAULT_MOTION_SCALE, "default")]
    settings += [(weight, FIXED, FIXED, "fixed weight") for weight in (0.5, 0.55, 0.6)]
    settings += [(DEFAULT_MAX_WEIGHT, DEFAULT_CHANGE_SCALE, FIXED, "no motion term"),
                 (DEFAULT_MAX_WEIGHT, FIXED, DEFAULT_MOTION_SCALE, "no change term")]
    if args.sweep:
        settings += [(weight, change, motion, "") for weight in (0.85, 0.9, 0.95) for change in (0.07, 0.1, 0.15, 0.2)
                     for motion in (2.0, 3.0, 5.0)]
    print("| max_weight | change_scale | motion_scale | flicker ratio (still) | drift (pan) | trail (object) "
          "| ms/frame | |")
    print("|---|---|---|---|---|---|---|---|")
    for weight, change, motion, note in settings:
        smoother = FlowSmoother(max_weight=weight, change_scale=change, motion_scale=motion)
        still_out, still_ms = smoothed(still, still_styled, smoother)
        pan_out, pan_ms = smoothed(pan, pan_styled, smoother)
        ratio = flicker(still_out) / flicker(still_styled)
        drift = (pan_out - pan_styled).abs().mean().item()
        moving_out, _ = smoothed(moving, moving_styled, smoother)
        trail = (moving_out - moving_styled).abs().mean(1)[1:][uncovered].mean().item()
        change_text, motion_text = ("none" if scale == FIXED else f"{scale:g}" for scale in (change, motion))
        print(f"| {weight:g} | {change_text} | {motion_text} | {ratio:.2f}x | {drift:.4f} | {trail:.4f} | {(still_ms + pan_ms) / 2:.1f} | {note} |",
              flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
