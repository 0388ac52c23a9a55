"""Fast model vs the optimisation engines on the same photos, all scored by the model's own training loss.

Every engine sees each photo at one size; its output is saved as a lossless PNG and scored with the
``PerceptualLoss`` the model was trained with (its metadata's ``loss``, style targets from the style
image stored in the model file), so the numbers in ``report.json`` are what that loss gives on the PNGs.
The slow engines optimise their own loss (their engine config) and are scored like the fast output.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fststyle import optimize
from fststyle.devices import device_name
from fststyle.errors import UserError
from fststyle.files import (
    atomic_write_json,
    atomic_write_text,
    mark_output_folder,
)
from fststyle.images import (
    ImageReadError,
    labelled_grid,
    load_image,
    pil_to_tensor,
    resize_image,
    save_image,
    tensor_to_pil,
)
from fststyle.losses import PerceptualLoss, term_names
from fststyle.memory import PeakMemory
from fststyle.style_model import StyleModel
from fststyle.stylize import Stylizer
from fststyle.vgg import WEIGHT_SOURCES, WeightsUnavailableError

log = logging.getLogger(__name__)

ENGINES = ("fast", "gatys", "mrf")
#: the overview grid and the two reports in the output folder
REPORT_FILES = ("overview.png", "report.json", "report.md")
#: Johnson et al. 2016 train at 256x256 and compare objective values with Gatys et al. at that size (Fig. 5).
DEFAULT_IMAGE_SIZE = 256


class ComparisonError(UserError):
    """A comparison that cannot start (model, engine or input problem); the message names the fix."""


def quantize(image: torch.Tensor) -> torch.Tensor:
    """N=1,3,H,W in [0,1] -> the same image rounded to 8 bits, exactly as its saved PNG reads back."""
    return pil_to_tensor(tensor_to_pil(image)).unsqueeze(0)


def style_images(model: StyleModel, style_paths: Sequence[str | Path] | None = None) -> list[torch.Tensor]:
    """The style images 1,3,H,W the model was trained on, at the training ``style.size`` (longer side): the ones
    stored in the model file, or ``style_paths`` when the user names them. Paths in the metadata are never read."""
    style = dict(model.metadata.get("style") or {})
    if style_paths:
        images = [load_image(path) for path in style_paths]
    else:
        stored = model.style_images
        if stored is None:
            raise ComparisonError(
                f"{model.path}: the model stores no style image, and compare never reads the style.paths a model's "
                "metadata names; name the style image(s) it was trained on with style=painting.jpg "
                "(style='[a.jpg,b.jpg]' for several), or use the .safetensors fststyle train writes, which stores it.")
        images = list(stored)
    size = style.get("size")
    if size is None:
        return images
    return [resize_image(image, int(size)) for image in images]


def choose_style(model: StyleModel, style: str | Mapping[str, float] | Sequence[str] | None) -> StyleModel:
    """The one-style model compare runs and scores: ``style`` is None, one of the model's style names (a list
    of at most one) or a ``{name: weight}`` blend (StyleModel.select)."""
    if isinstance(style, Mapping):
        return model.select(style)
    names = [style] if isinstance(style, str) else list(style or [])
    known = model.style_names
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ComparisonError(f"style={unknown[0]} is neither one of the styles of {model.path} "
                              f"({', '.join(known)}) nor an existing image file; choose a style with "
                              f"style={known[0]}, or score against an image with style=painting.jpg")
    if len(names) > 1:
        raise ComparisonError(f"style= names {len(names)} of the model's styles ({', '.join(names)}); choose one, "
                              f"or blend them with 'style={{{names[0]}: 0.5, {names[1]}: 0.5}}'")
    return model.select(names[0] if names else None)


def scoring_config(model: StyleModel, loss_weights: str | None = None) -> dict[str, Any]:
    """The model's training loss config, with VGG weights ``loss_weights`` when given. A weights file named in
    the metadata is refused: compare loads only weight sources by name (caffe, torchvision, random) or the file
    the user names."""
    metadata = model.metadata
    if not metadata.get("loss"):
        raise ComparisonError(
            f"{model.path}: the model's metadata has no training loss ('loss'), so its outputs cannot be scored "
            "the way it was trained; re-export it from its training checkpoint with fststyle's export.")
    config = dict(metadata["loss"])
    network = config.get("network") or {}
    if not isinstance(network, Mapping):
        raise ComparisonError(f"{model.path}: its training loss has a malformed 'network' entry ({network!r}); "
                              "re-export it from its training checkpoint with fststyle's export.")
    weights = network.get("weights", "torchvision")
    if loss_weights is not None:
        weights = str(loss_weights)
    elif not (isinstance(weights, str) and weights in WEIGHT_SOURCES):
        raise ComparisonError(
            f"{model.path}: its training loss takes VGG weights from the file {weights!r} named in its metadata, and "
            f"compare loads no file a model names; set loss_weights=/path/to/that/file to trust it (or "
            f"loss_weights={'|'.join(WEIGHT_SOURCES)}).")
    config["network"] = {**network, "weights": weights}
    return config


def scoring_loss(model: StyleModel, device: torch.device, styles: Sequence[torch.Tensor],
                 loss_weights: str | None = None) -> PerceptualLoss:
    """The model's own training loss (network, layers, weights) with its style targets set from ``styles``
    (each 1,3,H,W), on ``device``."""
    config = scoring_config(model, loss_weights)
    try:
        loss = PerceptualLoss.from_config(config).to(device)
        loss.set_style([image.to(device) for image in styles], blend=(model.metadata.get("style") or {}).get("blend"))
    except UserError:
        raise
    except (TypeError, ValueError, WeightsUnavailableError) as error:
        raise ComparisonError(f"{model.path}: its training loss cannot be rebuilt ({error})") from error
    return loss


def _timed(device: torch.device, function, *args, **kwargs) -> tuple[Any, float, int | None]:
    """Run ``function`` and return (its result, wall seconds, peak memory bytes or None)."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = function(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return result, seconds, memory.bytes


