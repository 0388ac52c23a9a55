"""The kinds of input fststyle stylises, one class each: what a kind is (``InputKind``), photos and videos.
Animated GIF/WebP and numbered image sequences are in fststyle.stylize.frame_kinds.

A kind knows which paths it takes, the default output of one, how to check a (source, target) pair before any
work, and how to run a list of checked items. The plan (fststyle.stylize.plan) asks the kinds; the runner
(fststyle.stylize.runner) hands each kind its items. A new kind is one class and one entry in ``plan.input_kinds``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from fststyle.errors import UserError
from fststyle.io.convert import pil_to_tensor, tensor_to_pil
from fststyle.io.decode import DEFAULT_MAX_PIXELS, ImageReadError, read_photo
from fststyle.io.encode import DEFAULT_JPEG_QUALITY, check_image_suffix, save_image
from fststyle.io.listing import IMAGE_SUFFIXES
from fststyle.io.video import DEFAULT_VIDEO_QUALITY, VIDEO_SUFFIXES
from fststyle.stylize.temporal import new_smoother

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
        check_image_suffix(target, "output")

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
    encoded with the input's audio copied (fststyle.io.video)."""

    name, noun, plural = "video", "video", "videos"
    suffixes = VIDEO_SUFFIXES

    def __init__(self, batch_size: int = 4, quality: int = DEFAULT_VIDEO_QUALITY, codec: str | None = None,
                 temporal: str = "flow") -> None:
        self.batch_size, self.quality, self.codec, self.temporal = batch_size, quality, codec, temporal

    def check_input(self, source: Path) -> Any:
        """Open the container's headers: its audio codecs, or a VideoReadError naming it."""
        from fststyle.io.video import check_video_input

        return check_video_input(source)

    def check_output(self, source: Path, target: Path, found: Any) -> Any:
        """A video suffix, and the encoder for it that takes the source's audio (the encoder is returned)."""
        from fststyle.io.video import check_video_output, check_video_suffix

        return check_video_output(source, check_video_suffix(target), self.codec, found)

    def run(self, stylizer: Any, items: Sequence[PlanItem], preview_height: int | None) -> Iterator[Outcome]:
        """One clip after the other; a clip that fails is named and the others still run."""
        from fststyle.io.video import write_stylised_video

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
