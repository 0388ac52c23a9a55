"""The comparison job: run every engine on every photo, score, and write the images, strips and reports."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fststyle.compare.report import (
    REPORT_FILES,
    column_labels,
    engine_image,
    planned_outputs,
    render_markdown,
    strip_image,
)
from fststyle.compare.scoring import (
    DEFAULT_IMAGE_SIZE,
    ComparisonError,
    EngineRunner,
    check_engines,
    choose_style,
    photo_names,
    quantize,
    scoring_loss,
    style_images,
    summarise,
)
from fststyle.devices import device_name
from fststyle.errors import UserError
from fststyle.io.decode import ImageReadError, load_image
from fststyle.io.encode import save_image
from fststyle.io.files import (
    atomic_write_json,
    atomic_write_text,
    mark_output_folder,
)
from fststyle.io.grids import labelled_grid
from fststyle.losses import PerceptualLoss
from fststyle.style_model import StyleModel

log = logging.getLogger(__name__)

def compare(model: str | Path, photos: Sequence[str | Path], output: str | Path, *, engines: Sequence[str],
            engine_configs: Mapping[str, Mapping[str, Any]], image_size: int | None = None,
            device: str | torch.device = "cpu", seed: int = 0, cell_height: int = 256,
            photo_root: str | Path | None = None, provenance: Mapping[str, Any] | None = None,
            progress: bool = True, style_paths: Sequence[str | Path] | None = None,
            loss_weights: str | None = None,
            style: str | Mapping[str, float] | Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``engines`` on every photo, write PNGs, strips, an overview grid, report.md and report.json
    into ``output``; returns the report dict. Unreadable photos, and each engine that failed on a photo, are
    listed under ``failures`` (and that engine's result in the photo's row is ``{"error": ...}``).

    ``style`` chooses one of a model's styles or blends them (choose_style); the style targets come from the
    chosen styles' images stored in the model, or from ``style_paths`` when given; the scoring loss's VGG weights
    from a named source in the metadata, or ``loss_weights`` when given."""
    model, output, device = Path(model), Path(output), torch.device(device)
    engines = list(engines)
    check_engines(engines, engine_configs)
    if not model.is_file():
        raise ComparisonError(f"model not found: {model}; pass model=path/to/style.safetensors")
    record = choose_style(StyleModel.load(model), style)
    metadata = record.metadata
    styles = style_images(record, style_paths)
    loss = scoring_loss(record, device, styles, loss_weights)
    blend = (metadata.get("style") or {}).get("blend")
    size = int(image_size or metadata.get("image_size") or DEFAULT_IMAGE_SIZE)
    runner = EngineRunner(record, engines, engine_configs, styles, blend, size, device, seed, progress)
    photos = [Path(p) for p in photos]
    names = photo_names(photos, Path(photo_root) if photo_root is not None else None)
    mark_output_folder(output, [model, *photos])

    rows, failures, strips = [], [], []
    for photo, name in tqdm(list(zip(photos, names, strict=True)), desc="compare", unit="photo",
                            disable=not progress):
        try:
            content = load_image(photo, size)
        except (ImageReadError, FileNotFoundError, IsADirectoryError) as error:
            log.error("skipping %s: %s", photo, error)
            failures.append({"photo": str(photo), "error": str(error)})
            continue
        row = {"photo": str(photo), "name": name, "height": content.shape[-2], "width": content.shape[-1],
               "results": {}}
        outputs: dict[str, torch.Tensor | None] = {}
        for engine in engines:
            try:
                outputs[engine], row["results"][engine] = _scored_run(runner, engine, content, loss,
                                                                      output / engine_image(engine, name), output)
            except Exception as error:  # one engine failing on one photo must not cost the other results
                message = f"{type(error).__name__}: {error}"
                log.error("%s failed on %s: %s", engine, photo, message, exc_info=not isinstance(error, UserError))
                outputs[engine], row["results"][engine] = None, {"error": message}
                failures.append({"photo": str(photo), "engine": engine, "error": message})
        cells = [content, *styles, *(outputs[e] for e in engines)]
        labels = [*column_labels(len(styles), engines)[:-len(engines)],
                  *(_cell_label(e, row["results"][e]) for e in engines)]
        row["strip"] = strip_image(name)
        save_image(labelled_grid([cells], col_labels=labels, cell_height=cell_height), output / row["strip"])
        strips.append(cells)
        rows.append(row)

    report = {
        "model": {"path": str(model), **{k: metadata.get(k) for k in ("style", "steps", "image_size", "loss")}},
        "image_size": size,
        "device": device_name(device),
        "torch": torch.__version__,
        "engines": engines,
        "engine_settings": {name: runner.settings[name] for name in engines},
        "provenance": dict(provenance or {}),
        "photos": rows,
        "failures": failures,
        "summary": summarise(rows, engines),
    }
    overview_file, json_file, markdown_file = REPORT_FILES
    if strips:
        report["overview"] = overview_file
        grid = labelled_grid(strips, col_labels=column_labels(len(styles), engines),
                             row_labels=[row["name"] for row in rows], cell_height=cell_height)
        save_image(grid, output / overview_file)
    atomic_write_json(output / json_file, report)
    atomic_write_text(output / markdown_file, render_markdown(report))
    return report


