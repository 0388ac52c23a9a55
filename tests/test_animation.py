"""Animated GIF and WebP (fststyle.stylize.kinds.AnimationKind): every frame with its own duration, the loop count and
the transparency kept, frames smoothed along optical flow; a still WebP stays a photo, a still GIF in a folder
is named as skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.errors import UserError
from fststyle.nets.transformer import TransformerNet
from fststyle.stylize.runner import stylize_paths
from fststyle.stylize.stylizer import Stylizer

DURATIONS = [40, 80, 120, 60, 100]


def tiny_stylizer() -> Stylizer:
    torch.manual_seed(0)
    return Stylizer(TransformerNet(width=0.25, residual_blocks=1).eval())


def animation(path: Path, *, loop: int | None = 3, noise: float = 0.0) -> Path:
    """Five 32x24 frames of a gradient that moves right, each with its duration in DURATIONS, a transparent
    top-left 4x4 corner; ``noise``: sensor noise (levels of 255) added to every frame."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:24, 0:32]
    frames = []
    for index in range(len(DURATIONS)):
        pixels = np.stack([(x + 2 * index) * 8 % 256, y * 10, np.full_like(x, 90)], -1).astype(float)
        pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)
        frame = Image.fromarray(pixels).convert("RGBA")
        frame.paste((0, 0, 0, 0), (0, 0, 4, 4))
        frames.append(frame)
    options = {"loop": loop} if loop is not None else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS, disposal=2, **options)
    return path


def frames_of(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    """Every frame as H,W,4 uint8, the durations and the loop count of an animation file."""
    with Image.open(path) as image:
        frames, durations = [], []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            durations.append(image.info.get("duration"))
            frames.append(np.asarray(image.convert("RGBA")))
        return frames, durations, image.info.get("loop")


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_every_frame_its_duration_the_loop_and_the_transparency_are_kept(tmp_path: Path, suffix: str) -> None:
    source = animation(tmp_path / f"wave{suffix}")
    report = stylize_paths([source], tmp_path / f"out{suffix}", tiny_stylizer(), temporal="none", batch_size=2)
    assert report.written == [tmp_path / f"out{suffix}"] and "1 animation in" in report.summary()
    frames, durations, loop = frames_of(tmp_path / f"out{suffix}")
    originals, _, _ = frames_of(source)
    assert len(frames) == len(DURATIONS) and durations == DURATIONS and loop == 3
    for frame, original in zip(frames, originals, strict=True):
        assert frame.shape == (24, 32, 4)
        assert (frame[:4, :4, 3] == 0).all() and (frame[8:, 8:, 3] == 255).all()
        assert np.abs(frame[8:, 8:, :3].astype(int) - original[8:, 8:, :3]).mean() > 5  # stylised, not copied


def test_a_gif_that_plays_once_still_plays_once(tmp_path: Path) -> None:
    source = animation(tmp_path / "once.gif", loop=None)
    stylize_paths([source], tmp_path / "out.gif", tiny_stylizer(), temporal="none")
    assert frames_of(tmp_path / "out.gif")[2] is None


def test_flow_smoothing_calms_the_flicker_of_a_noisy_animation(tmp_path: Path) -> None:
    source = animation(tmp_path / "noisy.webp", noise=6.0)
    change = {}
    for mode in ("flow", "none"):
        stylize_paths([source], tmp_path / f"{mode}.webp", tiny_stylizer(), temporal=mode, jpeg_quality=100)
        frames = np.stack(frames_of(tmp_path / f"{mode}.webp")[0]).astype(float)[..., :3]
        change[mode] = float(np.abs(np.diff(frames, axis=0)).mean())
    assert change["flow"] < change["none"], change


def test_in_a_folder_animations_are_kinds_a_still_webp_a_photo_and_a_still_gif_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "album"
    folder.mkdir()
    animation(folder / "moving.gif")
    animation(folder / "moving.webp")
    Image.new("RGB", (20, 16), "teal").save(folder / "still.webp")
    Image.new("RGB", (20, 16), "olive").save(folder / "still.gif")
    report = stylize_paths([folder], tmp_path / "out", tiny_stylizer(), temporal="none")
    assert sorted(path.name for path in report.written) == ["moving.gif", "moving.webp", "still.webp"]
    assert "2 animations and 1 image in" in report.summary()
    assert report.unsupported == [folder / "still.gif"] and "not a photo or video: " in report.summary()
    assert len(frames_of(tmp_path / "out" / "moving.webp")[0]) == len(DURATIONS)
    with Image.open(tmp_path / "out" / "still.webp") as still:
        assert not getattr(still, "is_animated", False)


def test_an_animation_into_a_still_format_is_refused_before_any_work(tmp_path: Path) -> None:
    source = animation(tmp_path / "wave.gif")
    with pytest.raises(UserError, match=r"an animation needs an animated output, \.gif or \.webp"):
        stylize_paths([source], tmp_path / "out.png", lambda: pytest.fail("the model was loaded"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["wave.gif"]
