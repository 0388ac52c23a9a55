"""The jobs behind ``fststyle <command>``: each takes its composed config and calls the library with plain
arguments. Every user error is raised as UserError before a network is loaded; each returns the exit status
(0 done, 1 some inputs failed)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fststyle.errors import InputNotFoundError, UserError

log = logging.getLogger("fststyle")


def _paths(value: Any) -> list[Path]:
    """A config value that holds one path, a list of paths, or null -> the paths."""
    if value is None:
        return []
    return [Path(str(value))] if isinstance(value, str | os.PathLike) else [Path(str(item)) for item in value]


def _existing_files(value: Any, setting: str) -> list[Path]:
    """The files a path setting names, each checked to exist (one line naming the setting otherwise)."""
    paths = _paths(value)
    for path in paths:
        if not path.is_file():
            raise InputNotFoundError(f"{setting} file not found: {path}; pass an existing image file")
    return paths


def stylize(cfg: DictConfig) -> int:
    """``fststyle stylize``: every photo and folder in ``input`` with ``model``, into ``output``."""
    from fststyle.files import mark_output_folder
    from fststyle.images import DEFAULT_MAX_PIXELS, check_jpeg_quality, open_image
    from fststyle.sharding import process_rank, share
    from fststyle.stylize import (
        Stylizer,
        check_file_job,
        check_folder_job,
        default_output,
        stylize_file,
        stylize_folder,
        write_grid,
    )
    from fststyle.temporal import check_temporal_mode, temporal_smoother
    from fststyle.video import (
        check_video_codec,
        check_video_input,
        check_video_job,
        check_video_quality,
        is_video,
    )

    if cfg.model is None:
        raise UserError("no style model given: add --model starry_night (fststyle models lists the shipped ones) "
                        "or --model path/to/style.safetensors")
    sources = _paths(cfg.input)
    if not sources:
        raise UserError("nothing to stylise: fststyle stylize photo.jpg (or photos/) --model starry_night")
    for source in sources:
        if not source.exists():
            raise InputNotFoundError(f"input not found: {source}; pass photos or folders of photos")
        if source.is_file() and is_video(source):
            check_video_input(source)  # a file that is not a readable video fails before the model loads
    if cfg.grid is not None and len(sources) > 1:
        raise UserError("grid= draws one input; run the inputs one at a time, or put them in one folder")
    quality = check_jpeg_quality(cfg.jpeg_quality)
    max_pixels = cfg.max_pixels if cfg.max_pixels is not None else DEFAULT_MAX_PIXELS
    video_settings = {"batch_size": cfg.batch_size, "quality": check_video_quality(cfg.video_quality),
                      "codec": cfg.video_codec}
    check_temporal_mode(cfg.temporal)

    style = _style_choice(cfg.style)

    def load() -> Stylizer:
        return Stylizer.load(cfg.model, device=cfg.device, precision=cfg.precision, style=style, tile=cfg.tile,
                             tile_overlap=cfg.tile_overlap, strength=cfg.strength, preserve_color=cfg.preserve_color,
                             compile=cfg.compile, statistics_size=cfg.tile_statistics_size)

    stylizer = None if cfg.output is not None else load()  # the default outputs name the style
    targets = [_stylize_target(source, cfg.output, len(sources), stylizer, default_output) for source in sources]
    _refuse_shared_targets(sources, targets)
    folder_images, folder_videos = {}, {}
    for source, target in zip(sources, targets, strict=True):
        if source.is_dir():
            folder_images[source] = check_folder_job(source, target, cfg.grid)
            folder_videos[source] = _check_folder_videos(source, target)
        elif is_video(source):
            if cfg.grid is not None:
                raise UserError(f"grid= draws photos, and {source} is a video; drop grid=")
            check_video_job(source, target, cfg.video_codec)
        else:
            check_file_job(source, target, cfg.grid)
    if any(is_video(source) for source in sources) or any(folder_videos.values()):
        check_video_codec(video_settings["codec"])
    rank, world = process_rank()
    if world > 1:  # torchrun / SLURM: each process takes a disjoint share of the files and of each folder
        if cfg.grid is not None:
            raise UserError("grid= draws every input in one picture; run it in one process (not under torchrun/srun)")
        mine = set(share([source for source in sources if not source.is_dir()], rank, world))
        folder_images = {source: share(images, rank, world) for source, images in folder_images.items()}
        folder_videos = {source: share(videos, rank, world) for source, videos in folder_videos.items()}
        kept = [index for index, source in enumerate(sources) if source.is_dir() or source in mine]
        sources, targets = [sources[index] for index in kept], [targets[index] for index in kept]
        log.info("process %d of %d: %d files, %d folder images, %d folder videos", rank + 1, world, len(mine),
                 sum(map(len, folder_images.values())), sum(map(len, folder_videos.values())))
    stylizer = stylizer or load()
    if cfg.output is not None and len(targets) > 1:  # several inputs in one folder: a later run must not read it
        mark_output_folder(Path(cfg.output), sources)
    status = 0
    for source, target in zip(sources, targets, strict=True):
        if source.is_dir():
            if folder_images[source] or not folder_videos[source]:
                report = stylize_folder(stylizer, source, target, batch_size=cfg.batch_size, max_pixels=max_pixels,
                                        grid=cfg.grid, quality=quality, skip_existing=cfg.skip_existing,
                                        images=folder_images[source])
                log.info("%s", report.summary())
                status = status or (1 if report.failed else 0)
            failed = _stylize_folder_videos(stylizer, source, target, folder_videos[source], cfg.skip_existing,
                                            cfg.temporal, video_settings)
            status = status or (1 if failed else 0)
            continue
        if cfg.skip_existing and target.exists():
            log.info("skipped %s: it exists (skip_existing=true)", target)
            continue
        if is_video(source):
            from fststyle.video import stylize_video

            smoother = temporal_smoother(cfg.temporal)  # one per clip: it holds the previous frame
            log.info("%s", stylize_video(stylizer, source, target, smoother=smoother, **video_settings).summary())
            continue
        start = time.perf_counter()
        stylize_file(stylizer, source, target, max_pixels=max_pixels, quality=quality)
        log.info("wrote %s in %.2f s", target, time.perf_counter() - start)
        if cfg.grid is not None:
            write_grid([(open_image(source, max_pixels=max_pixels)[0], open_image(target)[0])], [source.name],
                       cfg.grid, stylizer.style_name)
    return status


def _style_choice(value: Any) -> Any:
    """The ``style=`` setting as StyleModel.select takes it: None, a name, or a plain ``{name: weight}`` dict."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _check_folder_videos(source: Path, target: Path) -> list[Path]:
    """The videos under the folder ``source``, none of whose outputs (same relative path under ``target``)
    is an input."""
    from fststyle.files import refuse_overwriting_inputs
    from fststyle.images import list_images
    from fststyle.video import VIDEO_SUFFIXES

    videos = list_images(source, VIDEO_SUFFIXES)
    refuse_overwriting_inputs(videos, [target / video.relative_to(source) for video in videos])
    return videos


