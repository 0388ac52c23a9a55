"""The jobs behind ``fststyle <command>``: each takes its composed config and calls the library with plain
arguments. Every user error is raised as UserError before a network is loaded; each returns the exit status
(0 done, 1 some inputs failed)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
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
    """``fststyle stylize``: every photo, video and folder in ``input`` with ``model``, into ``output``."""
    from fststyle.images import DEFAULT_MAX_PIXELS
    from fststyle.runner import stylize_paths
    from fststyle.stylize import Stylizer

    if cfg.model is None:
        raise UserError("no style model given: add --model starry_night (fststyle models lists the shipped ones) "
                        "or --model path/to/style.safetensors")

    def load() -> Stylizer:
        return Stylizer.load(cfg.model, device=cfg.device, precision=cfg.precision, style=_style_choice(cfg.style),
                             tile=cfg.tile, tile_overlap=cfg.tile_overlap, strength=cfg.strength,
                             preserve_color=cfg.preserve_color, compile=cfg.compile,
                             statistics_size=cfg.tile_statistics_size)

    report = stylize_paths(_paths(cfg.input), cfg.output, load, grid=cfg.grid, skip_existing=cfg.skip_existing,
                           batch_size=cfg.batch_size, max_pixels=DEFAULT_MAX_PIXELS if cfg.max_pixels is None else cfg.max_pixels,
                           jpeg_quality=cfg.jpeg_quality, video_quality=cfg.video_quality,
                           video_codec=cfg.video_codec, temporal=cfg.temporal)
    return 1 if report.failed else 0


def _style_choice(value: Any) -> Any:
    """The ``style=`` setting as StyleModel.select takes it: None, a name, or a plain ``{name: weight}`` dict."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


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
