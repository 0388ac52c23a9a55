"""The stylize plan: the inputs a user named, turned into (source, target, kind) items and checked once,
before any model is loaded; the runner (fststyle.stylize.runner) then writes them without checking again.

Built in two steps, because the default output names need the model's style name: ``check_sources`` (every
input exists, and each named file is readable as its kind: a video's container is opened here), then
``make_plan`` (targets, output suffixes, writable outputs, no input overwritten, folders expanded, sharding by
rank, skip_existing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fststyle.errors import InputNotFoundError, UserError
from fststyle.io.decode import DEFAULT_MAX_PIXELS
from fststyle.io.encode import DEFAULT_JPEG_QUALITY, check_image_suffix, check_jpeg_quality
from fststyle.io.files import check_writable, refuse_overwriting_inputs
from fststyle.io.listing import list_images
from fststyle.io.video import DEFAULT_VIDEO_QUALITY, check_video_quality
from fststyle.stylize.frame_kinds import AnimationKind, SequenceKind
from fststyle.stylize.kinds import InputKind, PhotoKind, PlanItem, VideoKind
from fststyle.stylize.sharding import share
from fststyle.stylize.temporal import check_temporal_mode

log = logging.getLogger("fststyle")


@dataclass
class Source:
    """One input as named: a folder (``kind`` None), or a file, its kind and what that kind's input check found."""

    path: Path
    kind: InputKind | None = None
    found: Any = None


@dataclass
class Plan:
    """What a stylize run will do: the items to write, in order, and everything it leaves out, each named."""

    items: list[PlanItem] = field(default_factory=list)
    #: items whose target exists, left as they are (skip_existing=true)
    skipped: list[PlanItem] = field(default_factory=list)
    #: files in input folders that failed their kind's check, and why (named as failures)
    rejected: list[tuple[PlanItem, UserError]] = field(default_factory=list)
    #: files in input folders of no kind fststyle stylises
    unsupported: list[Path] = field(default_factory=list)
    #: output folders to mark as such (files.mark_output_folder), each with the inputs that may lie inside it
    output_folders: dict[Path, list[Path]] = field(default_factory=dict)
    grid: Path | None = None


def input_kinds(*, batch_size: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                video_quality: int = DEFAULT_VIDEO_QUALITY, video_codec: str | None = None,
                temporal: str = "flow") -> list[InputKind]:
    """The kinds fststyle stylises, in the order a path is matched against them, after checking their settings
    (once: the kinds' own constructors take them as checked)."""
    jpeg_quality, temporal = check_jpeg_quality(jpeg_quality, "jpeg_quality"), check_temporal_mode(temporal)
    video_quality = check_video_quality(video_quality)
    return [SequenceKind(batch_size, max_pixels, jpeg_quality, temporal),
            AnimationKind(batch_size, max_pixels, jpeg_quality, temporal), PhotoKind(batch_size, max_pixels, jpeg_quality),
            VideoKind(batch_size, video_quality, video_codec, temporal)]


def kind_of(path: Path, kinds: Sequence[InputKind]) -> InputKind | None:
    """The first of ``kinds`` that takes ``path``, or None."""
    return next((kind for kind in kinds if kind.matches(path)), None)


def check_sources(paths: Sequence[str | os.PathLike], kinds: Sequence[InputKind],
                  grid: str | os.PathLike | None = None) -> list[Source]:
    """The named inputs, each checked: it exists, and a file is readable as its kind (a file no kind matches is
    taken for the fallback kind, a photo). Raises UserError naming the first that is not."""
    if not paths:
        raise UserError("nothing to stylise: fststyle stylize photo.jpg (or photos/) --model starry_night")
    sources = []
    for path in map(Path, paths):
        kind = kind_of(path, kinds) or next(kind for kind in kinds if kind.fallback)
        if not path.exists() and not kind.pattern:
            raise InputNotFoundError(f"input not found: {path}; pass photos or folders of photos")
        if path.is_dir():
            sources.append(Source(path))
            continue
        sources.append(Source(path, kind, kind.check_input(path)))
    if grid is not None and len(sources) > 1:
        raise UserError("grid= draws one input; run the inputs one at a time, or put them in one folder")
    return sources


def source_target(source: Source, output: str | os.PathLike | None, count: int, style_name: str | None) -> Path:
    """Where ``source`` goes: beside it (no output: ``photo_<style>.jpg``, ``photos_<style>/``), ``output`` itself
    (one input; a folder takes the file's name), or ``output/<its name>`` (several inputs)."""
    path = source.path
    if output is None:
        if source.kind is None:
            return path.with_name(f"{path.name}_{style_name}")
        return source.kind.default_output(path, str(style_name))
    target = Path(output)
    as_folder = target.is_dir() or str(output).endswith(("/", "\\"))
    if count > 1:
        if target.is_file() or (target.suffix and not as_folder and not target.exists()):
            raise UserError(f"output={output} looks like a file, but {count} inputs need a folder: -o {target.stem}/")
        return target / path.name
    return target / path.name if source.kind is not None and as_folder else target