def _stylize_folder_videos(stylizer: Any, source: Path, target: Path, videos: Sequence[Path], skip_existing: bool,
                           temporal: str, settings: dict[str, Any]) -> list[Path]:
    """Stylise each video under ``source`` into the same relative path under ``target``; a video that fails is
    logged by name and the others still run. Returns the videos that failed."""
    from fststyle.files import mark_output_folder
    from fststyle.temporal import temporal_smoother
    from fststyle.video import stylize_video

    if videos:
        mark_output_folder(target, [source])
    failed = []
    for video in videos:
        destination = target / video.relative_to(source)
        if skip_existing and destination.exists():
            log.info("skipped %s: it exists (skip_existing=true)", destination)
            continue
        try:
            smoother = temporal_smoother(temporal)  # one per clip: it holds the previous frame
            log.info("%s", stylize_video(stylizer, video, destination, smoother=smoother, **settings).summary())
        except (UserError, OSError) as error:
            failed.append(video)
            log.error("%s", error if str(video) in str(error) else f"{video}: {error}")
    if videos:
        log.info("stylised %d of %d videos in %s%s", len(videos) - len(failed), len(videos), source,
                 f"; failed: {', '.join(map(str, failed))}" if failed else "")
    return failed


def _stylize_target(source: Path, output: str | None, count: int, stylizer: Any, default_output: Any) -> Path:
    """Where ``source`` goes: beside it (no output), ``output`` itself (one input; a folder takes the file's
    name), or ``output/<its name>`` (several inputs)."""
    if output is None:
        return default_output(source, stylizer.style_name)
    target = Path(output)
    as_folder = target.is_dir() or str(output).endswith(("/", "\\"))
    if count > 1:
        if target.is_file() or (target.suffix and not as_folder and not target.exists()):
            raise UserError(f"output={output} looks like a file, but {count} inputs need a folder: -o {target.stem}/")
        return target / source.name
    return target / source.name if source.is_file() and as_folder else target


