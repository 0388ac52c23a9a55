"""The kinds of input fststyle stylises, one class each: photos, animated GIF/WebP, numbered image sequences
(``frames/%05d.png``) and videos.

A kind knows which paths it takes, the default output of one, how to check a (source, target) pair before any
work, and how to run a list of checked items. The plan (fststyle.plan) asks the kinds; the runner
(fststyle.runner) hands each kind its items. A new kind is one class here and one entry in ``input_kinds``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from fststyle.errors import InputNotFoundError, UserError
from fststyle.files import atomic_write, refuse_overwriting_inputs
from fststyle.images import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    check_image_suffix,
    check_jpeg_quality,
    pil_to_tensor,
    read_photo,
    save_image,
    tensor_to_pil,
)
from fststyle.temporal import check_temporal_mode
from fststyle.video import DEFAULT_VIDEO_QUALITY, VIDEO_SUFFIXES, check_video_quality

log = logging.getLogger("fststyle")


@dataclass
class PlanItem:
    """One output to write: ``source`` stylised into ``target`` by ``kind``."""

    source: Path
    target: Path
    kind: InputKind
    #: the input folder the source was found in; None for a file named as an input
    folder: Path | None = None
    #: what the kind's checks found that its run needs (a video: its encoder)
    prepared: Any = None

    @property
    def label(self) -> str:
        """The source's path inside its input folder, or its file name."""
        return (self.source.relative_to(self.folder) if self.folder else Path(self.source.name)).as_posix()


@dataclass
class Outcome:
    """One item's result: written (``error`` None) or failed, ``reason`` saying why in a line that names the
    file; ``preview``: (photo, stylised) thumbnails for the grid."""

    item: PlanItem
    error: BaseException | None = None
    reason: str = ""
    preview: tuple[Image.Image, Image.Image] | None = None


def failure(item: PlanItem, error: BaseException, hint: str = "") -> Outcome:
    """The Outcome of ``item`` failed by ``error``: the error's message, prefixed with the source's path
    unless it names it, and ``hint``."""
    message = str(error) if str(item.source) in str(error) else f"{item.source}: {error}"
    return Outcome(item, error, message + hint)


class InputKind:
    """A kind of input file: the suffixes it takes, its default output, its checks and its run."""

    name = ""
    #: the word for one and for several, as the summary counts them
    noun, plural = "", ""
    suffixes: Collection[str] = ()
    #: a file named as an input that no kind matches is taken for this kind
    fallback = False
    #: its paths are patterns that name several numbered files, not one file that exists
    pattern = False

    def matches(self, path: Path) -> bool:
        """Whether ``path`` is of this kind (by its suffix, lower case)."""
        return path.suffix.lower() in self.suffixes

    def default_output(self, source: Path, style_name: str) -> Path:
        """``photo.jpg`` -> ``photo_<style>.jpg`` beside it."""
        return source.with_name(f"{source.stem}_{style_name}{source.suffix}")

    def check_input(self, source: Path) -> Any:
        """Raise UserError naming ``source`` unless it can be read; return what ``check_output`` needs."""
        return None

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        """Raise UserError unless ``target`` can hold this kind's output of ``source`` (``found``: what
        ``check_input`` returned); return what the run needs (PlanItem.prepared)."""
        return None

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """Stylise ``items`` (checked) with ``stylizer``; one Outcome per item, in any order."""
        raise NotImplementedError