def command_line() -> str:
    """The command as typed, for a report's provenance: interpreter and script by name (python infer.py ...,
    python fststyle compare ...)."""
    return shlex.join([Path(part).name if index < 2 else part for index, part in enumerate(sys.orig_argv)])


def split_style(value: str | os.PathLike | Mapping[str, float] | Sequence[str | os.PathLike] | None,
                ) -> tuple[list[Path] | None, str | Mapping[str, float] | list[str] | None]:
    """compare's ``style`` split into (style images to score against, the model's style to run): an existing
    file is a style image; a ``{name: weight}`` mapping and any other value name the model's style(s)."""
    if value is None or isinstance(value, Mapping):
        return None, value
    paths = [Path(value)] if isinstance(value, str | os.PathLike) else [Path(item) for item in value]
    return [path for path in paths if path.is_file()] or None, [str(path) for path in paths if not path.is_file()]


def compare_paths(model: str | Path | None, inputs: str | os.PathLike | Sequence[str | os.PathLike] | None,
                  output: str | os.PathLike | None, *, engines: str | Sequence[str],
                  engine_configs: Mapping[str, Mapping[str, Any]],
                  style: str | os.PathLike | Mapping[str, float] | Sequence[str | os.PathLike] | None = None,
                  config: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """The whole comparison from paths: the photos and folders ``inputs`` against the model ``model`` (a
    shipped name or a file) with ``engines``, into the folder ``output`` (None: compare_out).

    Every input is checked once before any model is loaded: photos and a model given, inputs that exist, known
    and configured engines, the model file, a writable output folder that is no input and will overwrite none.
    ``style`` is split by ``split_style`` (style images to score against, or the model's style to run). The
    report's provenance is the command as typed and ``config``, the full resolved config. ``options``: those
    of ``compare`` (image_size, device: any name resolve_device takes, seed, cell_height, loss_weights,
    progress). Logs where the reports went; returns the report (its ``failures`` list the photos and engines that failed)."""
    from fststyle.bundled import find_model
    from fststyle.devices import resolve_device
    from fststyle.io.files import check_writable, refuse_overwriting_inputs
    from fststyle.io.listing import image_files

    if model is None or inputs is None:
        raise ComparisonError("compare needs photos and a model: fststyle compare photos/ --model starry_night")
    sources = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(item) for item in inputs]
    for source in sources:
        if not source.exists():
            raise ComparisonError(f"input not found: {source}; pass photos or folders of photos")
    photos = image_files(sources, "input")
    root = sources[0] if len(sources) == 1 and sources[0].is_dir() else None
    engines = [engines] if isinstance(engines, str) else list(engines)
    provenance = {"command": command_line(), "config": dict(config or {})}
    output = Path(output or "compare_out")
    check_engines(engines, engine_configs)
    model_path = find_model(model)
    if not model_path.is_file():
        raise ComparisonError(f"model not found: {model}; pass --model starry_night or a .safetensors file")
    check_writable(output, folder=True)
    style_paths, style = split_style(style)
    refuse_overwriting_inputs([*sources, model_path, *photos, *(style_paths or [])],
                              [output, *planned_outputs(output, engines, photo_names(photos, root))])
    device = resolve_device(str(options.pop("device", "cpu")))
    report = compare(model_path, photos, output, engines=engines, engine_configs=engine_configs, photo_root=root,
                     provenance=provenance, style_paths=style_paths, style=style, device=device, **options)
    log.info("wrote %s and %s", output / "report.md", output / "report.json")
    if report["failures"]:
        log.error("%d failures on %d photos (listed in report.md)", len(report["failures"]), len(photos))
    return report


def _scored_run(runner: EngineRunner, engine: str, content: torch.Tensor, loss: PerceptualLoss, path: Path,
                output: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run ``engine`` on content 1,3,H,W, save its 8-bit output at ``path`` and score that with ``loss``:
    (the saved image 1,3,H,W, its result entry: image path relative to ``output``, seconds, peak memory, losses)."""
    image, seconds, peak = runner.run(engine, content)
    picture = quantize(image.detach().cpu())
    save_image(picture, path)
    with torch.no_grad():
        terms = loss(picture.to(runner.device), content.to(runner.device))
    return picture, {"image": path.relative_to(output).as_posix(), "seconds": seconds, "peak_memory_bytes": peak,
                     "losses": {k: float(v) for k, v in terms.items()}}


def _cell_label(engine: str, result: Mapping[str, Any]) -> str:
    return f"{engine} (failed)" if "error" in result else f"{engine} ({result['seconds']:.3g} s)"