class _Engines:
    """The engines of one comparison, built once and run photo by photo on content 1,3,H,W."""

    def __init__(self, model: StyleModel, names: Sequence[str], configs: Mapping[str, Mapping[str, Any]],
                 styles: list[torch.Tensor], blend: Sequence[float] | None, image_size: int,
                 device: torch.device, seed: int, progress: bool) -> None:
        self.device, self.styles, self.blend, self.progress = device, styles, blend, progress
        self.stylizer = Stylizer.from_model(model, device=device) if "fast" in names else None
        # every engine works at the comparison's size, seeded like the rest of the run
        self.slow = {name: (dataclasses.replace(optimize.settings_from_config(configs[name]),
                                                image_size=image_size, seed=seed),
                            optimize.build_loss(configs[name]).to(device)) for name in names if name != "fast"}
        self.settings = {name: {"settings": dataclasses.asdict(settings), "loss": dict(configs[name]["loss"])}
                         for name, (settings, _) in self.slow.items()}
        if self.stylizer is not None:
            self.settings["fast"] = {"model": str(model.path), "dtype": str(self.stylizer.dtype)}
        self._warm = False

    def run(self, name: str, content: torch.Tensor) -> tuple[torch.Tensor, float, int | None]:
        """The stylised image 1,3,H,W of engine ``name``, its wall seconds and peak memory bytes."""
        content = content.to(self.device)
        if name == "fast":
            with torch.inference_mode():
                if not self._warm:  # one untimed run: first-call allocations and kernel selection
                    self.stylizer(content)
                    self._warm = True
                return _timed(self.device, self.stylizer, content)
        settings, loss = self.slow[name]
        # optimize_image measures its own time and peak memory; an outer PeakMemory would reset and miss its peak
        result = optimize.optimize_image(content, self.styles, loss, settings, style_blend=self.blend,
                                         progress=self.progress)
        return result.image, result.seconds, result.peak_memory_bytes