def refuse_shared_targets(sources: Sequence[Source], targets: Sequence[Path]) -> None:
    """Two inputs must not write the same output (``a/x.jpg`` and ``b/x.jpg`` into one folder)."""
    seen: dict[Path, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        key = Path(os.path.abspath(target))
        if key in seen:
            raise UserError(f"{seen[key]} and {source.path} would both be written to {target}; stylise them into "
                            "different output folders")
        seen[key] = source.path


def make_plan(sources: Sequence[Source], output: str | os.PathLike | None, kinds: Sequence[InputKind], *,
              style_name: str | None = None, grid: str | os.PathLike | None = None, skip_existing: bool = False,
              rank: int = 0, world: int = 1) -> Plan:
    """The checked plan for ``sources`` (from ``check_sources``) into ``output`` (None: beside each input, named
    after ``style_name``). Raises UserError before anything is written if an output cannot be written or is an
    input. Folders are listed recursively (names and sub-folders kept under their target). Under torchrun/SLURM
    (``world`` > 1) this process keeps its share by ``rank``: of the named files, and of each folder's files of
    each kind. The files of a folder that fail their kind's check are rejected (named; the others still run)."""
    grid = None if grid is None else Path(grid)
    if grid is not None:
        check_writable(check_image_suffix(grid, "grid"))
        if world > 1:
            raise UserError("grid= draws every input in one picture; run it in one process (not under torchrun/srun)")
    targets = [source_target(source, output, len(sources), style_name) for source in sources]
    refuse_shared_targets(sources, targets)
    plan = Plan(grid=grid)
    named: list[PlanItem] = []
    folders: list[tuple[Path, dict[InputKind | None, list[PlanItem]]]] = []
    for source, target in zip(sources, targets, strict=True):
        if source.kind is None:
            folders.append((source.path, _folder_items(source.path, target, kinds, grid, plan)))
            continue
        if grid is not None and source.kind.name != "photo":
            raise UserError(f"grid= draws photos, and {source.path} is a {source.kind.name}; drop grid=")
        prepared = source.kind.check_output(source.path, target, source.found)
        check_writable(target)
        refuse_overwriting_inputs([source.path], [target, *([grid] if grid else [])])
        named.append(PlanItem(source.path, target, source.kind, prepared=prepared))
    if output is not None and len(targets) > 1:  # several inputs in one folder: a later run must not read it
        plan.output_folders[Path(output)] = [source.path for source in sources]
    mine = share(named, rank, world)
    shares = {kind: 0 for kind in kinds}
    for _, groups in folders:
        for kind, items in groups.items():
            items[:] = share(items, rank, world)
            if kind is not None:
                shares[kind] += len(items)
    if world > 1:
        log.info("process %d of %d: %s", rank + 1, world, ", ".join(
            [f"{len(mine)} files", *(f"{count} folder {kind.plural}" for kind, count in shares.items() if count)]))
    for item in mine:
        _keep_unless_existing(plan, item, skip_existing)
    for _, groups in folders:
        plan.unsupported += [item.source for item in groups.pop(None, [])]
        for kind, items in groups.items():
            for item in items:
                try:
                    found = kind.check_input(item.source)
                    item.prepared = kind.check_output(item.source, item.target, found)
                except UserError as error:
                    plan.rejected.append((item, error))
                    continue
                _keep_unless_existing(plan, item, skip_existing)
    return plan


def _keep_unless_existing(plan: Plan, item: PlanItem, skip_existing: bool) -> None:
    """Add ``item`` to the plan's items, or to its skipped ones if its target exists and ``skip_existing``."""
    (plan.skipped if skip_existing and item.target.exists() else plan.items).append(item)


def _folder_items(folder: Path, target: Path, kinds: Sequence[InputKind], grid: Path | None,
                  plan: Plan) -> dict[InputKind | None, list[PlanItem]]:
    """Every file under ``folder`` as an item into the same relative path under ``target``, by kind (None: of no
    kind), after checking that ``target`` is a writable folder and that no output is an input."""
    check_writable(target, folder=True)
    files = list_images(folder, suffixes=None)
    groups: dict[InputKind | None, list[PlanItem]] = {kind: [] for kind in kinds}
    groups[None] = []
    files_kinds = [kind for kind in kinds if not kind.pattern]  # a listed file is one file, never a pattern
    for path in files:
        kind = kind_of(path, files_kinds)
        groups[kind].append(PlanItem(path, target / path.relative_to(folder), kind, folder))  # type: ignore[arg-type]
    outputs = [target, *([grid] if grid else []),
               *(item.target for kind, items in groups.items() if kind is not None for item in items)]
    refuse_overwriting_inputs([folder, *files], outputs)
    plan.output_folders[target] = [folder]
    return groups