def new_smoother(temporal: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """A new per-clip smoother for the checked temporal mode (it holds the previous frame), None for ``none``."""
    from fststyle.temporal import FlowSmoother

    return FlowSmoother() if temporal == "flow" else None


def thumbnail(image: torch.Tensor, height: int) -> Image.Image:
    """A 3,H,W [0,1] image as a PIL thumbnail at most ``height`` px high (and 4x that wide)."""
    picture = tensor_to_pil(image)
    picture.thumbnail((4 * height, height))
    return picture


class PhotoKind(InputKind):
    """Photos: decoded with EXIF orientation and colour management, run in batches of equal size, written with
    their alpha and EXIF in the output suffix's format."""

    name, noun, plural = "photo", "image", "images"
    suffixes = IMAGE_SUFFIXES
    fallback = True

    def __init__(self, batch_size: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS,
                 quality: int = DEFAULT_JPEG_QUALITY) -> None:
        self.batch_size, self.max_pixels, self.quality = batch_size, max_pixels, quality

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        check_image_suffix(target)

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """Images of equal size run together, ``batch_size`` at a time; at most 4 batches are held decoded."""
        pending: dict[tuple[int, int], list[tuple[PlanItem, torch.Tensor, Image.Image | None, bytes | None]]] = {}
        progress = tqdm(total=len(items), desc="stylising", unit="image", disable=len(items) < 2)

        def flush(size: tuple[int, int]) -> Iterator[Outcome]:
            group = pending.pop(size)
            try:
                stylised = stylizer.stylize(torch.stack([image for _, image, _, _ in group]))
            except RuntimeError as error:  # out of memory on a huge batch: name every file, go on
                for item, _, _, _ in group:
                    progress.update(1)
                    yield failure(item, error, "; try tile=1024 or batch_size=1")
                return
            for (item, image, alpha, exif), output in zip(group, stylised, strict=True):
                progress.update(1)
                try:
                    save_image(output, item.target, alpha=alpha, exif=exif, quality=self.quality)
                except (OSError, ValueError) as error:
                    yield failure(item, error, f" (writing {item.target})")
                    continue
                preview = None if preview_height is None else (thumbnail(image, preview_height),
                                                               thumbnail(output, preview_height))
                yield Outcome(item, preview=preview)

        try:
            for item in items:
                try:
                    photo = read_photo(item.source, max_pixels=self.max_pixels)
                except (ImageReadError, OSError) as error:
                    progress.update(1)
                    yield failure(item, error)
                    continue
                image = pil_to_tensor(photo.rgb)
                size = (image.shape[-2], image.shape[-1])
                pending.setdefault(size, []).append((item, image, photo.alpha, photo.exif))
                if len(pending[size]) >= self.batch_size:
                    yield from flush(size)
                elif sum(map(len, pending.values())) >= 4 * self.batch_size:  # bound decoded images held
                    yield from flush(max(pending, key=lambda key: len(pending[key])))
            for size in list(pending):
                yield from flush(size)
        finally:
            progress.close()


class VideoKind(InputKind):
    """Videos: every frame with its timestamp, in batches, smoothed along optical flow (``temporal=flow``),
    encoded with the input's audio copied (fststyle.video)."""

    name, noun, plural = "video", "video", "videos"
    suffixes = VIDEO_SUFFIXES

    def __init__(self, batch_size: int = 4, quality: int = DEFAULT_VIDEO_QUALITY, codec: str | None = None,
                 temporal: str = "flow") -> None:
        self.batch_size, self.quality, self.codec, self.temporal = batch_size, quality, codec, temporal

    def check_input(self, source: Path) -> Any:
        """Open the container's headers: its audio codecs, or a VideoReadError naming it."""
        from fststyle.video import check_video_input

        return check_video_input(source)

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        """A video suffix, and the encoder for it that takes the source's audio (the encoder is returned)."""
        from fststyle.video import check_video_output, check_video_suffix

        return check_video_output(source, check_video_suffix(target), self.codec, found)

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """One clip after the other; a clip that fails is named and the others still run."""
        from fststyle.video import write_stylised_video

        for item in items:
            try:
                report = write_stylised_video(stylizer, item.source, item.target, encoder=item.prepared,
                                              batch_size=self.batch_size, quality=self.quality,
                                              smoother=new_smoother(self.temporal))
            except (UserError, OSError) as error:
                yield failure(item, error)
                continue
            log.info("%s", report.summary())
            yield Outcome(item)


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
            originals = torch.stack(frames[start:start + self.batch_size])
            for original, stylised in zip(originals, stylizer.stylize(originals).cpu(), strict=True):
                outputs.append(stylised if smoother is None else smoother(original, stylised))
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
        if not self.matches(check_image_suffix(target)):
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
            stylised = stylizer.stylize(originals).cpu()
            for (_, output), photo, original, image in zip(batch, photos, originals, stylised, strict=True):
                image = image if smoother is None else smoother(original, image)
                save_image(image, output, alpha=photo.alpha, exif=photo.exif, quality=self.quality)


def input_kinds(*, batch_size: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                video_quality: int = DEFAULT_VIDEO_QUALITY, video_codec: str | None = None,
                temporal: str = "flow") -> list[InputKind]:
    """The kinds fststyle stylises, in the order a path is matched against them, after checking their settings
    (once: the kinds' own constructors take them as checked)."""
    jpeg_quality, temporal = check_jpeg_quality(jpeg_quality), check_temporal_mode(temporal)
    video_quality = check_video_quality(video_quality)
    return [SequenceKind(batch_size, max_pixels, jpeg_quality, temporal),
            AnimationKind(batch_size, max_pixels, jpeg_quality, temporal), PhotoKind(batch_size, max_pixels, jpeg_quality),
            VideoKind(batch_size, video_quality, video_codec, temporal)]
