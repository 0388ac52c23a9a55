"""The kinds of input made of frames of images: animated GIF/WebP (``AnimationKind``) and numbered image
sequences, ``frames/%05d.png`` (``SequenceKind``); their frames are smoothed along optical flow as a video's."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from fststyle.errors import InputNotFoundError, UserError
from fststyle.io.convert import pil_to_tensor, tensor_to_pil
from fststyle.io.decode import DEFAULT_MAX_PIXELS, ImageReadError, read_photo
from fststyle.io.encode import DEFAULT_JPEG_QUALITY, check_image_suffix, save_image
from fststyle.io.files import atomic_write, refuse_overwriting_inputs
from fststyle.io.listing import IMAGE_SUFFIXES
from fststyle.io.video import stylised_frames
from fststyle.stylize.kinds import InputKind, Outcome, PlanItem, failure
from fststyle.stylize.temporal import new_smoother

ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
#: a printf frame number in a file name: %d or %05d
FRAME_NUMBER = re.compile(r"%0?(\d*)d")


def is_animated(path: Path) -> bool:
    """Whether ``path`` is an image file of more than one frame (False for a file Pillow cannot open)."""
    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, SyntaxError):
        return False


class AnimationKind(InputKind):
    """Animated GIF and WebP: every frame, with its own duration, the loop count and the transparency kept,
    smoothed along optical flow as a video's frames are (``temporal=flow``), written with Pillow. The frames
    of one animation are held in memory. A still GIF or WebP is not an animation (a still WebP is a photo)."""

    name, noun, plural = "animation", "animation", "animations"
    suffixes = tuple(ANIMATION_FORMATS)

    def __init__(self, batch_size: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = DEFAULT_JPEG_QUALITY,
                 temporal: str = "flow") -> None:
        self.batch_size, self.max_pixels, self.quality, self.temporal = batch_size, max_pixels, quality, temporal

    def matches(self, path: Path) -> bool:
        return super().matches(path) and is_animated(path)

    def check_input(self, source: Path) -> Any:
        """Raise ImageReadError naming ``source`` unless Pillow opens it with frames within max_pixels."""
        try:
            with Image.open(source) as image:
                width, height = image.size
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageReadError(f"{source}: cannot read the animation ({error}); re-export it as GIF or WebP") from None
        if width * height > self.max_pixels:
            raise ImageReadError(f"{source}: frames of {width}x{height} pixels, more than max_pixels="
                                 f"{self.max_pixels:,}; raise it if you trust the file (max_pixels={width * height})")

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        if target.suffix.lower() not in ANIMATION_FORMATS:
            raise UserError(f"output {target}: an animation needs an animated output, .gif or .webp "
                            f"(e.g. output={target.with_suffix(source.suffix)})")

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """One animation after the other; one that fails is named and the others still run."""
        for item in items:
            try:
                self.write(stylizer, item.source, item.target)
            except (UserError, OSError, ValueError, EOFError) as error:
                yield failure(item, error)
                continue
            yield Outcome(item)

    def write(self, stylizer: Any, source: Path, target: Path) -> None:
        """Stylise every frame of ``source`` (3,H,W batches of ``batch_size``) into ``target``, atomically."""
        smoother = new_smoother(self.temporal)
        frames, durations, alphas = [], [], []
        with Image.open(source) as animation:
            loop = animation.info.get("loop")  # GIF: absent plays once
            for index in range(animation.n_frames):
                animation.seek(index)
                animation.load()
                durations.append(animation.info.get("duration", 100))
                rgba = animation.convert("RGBA")
                alphas.append(rgba.getchannel("A"))
                frames.append(pil_to_tensor(rgba))
        outputs = []
        for start in range(0, len(frames), self.batch_size):
            outputs += stylised_frames(stylizer, torch.stack(frames[start:start + self.batch_size]), smoother)
        pictures = []
        for image, alpha in zip(outputs, alphas, strict=True):
            picture = tensor_to_pil(image.clamp(0, 1))
            picture.putalpha(alpha)
            pictures.append(picture)
        fmt = ANIMATION_FORMATS[target.suffix.lower()]
        options: dict[str, Any] = {"duration": durations, **({} if loop is None else {"loop": loop})}
        options |= {"disposal": 2} if fmt == "GIF" else {"quality": self.quality}
        with atomic_write(target) as temporary:
            pictures[0].save(temporary, format=fmt, save_all=True, append_images=pictures[1:], **options)


def frame_name_pattern(path: Path) -> re.Pattern | None:
    """For a file name with one printf frame number (``%05d.png``, ``shot_%d.exr``), the regular expression of
    its frames' names (the number captured); None for any other name."""
    if path.name.count("%") != 1:
        return None
    found = FRAME_NUMBER.search(path.name)
    if found is None:
        return None
    digits = rf"\d{{{int(found.group(1) or 1)},}}"
    return re.compile(re.escape(path.name[:found.start()]) + f"({digits})" + re.escape(path.name[found.end():]))