def photo_names(photos: Sequence[Path], root: Path | None) -> list[str]:
    """Unique output names: the path under ``root`` (else under the photos' common folder) without suffix;
    the suffix is kept where two would collide."""
    if root is None:
        root = Path(os.path.commonpath([p.absolute().parent for p in photos])) if photos else Path()
        photos = [p.absolute() for p in photos]
    relative = [p.relative_to(root) for p in photos]
    stems = [r.with_suffix("").as_posix() for r in relative]
    return [s if stems.count(s) == 1 else r.as_posix().replace(".", "_") for s, r in zip(stems, relative, strict=True)]


def _spread(values: Sequence[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def _succeeded(results: Mapping[str, Mapping[str, Any]], engine: str) -> bool:
    return engine in results and "error" not in results[engine]


def summarise(rows: Sequence[Mapping[str, Any]], engines: Sequence[str]) -> dict[str, Any]:
    """Per engine, over the photos it succeeded on: mean/std(n-1)/min/max of every loss term and of seconds, max
    peak memory, and the speed-up of fast over each slow engine (total slow seconds / total fast seconds on the
    photos both succeeded on)."""
    summary: dict[str, Any] = {}
    for engine in engines:
        results = [row["results"][engine] for row in rows if _succeeded(row["results"], engine)]
        if not results:
            continue
        peaks = [r["peak_memory_bytes"] for r in results if r["peak_memory_bytes"] is not None]
        summary[engine] = {
            "photos": len(results),
            "losses": {term: _spread([r["losses"][term] for r in results]) for term in results[0]["losses"]},
            "seconds": _spread([r["seconds"] for r in results]),
            "peak_memory_bytes": max(peaks) if peaks else None,
        }
    speedup = {}
    for engine in engines:
        both = [row["results"] for row in rows
                if engine != "fast" and _succeeded(row["results"], "fast") and _succeeded(row["results"], engine)]
        if both:
            fast_seconds = sum(r["fast"]["seconds"] for r in both)
            speedup[engine] = sum(r[engine]["seconds"] for r in both) / fast_seconds
    return {"engines": summary, "speedup_of_fast": speedup}


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
    runner = _Engines(record, engines, engine_configs, styles, blend, size, device, seed, progress)
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
    from fststyle.files import check_writable, refuse_overwriting_inputs
    from fststyle.images import image_files

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


def _scored_run(runner: _Engines, engine: str, content: torch.Tensor, loss: PerceptualLoss, path: Path,
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


def check_engines(engines: Sequence[str], engine_configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ComparisonError for an empty, unknown, repeated or unconfigured engine name."""
    choices = ", ".join(ENGINES)
    if not engines:
        raise ComparisonError(f"no engines to compare; set engines='[fast,gatys,mrf]' (any of {choices})")
    for name in engines:
        if name not in ENGINES:
            raise ComparisonError(f"unknown engine {name!r} in engines={list(engines)}; choose from {choices}")
        if list(engines).count(name) > 1:
            raise ComparisonError(f"engine {name!r} is listed twice in engines={list(engines)}")
        if name != "fast" and not engine_configs.get(name):
            raise ComparisonError(
                f"engine {name!r} has no settings (no `{name}` node in the config); run with "
                f"--config-name compare, which loads conf/engine/{name}.yaml at `{name}`")


def column_labels(style_count: int, engines: Sequence[str]) -> list[str]:
    """Column labels of the strips and the overview: content, the style image(s), then each engine."""
    styles = ["style"] if style_count == 1 else [f"style {i + 1}" for i in range(style_count)]
    return ["content", *styles, *engines]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table_text(text: str) -> str:
    """``text`` on one line with its pipes escaped, to sit in a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: summary and per-photo tables, the pictures, and how to re-run the comparison."""
    model, summary = report["model"], report["summary"]
    style = model.get("style") or {}
    # one column per whole term of the scoring loss (content, style, tv, total, and any other it has)
    columns = next((term_names(stats["losses"]) for stats in summary["engines"].values()), [])
    lines = [
        "# Fast model vs optimisation", "",
        f"Model `{model['path']}` (style {style.get('name', '?')}, {model.get('steps')} training steps), "
        f"photos at {report['image_size']} px (longer side) on {report['device']}, torch {report['torch']}.",
        "Every output is scored with the model's own training loss (lower is better); wall time and peak "
        "memory are per photo (fast: after one untimed warm-up run; CPU memory: peak resident set above the "
        "start).", "",
        "## Summary (mean ± std [min, max])", "",
        f"| engine | photos | {' | '.join(columns)} | seconds | peak MB | fast is faster by |",
        "|" + "---|" * (len(columns) + 5),
    ]
    for engine, stats in summary["engines"].items():
        cells = [f"{_fmt(s['mean'])} ± {_fmt(s['std'])} [{_fmt(s['min'])}, {_fmt(s['max'])}]"
                 for s in (stats["losses"][t] for t in columns)]
        speedup = summary["speedup_of_fast"].get(engine)
        lines.append(f"| {engine} | {stats['photos']} | {' | '.join(cells)} | {_fmt(stats['seconds']['mean'])} | "
                     f"{_megabytes(stats['peak_memory_bytes'])} | {'-' if speedup is None else f'{speedup:.3g}x'} |")
    lines += ["", "## Per photo", "", f"| photo | size | engine | {' | '.join(columns)} | seconds | peak MB |",
              "|" + "---|" * (len(columns) + 5)]
    for row in report["photos"]:
        for engine, result in row["results"].items():
            photo = f"| [{row['name']}]({row['strip']}) | {row['width']}x{row['height']} |"
            if "error" in result:
                empty = " |" * (len(columns) + 1)  # the rest of the term columns, seconds, peak MB
                lines.append(f"{photo} {engine} | **failed**: {_table_text(result['error'])} |{empty}")
                continue
            terms = " | ".join(_fmt(result["losses"][t]) for t in columns)
            lines.append(f"{photo} [{engine}]({result['image']}) | {terms} | {_fmt(result['seconds'])} | "
                         f"{_megabytes(result['peak_memory_bytes'])} |")
    if report.get("overview"):
        lines += ["", "## Pictures", "", f"![overview]({report['overview']})", ""]
        lines += [f"![{row['name']}]({row['strip']})" for row in report["photos"]]
    if report["failures"]:
        lines += ["", "## Failures (photos that could not be read, engines that failed on a photo)", ""]
        lines += [f"- `{f['photo']}`{' (' + f['engine'] + ')' if 'engine' in f else ''}: {f['error']}"
                  for f in report["failures"]]
    provenance = report.get("provenance") or {}
    lines += ["", "## Re-run", ""]
    if provenance.get("command"):
        lines += ["```", provenance["command"], "```", ""]
    lines += ["Engine settings (the full resolved config is in report.json under `provenance`):", "", "```json",
              json.dumps(report["engine_settings"], indent=2), "```", ""]
    return "\n".join(lines)


def engine_image(engine: str, name: str) -> str:
    """Where engine ``engine``'s output for photo ``name`` goes, relative to the output folder."""
    return f"{engine}/{name}.png"


def strip_image(name: str) -> str:
    """Where the strip (content, style, each engine) of photo ``name`` goes, relative to the output folder."""
    return f"strips/{name}.png"


def planned_outputs(output: Path, engines: Sequence[str], names: Sequence[str]) -> list[Path]:
    """Every file ``compare`` writes into ``output`` for photos with these output ``names``."""
    files = [output / engine_image(engine, name) for engine in engines for name in names]
    files += [output / strip_image(name) for name in names]
    return [*files, *(output / report_file for report_file in REPORT_FILES)]