def _refuse_shared_targets(sources: Sequence[Path], targets: Sequence[Path]) -> None:
    """Two inputs must not write the same output (``a/x.jpg`` and ``b/x.jpg`` into one folder)."""
    seen: dict[Path, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        key = Path(os.path.abspath(target))
        if key in seen:
            raise UserError(f"{seen[key]} and {source} would both be written to {target}; stylise them into "
                            "different output folders")
        seen[key] = source


def optimize(cfg: DictConfig) -> int:
    """``fststyle optimize``: optimise one image (``input``) towards ``style`` with engine gatys or mrf."""
    from fststyle.devices import resolve_device
    from fststyle.files import (
        atomic_write_json,
        check_writable,
        mark_output_folder,
        refuse_overwriting_inputs,
    )
    from fststyle.images import check_image_suffix, check_jpeg_quality, load_image, save_image
    from fststyle.losses import blend_weights
    from fststyle.optimize import (
        INITS,
        ImagePyramid,
        build_loss,
        optimize_image,
        settings_from_config,
        step_images,
    )

    for key, example in (("input", "photo.jpg"), ("style", "--style painting.jpg"), ("output", "-o out.png")):
        if cfg.get(key) is None:
            raise UserError(f"optimize needs {key}: e.g. fststyle optimize photo.jpg --style painting.jpg -o out.png "
                            f"(missing: {example})")
    engine = OmegaConf.to_container(cfg.engine, resolve=True)
    output = check_image_suffix(cfg.output)
    report_path = output.with_suffix(".json")
    quality = check_jpeg_quality(cfg.jpeg_quality)
    settings = settings_from_config({**engine, "preserve_color": bool(cfg.preserve_color), "seed": int(cfg.seed),
                                     "save_dir": engine.get("save_dir") or str(output.with_name(output.stem + "_steps"))})
    contents = _existing_files(cfg.input, "input")
    if len(contents) != 1:
        raise UserError(f"optimize takes one photo, got {len(contents)}; run it once per photo")
    content_path = contents[0]
    style_paths = _existing_files(cfg.style, "style")
    mask_paths = _existing_files(cfg.content_masks, "content_masks") or None
    style_mask_paths = _existing_files(cfg.style_masks, "style_masks") or None
    init_paths = [] if settings.init in INITS else [Path(settings.init)]
    if init_paths and not init_paths[0].is_file():
        raise InputNotFoundError(f"engine.init={settings.init!r} is neither one of {', '.join(INITS)} nor an existing "
                                 "image file; e.g. engine.init=noise or engine.init=start.png")
    for what, paths in (("content_masks", mask_paths), ("style_masks", style_mask_paths)):
        if paths is not None and len(paths) != len(style_paths):
            raise UserError(f"got {len(style_paths)} styles but {len(paths)} {what}: give one mask per style, "
                            f"in the same order, e.g. style='[sky.jpg,sea.jpg]' {what}='[sky.png,sea.png]'")
    blend = list(cfg.style_blend) if cfg.get("style_blend") is not None else None
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

    device = resolve_device(str(cfg.device))
    loss = build_loss(engine).to(device)
    content = load_image(content_path, settings.image_size)
    style_side = ImagePyramid.style_side(settings.image_size, settings.style_scale)
    styles = [load_image(path, style_side) for path in style_paths]
    masks = [load_image(path) for path in mask_paths] if mask_paths else None
    style_masks = [load_image(path) for path in style_mask_paths] if style_mask_paths else None
    if steps:
        mark_output_folder(settings.save_dir, inputs)
    result = optimize_image(content, styles, loss, settings, style_blend=blend, content_masks=masks,
                            style_masks=style_masks)
    save_image(result.image, output, quality=quality)
    report = {
        "engine": cfg.engine.name,
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
    print(f"wrote {output} and {report_path.name} ({result.seconds:.1f} s, "
          f"final loss {result.final_terms.get('total', float('nan')):.4g})")
    return 0


def compare(cfg: DictConfig) -> int:
    """``fststyle compare``: the fast model and the optimisation engines on the same photos, one report.
    The output folder is checked (writable, not an input, no file in it an input) before any model is loaded."""
    from fststyle.bundled import find_model
    from fststyle.compare import ComparisonError, check_engines, compare, photo_names, planned_outputs
    from fststyle.devices import resolve_device
    from fststyle.files import check_writable, refuse_overwriting_inputs
    from fststyle.images import image_files

    if cfg.get("model") is None or cfg.get("input") is None:
        raise ComparisonError("compare needs photos and a model: fststyle compare photos/ --model starry_night")
    sources = _paths(cfg.input)
    for source in sources:
        if not source.exists():
            raise ComparisonError(f"input not found: {source}; pass photos or folders of photos")
    photos = image_files(sources, "input")
    root = sources[0] if len(sources) == 1 and sources[0].is_dir() else None
    engines = [cfg.engines] if isinstance(cfg.engines, str) else list(cfg.engines)
    configs = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in engines
               if name != "fast" and cfg.get(name) is not None}
    # the command as typed: interpreter and script by name (python infer.py ..., python fststyle compare ...)
    command = shlex.join([Path(part).name if index < 2 else part for index, part in enumerate(sys.orig_argv)])
    provenance = {"command": command, "config": OmegaConf.to_container(cfg, resolve=True)}
    output = Path(cfg.output or "compare_out")
    check_engines(engines, configs)
    model = find_model(cfg.model)
    if not model.is_file():
        raise ComparisonError(f"model not found: {cfg.model}; pass --model starry_night or a .safetensors file")
    check_writable(output, folder=True)
    style_paths, style = _compare_styles(cfg.style)
    inputs = [*sources, model, *photos, *(style_paths or [])]
    refuse_overwriting_inputs(inputs, [output, *planned_outputs(output, engines, photo_names(photos, root))])
    report = compare(model, photos, output, engines=engines, engine_configs=configs,
                     image_size=cfg.get("image_size"), device=resolve_device(str(cfg.device)), seed=int(cfg.seed),
                     cell_height=int(cfg.get("cell_height", 256)), photo_root=root, provenance=provenance,
                     style_paths=style_paths, loss_weights=cfg.get("loss_weights"), style=style)
    log.info("wrote %s and %s", output / "report.md", output / "report.json")
    if report["failures"]:
        log.error("%d failures on %d photos (listed in report.md)", len(report["failures"]), len(photos))
        return 1
    return 0


def _compare_styles(value: Any) -> tuple[list[Path] | None, Any]:
    """compare's ``style=`` split into (style images to score against, the model's style to run): an existing
    file is a style image; a ``{name: weight}`` mapping and any other value name the model's style(s)."""
    value = _style_choice(value)
    if value is None or isinstance(value, dict):
        return None, value
    paths = _paths(value)
    return [path for path in paths if path.is_file()] or None, [str(path) for path in paths if not path.is_file()]


def export(cfg: DictConfig) -> int:
    """``fststyle export``: a style model (or a training .ckpt) as ONNX, TorchScript or a .safetensors model."""
    from fststyle.export import export_model

    if cfg.model is None:
        raise UserError("nothing to export: fststyle export starry_night (a shipped name, a .safetensors model "
                        "or a training .ckpt) [format=onnx|torchscript|safetensors]")
    log.info("wrote %s", export_model(cfg.model, cfg.format, cfg.output))
    return 0


def train(cfg: DictConfig) -> int:
    """``fststyle train``: one style model, as docs/training.md describes."""
    from fststyle.training import train as fit

    fit(cfg)
    return 0


def models() -> int:
    """``fststyle models``: the shipped style models, one line each (name, style(s), size, steps, hardware, and
    the held-out artefact figures recorded at training, fststyle.artefacts); a model of several styles lists
    them all (style=NAME chooses one at stylize)."""
    from fststyle.bundled import shipped_models
    from fststyle.model_header import read_model_header, style_names

    rows = [("name", "style", "size", "steps", "trained on", "blobs", "hatching", "file")]
    for name, path in shipped_models().items():
        transformer, metadata = read_model_header(path)  # the header alone: no torch, no weights read
        styles = ", ".join(style_names(transformer.get("styles", 1), metadata, path))
        artefacts = metadata.get("artefacts") or {}
        blobs, hatching = artefacts.get("blobs"), artefacts.get("hatching")
        rows.append((name, styles, f"{metadata.get('image_size', '?')} px",
                     str(metadata.get("steps", "?")), str(metadata.get("hardware", "not recorded")),
                     "not recorded" if blobs is None else f"{blobs:.2%}",
                     "not recorded" if hatching is None else f"{hatching:.4f}", str(path)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


#: the jobs that run on a composed config, by command name
CONFIG_JOBS = {"train": train, "stylize": stylize, "optimize": optimize, "compare": compare, "export": export}