def frame_path(pattern: Path, number: int) -> Path:
    """The frame ``number`` of the numbered file name ``pattern``: ``frames/%05d.png``, 7 -> ``frames/00007.png``."""
    return pattern.with_name(pattern.name % number)


class SequenceKind(InputKind):
    """A numbered image sequence, ``frames/%05d.png`` (the printf pattern FFmpeg, Nuke and Blender name frames
    with): every frame found, in number order, stylised in batches, smoothed along optical flow as a video's
    frames are (``temporal=flow``), and written under the output's pattern with the same numbers."""

    name, noun, plural = "sequence", "sequence", "sequences"
    pattern = True

    def __init__(self, batch_size: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = DEFAULT_JPEG_QUALITY,
                 temporal: str = "flow") -> None:
        self.batch_size, self.max_pixels, self.quality, self.temporal = batch_size, max_pixels, quality, temporal

    def matches(self, path: Path) -> bool:
        return frame_name_pattern(path) is not None and path.suffix.lower() in IMAGE_SUFFIXES

    def check_input(self, source: Path) -> Any:
        """The frames of the pattern ``source``, as [(number, path)] in number order; InputNotFoundError if none."""
        names = frame_name_pattern(source)
        found = []
        if source.parent.is_dir():
            for path in source.parent.iterdir():
                match = names.fullmatch(path.name)
                if match and path.name == source.name % int(match.group(1)) and path.is_file():
                    found.append((int(match.group(1)), path))
        if not found:
            raise InputNotFoundError(f"input not found: no frames match {source} (e.g. {frame_path(source, 1)}); "
                                     "pass a numbered sequence such as frames/%05d.png")
        return sorted(found)

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        """An image pattern of one frame number, no output frame onto an input frame: [(frame, its output)]."""
        if not self.matches(check_image_suffix(target, "output")):
            raise UserError(f"output {target}: a numbered sequence needs a numbered output, e.g. "
                            f"output={target.parent / ('%05d' + target.suffix)}")
        frames = [(path, frame_path(target, number)) for number, path in found]
        refuse_overwriting_inputs([path for path, _ in frames], [output for _, output in frames])
        return frames

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """One sequence after the other; one whose frame fails is named and the others still run."""
        for item in items:
            try:
                self.write(stylizer, item.prepared)
            except (UserError, OSError, ValueError, RuntimeError) as error:  # RuntimeError: frames of two sizes
                yield failure(item, error)
                continue
            yield Outcome(item)

    def write(self, stylizer: Any, frames: Sequence[tuple[Path, Path]]) -> None:
        """Stylise the (frame, output) pairs in order, ``batch_size`` frames at a time, each written atomically."""
        smoother = new_smoother(self.temporal)
        for start in tqdm(range(0, len(frames), self.batch_size), desc="stylising frames", unit="batch",
                          disable=len(frames) <= self.batch_size):
            batch = frames[start:start + self.batch_size]
            photos = [read_photo(path, max_pixels=self.max_pixels) for path, _ in batch]
            originals = torch.stack([pil_to_tensor(photo.rgb) for photo in photos])
            for (_, output), photo, image in zip(batch, photos, stylised_frames(stylizer, originals, smoother),
                                                 strict=True):
                save_image(image, output, alpha=photo.alpha, exif=photo.exif, quality=self.quality)
