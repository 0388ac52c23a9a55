"""The jobs behind ``fststyle <command>``: each takes its composed config and calls the library with plain
arguments. Every user error is raised as UserError before a network is loaded; each returns the exit status
(0 done, 1 some inputs failed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fststyle.errors import UserError

log = logging.getLogger("fststyle")


def _paths(value: Any) -> list[Path]:
    """A config value that holds one path, a list of paths, or null -> the paths."""
    if value is None:
        return []
    return [Path(str(value))] if isinstance(value, str | os.PathLike) else [Path(str(item)) for item in value]


def stylize(cfg: DictConfig) -> int:
    """``fststyle stylize``: every photo, video and folder in ``input`` with ``model``, into ``output``."""
    from fststyle.io.decode import DEFAULT_MAX_PIXELS
    from fststyle.stylize.runner import stylize_paths
    from fststyle.stylize.stylizer import Stylizer

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
    from fststyle.optimize.job import optimize_files

    run = optimize_files(_paths(cfg.input) if cfg.get("input") is not None else None,
                         _paths(cfg.style) if cfg.get("style") is not None else None, cfg.get("output"),
                         OmegaConf.to_container(cfg.engine, resolve=True), content_masks=_paths(cfg.content_masks),
                         style_masks=_paths(cfg.style_masks),
                         style_blend=list(cfg.style_blend) if cfg.get("style_blend") is not None else None,
                         preserve_color=bool(cfg.preserve_color), seed=int(cfg.seed), device=str(cfg.device),
                         jpeg_quality=cfg.jpeg_quality)
    print(f"wrote {run.image} and {run.report_path.name} ({run.result.seconds:.1f} s, "
          f"final loss {run.result.final_terms.get('total', float('nan')):.4g})")
    return 0


def compare(cfg: DictConfig) -> int:
    """``fststyle compare``: the fast model and the optimisation engines on the same photos, one report.
    The output folder is checked (writable, not an input, no file in it an input) before any model is loaded."""
    from fststyle.compare.job import compare_paths

    engines = [cfg.engines] if isinstance(cfg.engines, str) else list(cfg.engines)
    configs = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in engines
               if name != "fast" and cfg.get(name) is not None}
    report = compare_paths(cfg.get("model"), _paths(cfg.input) if cfg.get("input") is not None else None,
                           cfg.output, engines=engines, engine_configs=configs, style=_style_choice(cfg.style),
                           config=OmegaConf.to_container(cfg, resolve=True), image_size=cfg.get("image_size"),
                           device=str(cfg.device), seed=int(cfg.seed),
                           cell_height=int(cfg.get("cell_height", 256)), loss_weights=cfg.get("loss_weights"))
    return 1 if report["failures"] else 0


def export(cfg: DictConfig) -> int:
    """``fststyle export``: a style model (or a training .ckpt) as ONNX, TorchScript, Core ML, LiteRT, ExecuTorch or
    a .safetensors model."""
    from fststyle.stylize.export import export_model

    if cfg.model is None:
        raise UserError("nothing to export: fststyle export starry_night -o starry_night.onnx (a shipped name, a "
                        ".safetensors model or a training .ckpt; .pt .mlpackage .tflite .pte choose the other formats)")
    log.info("wrote %s", export_model(cfg.model, cfg.format, cfg.output, quantize=cfg.quantize,
                                      sizes=[str(size) for size in cfg.sizes], max_size=cfg.max_size))
    return 0


def train(cfg: DictConfig) -> int:
    """``fststyle train``: one style model, as docs/training.md describes."""
    from fststyle.training.run import train as fit

    fit(cfg)
    return 0


def serve(cfg: DictConfig) -> int:
    """``fststyle serve``: the local web page over ``model`` and the shipped models, until Ctrl-C."""
    from fststyle.serve.server import serve as serve_page

    plain = OmegaConf.to_container(cfg, resolve=True)
    keys = ("host", "port", "allow_remote", "allowed_hosts", "shipped", "device", "tile", "max_upload_mb",
            "max_pixels", "queue", "max_batch", "jpeg_quality", "slow_image_size", "slow_time_limit")
    return serve_page(_paths(plain["model"]), engines={"gatys": plain["gatys"], "mrf": plain["mrf"]},
                      **{key: plain[key] for key in keys})


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
CONFIG_JOBS = {"train": train, "stylize": stylize, "optimize": optimize, "compare": compare, "export": export,
               "serve": serve}
