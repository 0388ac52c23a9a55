"""Measure per-frame flicker of style models on a still scene with sensor noise, how far their output strays
from following a pan, and their content and style loss on the preview photos (docs/training.md "Temporal
stability").

    PYTHONPATH=. python bench/stability.py /tmp/stab-off/starry_night.safetensors /tmp/stab-on/starry_night.safetensors

The scene: one bundled photo (``--photo``, longer side ``--size`` px) repeated for ``--frames`` frames, each
with its own Gaussian noise of sigma ``--noise`` (in [0,1] pixel units, clamped to [0,1]), the same frames for
every model. Flicker = mean |out_t - out_{t-1}| / mean |in_t - in_{t-1}| over all consecutive pairs: how much
of the input's frame-to-frame change the model passes on (below 1: damps it, above 1: amplifies it).
The pan: the same photo, ``--pan-step`` pixels further left each frame, no noise. A model that moves with the
scene gives out_t[y, x] = out_{t-1}[y, x + step]; pan error = mean |out_t[y, x] - out_{t-1}[y, x + step]|
([0,1] units) away from the frame edges (16 px in: where the scene is the same in both frames).
The losses: every model's output for the preview photos (``data/preview``, longer side ``--preview-size``)
scored with the loss of the first model's metadata and its style image, so all models share one yardstick.
Nothing is asserted; the load averages are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from fststyle.bundled import bundled_path
from fststyle.io.decode import load_image
from fststyle.losses import PerceptualLoss
from fststyle.style_model import StyleModel

#: 2.5/255: the still scene's sensor noise (the measurement in docs/training.md "Temporal stability")
DEFAULT_NOISE = 2.5 / 255


def noisy_frames(photo: torch.Tensor, frames: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """``frames`` copies of ``photo`` 1,3,H,W each with its own Gaussian noise -> frames,3,H,W in [0,1]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((frames, *photo.shape[1:]), generator=generator) * sigma
    return (photo + noise).clamp(0.0, 1.0)


@torch.no_grad()
def flicker_ratio(network: torch.nn.Module, frames: torch.Tensor) -> float:
    """mean |out_t - out_{t-1}| / mean |in_t - in_{t-1}| for frames T,3,H,W in [0,1] (one frame at a time)."""
    outputs = torch.cat([network(frame[None]) for frame in frames])
    return float((outputs[1:] - outputs[:-1]).abs().mean() / (frames[1:] - frames[:-1]).abs().mean())


#: pixels left out at each edge of the pan comparison: the strip the step uncovers plus the reach of the
#: network's reflection padding into its output (not measured per model, so a generous bound)
PAN_MARGIN = 16


def pan_frames(photo: torch.Tensor, frames: int, step: int) -> torch.Tensor:
    """``frames`` windows of ``photo`` 1,3,H,W, each ``step`` px right of the last -> frames,3,H,W-(frames-1)*step."""
    width = photo.shape[-1] - (frames - 1) * step
    if width <= 2 * PAN_MARGIN + step:
        raise SystemExit(f"--size too small for a pan of {frames} frames of {step} px")
    return torch.cat([photo[..., index * step:index * step + width] for index in range(frames)])


@torch.no_grad()
def pan_error(network: torch.nn.Module, frames: torch.Tensor, step: int) -> float:
    """mean |out_t[y, x] - out_{t-1}[y, x + step]| over the frames' interior, frames T,3,H,W from pan_frames."""
    outputs = torch.cat([network(frame[None]) for frame in frames])
    inner = slice(PAN_MARGIN, -PAN_MARGIN)
    now = outputs[1:, :, inner, PAN_MARGIN:-PAN_MARGIN - step]
    before = outputs[:-1, :, inner, PAN_MARGIN + step:outputs.shape[-1] - PAN_MARGIN]
    return float((now - before).abs().mean())


@torch.no_grad()
def preview_losses(network: torch.nn.Module, loss: PerceptualLoss, photos: list[torch.Tensor]) -> dict[str, float]:
    """Mean content, style and total loss of the network's outputs for photos (each 1,3,H,W)."""
    sums = {"content": 0.0, "style": 0.0, "total": 0.0}
    for photo in photos:
        terms = loss(network(photo), photo)
        for name in sums:
            sums[name] += float(terms[name]) / len(photos)
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="style models (.safetensors) or training checkpoints (.ckpt)")
    parser.add_argument("--photo", default=str(bundled_path("data/preview/000000000030.jpg")))
    parser.add_argument("--size", type=int, default=256, help="longer side of the still scene in px")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="sensor noise sigma, [0,1] units")
    parser.add_argument("--pan-step", type=int, default=3, help="pan speed in px per frame")
    parser.add_argument("--preview-size", type=int, default=192, help="as the demo's data.preview_size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    models = [StyleModel.load(path) for path in args.models]
    metadata = models[0].metadata
    loss = PerceptualLoss.from_config(metadata["loss"])
    style = metadata.get("style", {})
    # a .safetensors model holds its style images; a training checkpoint only their paths
    style_images = (list(models[0].style_images) if models[0].style_images is not None
                    else [load_image(path, size=style.get("size")) for path in style.get("paths", [])])
    if style_images:
        loss.set_style(style_images, style.get("blend"))
    photos = [load_image(path, size=args.preview_size)
              for path in sorted(Path(bundled_path("data/preview")).glob("*.jpg"))]
    photo = load_image(args.photo, size=args.size)
    frames = noisy_frames(photo, args.frames, args.noise, args.seed)
    pan = pan_frames(photo, args.frames, args.pan_step)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average before {os.getloadavg()}")
    print(f"# scene {Path(args.photo).name} {tuple(frames.shape[-2:])}, {args.frames} frames, noise sigma "
          f"{args.noise:.4g}; pan {args.pan_step} px/frame, {tuple(pan.shape[-2:])}; losses on {len(photos)} preview photos at {args.preview_size} px")
    print("| model | steps | stability_weight | stability_shift | flicker (out/in) | pan error | content | style "
          "| total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, model in zip(args.models, models, strict=True):
        weight = model.metadata.get("loss", {}).get("stability_weight", 0.0)
        shift = model.metadata.get("loss", {}).get("stability_shift", 0)
        flicker = flicker_ratio(model.network, frames)
        panning = pan_error(model.network, pan, args.pan_step)
        losses = preview_losses(model.network, loss, photos) if style_images else {}
        figures = " | ".join(f"{losses[k]:.3g}" if k in losses else "-" for k in ("content", "style", "total"))
        print(f"| {path} | {model.metadata.get('steps')} | {weight:g} | {shift} | {flicker:.3f} | {panning:.4f} "
              f"| {figures} |")
    print(f"# load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
