"""Fast model vs the optimisation engines on the same photos, all scored by the model's own training loss.

Every engine sees each photo at one size; its output is saved as a lossless PNG and scored with the
``PerceptualLoss`` the model was trained with (its metadata's ``loss``, style targets from the style
image stored in the model file), so the numbers in ``report.json`` are what that loss gives on the PNGs.
The slow engines optimise their own loss (their engine config) and are scored like the fast output.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fststyle.errors import UserError
from fststyle.io.convert import pil_to_tensor, resize_image, tensor_to_pil
from fststyle.io.decode import load_image
from fststyle.losses import PerceptualLoss
from fststyle.memory import PeakMemory
from fststyle.nets.vgg import WEIGHT_SOURCES, WeightsUnavailableError
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.settings import Callback, build_loss, settings_from_config
from fststyle.style_model import StyleModel
from fststyle.stylize.stylizer import Stylizer

ENGINES = ("fast", "gatys", "mrf")
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


class EngineRunner:
    """The engines of one comparison, built once and run photo by photo on content 1,3,H,W."""

    def __init__(self, model: StyleModel, names: Sequence[str], configs: Mapping[str, Mapping[str, Any]],
                 styles: list[torch.Tensor], blend: Sequence[float] | None, image_size: int,
                 device: torch.device, seed: int, progress: bool) -> None:
        self.device, self.styles, self.blend, self.progress = device, styles, blend, progress
        self.stylizer = Stylizer.from_model(model, device=device) if "fast" in names else None
        # every engine works at the comparison's size, seeded like the rest of the run
        self.slow = {name: (dataclasses.replace(settings_from_config(configs[name]),
                                                image_size=image_size, seed=seed),
                            build_loss(configs[name]).to(device)) for name in names if name != "fast"}
        self.settings = {name: {"settings": dataclasses.asdict(settings), "loss": dict(configs[name]["loss"])}
                         for name, (settings, _) in self.slow.items()}
        if self.stylizer is not None:
            self.settings["fast"] = {"model": str(model.path), "dtype": str(self.stylizer.dtype)}
        self._warm = False

    def run(self, name: str, content: torch.Tensor,
            callback: Callback | None = None) -> tuple[torch.Tensor, float, int | None]:
        """The stylised image 1,3,H,W of engine ``name``, its wall seconds and peak memory bytes; a slow engine
        calls ``callback(step, image, terms)`` after every step (optimize_image)."""
        content = content.to(self.device)
        if name == "fast":
            with torch.inference_mode():
                if not self._warm:  # one untimed run: first-call allocations and kernel selection
                    self.stylizer(content)
                    self._warm = True
                return _timed(self.device, self.stylizer, content)
        settings, loss = self.slow[name]
        # optimize_image measures its own time and peak memory; an outer PeakMemory would reset and miss its peak
        result = optimize_image(content, self.styles, loss, settings, style_blend=self.blend,
                                progress=self.progress, callback=callback)
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


