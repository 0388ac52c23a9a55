"""The whole optimisation job on files: inputs checked once, the image and its JSON report written
(``fststyle optimize`` is this one call).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fststyle.errors import InputNotFoundError, UserError
from fststyle.io.encode import DEFAULT_JPEG_QUALITY
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.pyramid import ImagePyramid
from fststyle.optimize.settings import (
    INITS,
    OptimizationResult,
    OptimizeSettings,
    build_loss,
    settings_from_config,
)


def step_images(settings: OptimizeSettings) -> list[Path]:
    """The intermediate images ``save_every`` writes into ``save_dir`` (none when it is 0)."""
    if not settings.save_every:
        return []
    total = sum(settings.steps_per_level())
    return [Path(settings.save_dir) / f"step_{step:05d}.png" for step in range(settings.save_every, total + 1,
                                                                              settings.save_every)]


def _path_list(value: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """One path, several, or None -> the paths."""
    if value is None:
        return []
    return [Path(value)] if isinstance(value, str | os.PathLike) else [Path(item) for item in value]


def _existing_files(value: str | os.PathLike | Sequence[str | os.PathLike] | None, setting: str) -> list[Path]:
    """The files ``value`` names, each checked to exist (one line naming ``setting`` otherwise)."""
    paths = _path_list(value)
    for path in paths:
        if not path.is_file():
            raise InputNotFoundError(f"{setting} file not found: {path}; pass an existing image file")
    return paths


@dataclass
class OptimizedFiles:
    """What ``optimize_files`` wrote: the image, its JSON report (``report`` is its content) and the run."""

    image: Path
    report_path: Path
    report: dict[str, Any]
    result: OptimizationResult


def optimize_files(content: str | os.PathLike | Sequence[str | os.PathLike] | None,
                   styles: str | os.PathLike | Sequence[str | os.PathLike] | None,
                   output: str | os.PathLike | None, engine: Mapping[str, Any], *,
                   content_masks: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                   style_masks: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                   style_blend: Sequence[float] | None = None, preserve_color: bool = False, seed: int = 0,
                   device: str | torch.device = "cpu", jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                   progress: bool = True) -> OptimizedFiles:
    """Optimise the photo ``content`` toward the image(s) ``styles`` with ``engine`` (a plain engine config:
    conf/engine/gatys.yaml composed, with ``name`` and ``loss``) and save the result at ``output``, with its
    JSON report (inputs, settings, device, time, memory, loss history) beside it as ``output`` with .json.

    Every input is checked once before the loss is built: one content photo, existing style, mask and init
    image files, one mask per style, ``style_blend`` and ``content_masks`` not both, outputs (image, report,
    step images) that overwrite no input, and writable outputs; a UserError names the fix. The image and the
    report are written atomically. ``fststyle optimize`` is this call."""
    from fststyle.devices import resolve_device
    from fststyle.io.decode import load_image
    from fststyle.io.encode import check_image_suffix, check_jpeg_quality, save_image
    from fststyle.io.files import (
        atomic_write_json,
        check_writable,
        mark_output_folder,
        refuse_overwriting_inputs,
    )
    from fststyle.losses import blend_weights

    for value, key, example in ((content, "input", "photo.jpg"), (styles, "style", "--style painting.jpg"),
                                (output, "output", "-o out.png")):
        if value is None:
            raise UserError(f"optimize needs {key}: e.g. fststyle optimize photo.jpg --style painting.jpg -o out.png "
                            f"(missing: {example})")
    engine = dict(engine)
    output = check_image_suffix(output, "output")
    report_path = output.with_suffix(".json")
    quality = check_jpeg_quality(jpeg_quality, "jpeg_quality")
    settings = settings_from_config({**engine, "preserve_color": bool(preserve_color), "seed": int(seed),
                                     "save_dir": engine.get("save_dir") or str(output.with_name(output.stem + "_steps"))})
    contents = _existing_files(content, "input")
    if len(contents) != 1:
        raise UserError(f"optimize takes one photo, got {len(contents)}; run it once per photo")
    content_path = contents[0]
    style_paths = _existing_files(styles, "style")
    mask_paths = _existing_files(content_masks, "content_masks") or None
    style_mask_paths = _existing_files(style_masks, "style_masks") or None
    init_paths = [] if settings.init in INITS else [Path(settings.init)]
    if init_paths and not init_paths[0].is_file():
        raise InputNotFoundError(f"engine.init={settings.init!r} is neither one of {', '.join(INITS)} nor an existing "
                                 "image file; e.g. engine.init=noise or engine.init=start.png")
    for what, paths in (("content_masks", mask_paths), ("style_masks", style_mask_paths)):
        if paths is not None and len(paths) != len(style_paths):
            raise UserError(f"got {len(style_paths)} styles but {len(paths)} {what}: give one mask per style, "
                            f"in the same order, e.g. style='[sky.jpg,sea.jpg]' {what}='[sky.png,sea.png]'")
    blend = list(style_blend) if style_blend is not None else None
    if blend is not None and mask_paths is not None:
        raise UserError("style_blend and content_masks exclude each other: with masks, each region gets its own "
                        "style; drop style_blend=")
    if blend is not None:
        try:
            blend_weights(len(style_paths), blend)
        except ValueError as error:
            raise UserError(f"style_blend: {error}, e.g. style_blend='[0.7,0.3]' for two styles") from None
    inputs = [content_path, *style_paths, *(mask_paths or []), *(style_mask_paths or []), *init_paths]
    steps = step_images(settings)
    refuse_overwriting_inputs(inputs, [output, report_path, *steps])
    for path in (output, *steps[:1]):
        check_writable(path)

    device = resolve_device(str(device))
    loss = build_loss(engine).to(device)
    content_image = load_image(content_path, settings.image_size)
    style_side = ImagePyramid.style_side(settings.image_size, settings.style_scale)
    style_images = [load_image(path, style_side) for path in style_paths]
    masks = [load_image(path) for path in mask_paths] if mask_paths else None
    region_masks = [load_image(path) for path in style_mask_paths] if style_mask_paths else None
    if steps:
        mark_output_folder(settings.save_dir, inputs)
    result = optimize_image(content_image, style_images, loss, settings, style_blend=blend, content_masks=masks,
                            style_masks=region_masks, progress=progress)
    save_image(result.image, output, quality=quality)
    report = {
        "engine": engine.get("name"),
        "content": str(content_path),
        "style": [str(p) for p in style_paths],
        "style_blend": blend,
        "content_masks": [str(p) for p in mask_paths] if mask_paths else None,
        "style_masks": [str(p) for p in style_mask_paths] if style_mask_paths else None,
        "device": str(device),
        "settings": dataclasses.asdict(settings),
        "loss": engine["loss"],
        "seconds": result.seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "evaluations": result.evaluations,
        "start": result.history[0] if result.history else {},
        "final": result.final_terms,
        "history": result.history,
    }
    atomic_write_json(report_path, report)
    return OptimizedFiles(image=output, report_path=report_path, report=report, result=result)

