"""The optimisation engine (slow path): optimise the pixels of one image against a ``PerceptualLoss``.

Gatys, Ecker & Bethge 2016 ("Image Style Transfer Using Convolutional Neural Networks") with the Gram loss,
Li & Wand 2016 (CNNMRF) with the MRF loss; coarse-to-fine pyramid (CNNMRF), several styles with blend weights,
colour preservation and spatial masks (Gatys et al. 2017). Plain PyTorch. ``optimize_files`` is the whole
job on files (inputs checked once, image and JSON report written); ``fststyle optimize`` is that one call.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fststyle.color import match_luminance, preserve_colors
from fststyle.errors import InputNotFoundError, UserError
from fststyle.images import DEFAULT_JPEG_QUALITY, longer_side_size
from fststyle.losses import (
    GramStyleLoss,
    MRFStyleLoss,
    PerceptualLoss,
    SpatialGramStyleLoss,
    StyleLoss,
    term_names,
)
from fststyle.losses.mrf import PatchSizeError
from fststyle.memory import PeakMemory
from fststyle.vgg import WeightsUnavailableError

log = logging.getLogger(__name__)

#: Adam's step on [0,1] pixels: neural-style's -learning_rate 1e1 on its 0-255 pixel scale (Johnson 2015,
#: jcjohnson/neural-style), divided by 256. L-BFGS takes torch's default lr=1: the line search sizes the step.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0 / 256}
INITS = ("content", "noise", "style")
#: neural-style's LBFGS runs with tolX = tolFun = -1: a fixed iteration count, no early stop on a plateau.
#: We stop only when the gradient or the step is exactly zero.
LBFGS_TOLERANCE = 0.0

Callback = Callable[[int, torch.Tensor, dict[str, float]], None]


@dataclass
class OptimizeSettings:
    """How one image is optimised; ``settings_from_config`` builds it from an ``engine`` config.

    The defaults are those of conf/engine/base/solver.yaml (where their sources are cited), which the gatys
    and mrf engine configs extend."""

    steps: int = 500  # iterations per pyramid level (L-BFGS iterations or Adam steps)
    optimizer: str = "lbfgs"  # lbfgs | adam
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    history_size: int = 100  # L-BFGS memory (torch's default)
    init: str = "content"  # content | noise | style | path to an image
    image_size: int = 512  # longer side of the result, px
    style_scale: float = 1.0  # style image's longer side = style_scale * the current level's longer side
    pyramid_levels: int = 1  # 1 = no pyramid; CNNMRF uses 3
    pyramid_ratio: float = 0.5  # size ratio between neighbouring levels (CNNMRF: 0.5)
    level_steps: list[int] | None = None  # per level, coarse to fine; None: ``steps`` at every level
    seed: int = 0
    save_every: int = 0  # write an intermediate image every N steps (0: never)
    save_dir: str | None = None  # where intermediate images go
    preserve_color: bool = False
    tensorboard: str | None = None  # a log dir for torch.utils.tensorboard, or None

    def __post_init__(self) -> None:
        if self.optimizer not in DEFAULT_LR:
            raise UserError(f"optimizer must be one of {sorted(DEFAULT_LR)}, got {self.optimizer!r}")
        if self.steps < 1 or self.image_size < 16 or self.pyramid_levels < 1:
            raise UserError("steps and pyramid_levels must be >= 1 and image_size >= 16 px "
                            f"(got steps={self.steps}, pyramid_levels={self.pyramid_levels}, image_size={self.image_size})")
        if not 0 < self.pyramid_ratio < 1:
            raise UserError(f"pyramid_ratio must be in (0, 1), got {self.pyramid_ratio}")
        if self.level_steps is not None and len(self.level_steps) != self.pyramid_levels:
            raise UserError(f"level_steps has {len(self.level_steps)} entries for {self.pyramid_levels} "
                             "pyramid levels; give one step count per level")
        if self.save_every and not self.save_dir:
            raise UserError("save_every needs save_dir (the folder for intermediate images)")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    def steps_per_level(self) -> list[int]:
        return list(self.level_steps) if self.level_steps is not None else [self.steps] * self.pyramid_levels


@dataclass
class OptimizationResult:
    """image 1,3,H,W in [0,1]; history: loss terms per step (plus ``level`` and ``step``); wall time; peak memory
    (``memory.PeakMemory``: CUDA allocator peak, or peak resident set on a Linux CPU; None elsewhere)."""

    image: torch.Tensor
    history: list[dict[str, float]]
    seconds: float
    peak_memory_bytes: int | None
    final_terms: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0


def settings_from_config(engine_cfg: Mapping[str, Any]) -> OptimizeSettings:
    """A composed ``engine`` config (conf/engine/gatys.yaml) -> settings; ``name`` and ``loss`` are not settings."""
    known = {f.name for f in dataclasses.fields(OptimizeSettings)}
    values = {k: v for k, v in dict(engine_cfg).items() if k not in ("name", "loss")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown optimisation settings {unknown}; valid keys: {sorted(known)}")
    if values.get("level_steps") is not None:
        values["level_steps"] = [int(s) for s in values["level_steps"]]
    return OptimizeSettings(**values)


def build_loss(engine_cfg: Mapping[str, Any]) -> PerceptualLoss:
    """The engine's ``loss`` config (same keys as conf/loss/) -> a ``PerceptualLoss`` on CPU."""
    if engine_cfg.get("loss") is None:
        raise UserError("the engine config has no 'loss' section (see conf/engine/gatys.yaml)")
    try:
        return PerceptualLoss.from_config(engine_cfg["loss"])
    except (ValueError, TypeError, WeightsUnavailableError) as error:
        raise UserError(f"engine.loss: {error}") from error


@dataclass(frozen=True)
class PyramidLevel:
    """One level of an ``ImagePyramid``: its index in the full pyramid (0 = coarsest), image size (H, W), steps."""

    index: int
    size: tuple[int, int]
    steps: int


class ImagePyramid:
    """Every resize of the optimisation (CNNMRF's coarse-to-fine pyramid): the levels, coarse to fine, for a
    content image of (``height``, ``width``), and content, style and running images resized onto each level.

    The finest level has longer side ``settings.image_size``, each coarser one ``pyramid_ratio`` times its
    neighbour's; style images get longer side ``style_scale`` times the level's (at least 16 px). With an MRF
    ``loss``, coarse levels at which an MRF layer of the output or of a style image (of sizes ``style_sizes``)
    holds no full patch are skipped with a warning in the log; PatchSizeError when the finest one is.
    Content masks are not resized here: the spatial loss fits them to each feature map."""

    def __init__(self, height: int, width: int, settings: OptimizeSettings, loss: PerceptualLoss | None = None,
                 style_sizes: Sequence[tuple[int, int]] = ()) -> None:
        self.style_scale = settings.style_scale
        count = settings.pyramid_levels
        longer = [round(settings.image_size * settings.pyramid_ratio ** (count - 1 - i)) for i in range(count)]
        levels = [PyramidLevel(index, longer_side_size(height, width, side), steps)
                  for index, (side, steps) in enumerate(zip(longer, settings.steps_per_level(), strict=True))]
        if loss is not None and isinstance(loss.style, MRFStyleLoss):
            levels = self._with_full_patches(levels, loss, style_sizes, settings.image_size)
        self.levels = levels

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the levels, coarse to fine."""
        return [level.size for level in self.levels]

    @property
    def finest(self) -> PyramidLevel:
        return self.levels[-1]

    @staticmethod
    def style_side(level_side: int, style_scale: float) -> int:
        """Longer side of the style images at a level of longer side ``level_side``."""
        return max(16, round(style_scale * level_side))

    def style_size(self, style_size: tuple[int, int], level: PyramidLevel) -> tuple[int, int]:
        """(H, W) at ``level`` of a style image of (H, W) ``style_size``, aspect kept."""
        return longer_side_size(*style_size, self.style_side(max(level.size), self.style_scale))

    @staticmethod
    def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """N,C,H,W -> N,C,h,w, antialiased bicubic, clamped to [0,1]."""
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)

    def image(self, image: torch.Tensor, level: PyramidLevel) -> torch.Tensor:
        """A content-shaped image N,3,H,W (content, running image, colour source) at ``level``."""
        return self.resize(image, level.size)

    def styles(self, styles: Sequence[torch.Tensor], level: PyramidLevel) -> list[torch.Tensor]:
        """Style images 1,3,h,w at ``level``: longer side ``style_scale`` times the level's."""
        return [self.resize(style, self.style_size(tuple(style.shape[-2:]), level)) for style in styles]

    def _with_full_patches(self, levels: list[PyramidLevel], loss: PerceptualLoss,
                           style_sizes: Sequence[tuple[int, int]], image_size: int) -> list[PyramidLevel]:
        def problem(level: PyramidLevel) -> str | None:
            return loss.style.size_problem(loss.vgg, level.size, [self.style_size(s, level) for s in style_sizes])

        finest = problem(levels[-1])
        if finest:
            raise PatchSizeError(f"image_size={image_size} is too small for the MRF loss: {finest}; use a "
                                 "larger image_size (or style_scale)")
        kept = []
        for level in levels:
            skipped = problem(level)
            if skipped:
                log.warning("MRF pyramid level %d of %d (%dx%d px) skipped with its %d steps: %s", level.index + 1,
                            len(levels), level.size[1], level.size[0], level.steps, skipped)
            else:
                kept.append(level)
        return kept


def _as_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    """1,1,H,W or 1,3,H,W (grey as RGB) in [0,1] -> 1,1,H,W."""
    if mask.dim() != 4 or mask.shape[0] != 1 or mask.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape 1,1,H,W or 1,3,H,W, got {tuple(mask.shape)}")
    return mask.float().mean(dim=1, keepdim=True)


def _working_loss(loss: PerceptualLoss, masked: bool) -> PerceptualLoss:
    """The loss ``optimize_image`` sets its targets on: a target-free copy of the caller's on the same VGG (the
    caller's keeps its targets), with a per-region Gram style term when ``masked``."""
    if not masked:
        return loss.untargeted_copy()
    unmasked = [term.name for term in loss.terms.values() if isinstance(term, StyleLoss) and term.name != "style"]
    if unmasked:
        raise ValueError(f"content_masks bind regions to styles in the Gram style term only, and this loss also "
                         f"has the {', '.join(unmasked)} term; set its weight to 0 "
                         f"(engine.loss.{unmasked[0]}_weight=0)")
    if isinstance(loss.style, SpatialGramStyleLoss):
        return loss.untargeted_copy()
    if not isinstance(loss.style, GramStyleLoss):
        raise ValueError(f"content_masks need the Gram style loss (engine=gatys); this loss uses "
                         f"{type(loss.style).__name__}")
    return loss.untargeted_copy(SpatialGramStyleLoss(loss.style.layer_weights, weight=loss.style.weight))


def _initial_image(settings: OptimizeSettings, content: torch.Tensor, styles: Sequence[torch.Tensor],
                   generator: torch.Generator) -> torch.Tensor:
    """The start 1,3,H,W of the coarsest level, of ``content``'s size."""
    size = tuple(content.shape[-2:])
    if settings.init == "content":
        return content.clone()
    if settings.init == "noise":  # white noise, as Gatys et al. 2016 start from
        return torch.rand(content.shape, generator=generator).to(content.device)
    if settings.init == "style":
        return ImagePyramid.resize(styles[0], size)
    path = Path(settings.init)
    if not path.is_file():
        raise FileNotFoundError(f"init={settings.init!r} is neither one of {INITS} nor an existing image file")
    from fststyle.images import load_image

    return load_image(path, size).to(content.device)


def _scalars(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value.detach()) for name, value in terms.items()}


class _Recorder:
    """Per-step bookkeeping: history, progress bar, intermediate images, TensorBoard, user callback."""

    def __init__(self, settings: OptimizeSettings, total_steps: int, progress: bool, callback: Callback | None,
                 colour_source: torch.Tensor | None) -> None:
        self.settings, self.callback, self.colour_source = settings, callback, colour_source
        self.history: list[dict[str, float]] = []
        self.step = 0
        self.evaluations = 0
        self.bar = tqdm(total=total_steps, desc="optimise", unit="step", disable=not progress)
        self.writer = None
        if settings.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(settings.tensorboard)

    def viewable(self, image: torch.Tensor) -> torch.Tensor:
        image = image.detach().clamp(0, 1)
        if self.colour_source is not None:
            image = preserve_colors(image, ImagePyramid.resize(self.colour_source, tuple(image.shape[-2:])))
        return image

    def record(self, level: int, image: torch.Tensor, terms: dict[str, float], advance: bool) -> None:
        """Log the terms of the image reached after ``self.step`` steps (``advance``: one more step was taken)."""
        if advance:
            self.step += 1
            self.bar.update(1)
        self.history.append({"level": level, "step": self.step, **terms})
        self.bar.set_postfix({k: f"{terms[k]:.4g}" for k in term_names(terms)}, refresh=False)
        if self.writer is not None:
            for name, value in terms.items():
                self.writer.add_scalar(f"optimize/{name}", value, self.step)
        every = self.settings.save_every
        if advance and every and self.step % every == 0:
            from fststyle.images import save_image

            picture = self.viewable(image)
            save_image(picture, Path(self.settings.save_dir) / f"step_{self.step:05d}.png")
            if self.writer is not None:
                self.writer.add_image("optimize/image", picture[0].cpu(), self.step)
        if self.callback is not None:
            self.callback(self.step, image.detach(), terms)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _run_lbfgs(x: torch.Tensor, loss: PerceptualLoss, steps: int, settings: OptimizeSettings, level: int,
               recorder: _Recorder) -> None:
    """L-BFGS with a strong-Wolfe line search; ``steps`` iterations in one ``step()`` call (no re-evaluations).

    Each iteration's terms are those of its last function evaluation (the point the line search accepted).
    ``max_eval`` only guards against a runaway line search: the first iteration alone can take several
    evaluations while it grows the tiny initial step."""
    optimizer = torch.optim.LBFGS([x], lr=settings.learning_rate, max_iter=steps, max_eval=steps * 4,
                                  history_size=settings.history_size, line_search_fn="strong_wolfe",
                                  tolerance_grad=LBFGS_TOLERANCE, tolerance_change=LBFGS_TOLERANCE)
    pending: list[Any] = []  # [iteration, image, terms] of the latest evaluation, not yet recorded

    def flush() -> None:
        iteration, image, terms = pending.pop()
        recorder.record(level, image, terms, advance=iteration > 0)

    def closure() -> torch.Tensor:
        iteration = optimizer.state[x].get("n_iter", 0)
        if pending and pending[0][0] != iteration:
            flush()
        optimizer.zero_grad(set_to_none=False)
        terms = loss(x)
        terms["total"].backward()
        recorder.evaluations += 1
        pending[:] = [(iteration, x.detach().clone(), _scalars(terms))]
        return terms["total"]

    optimizer.step(closure)
    if pending:
        flush()


def _run_adam(x: torch.Tensor, loss: PerceptualLoss, steps: int, settings: OptimizeSettings, level: int,
              recorder: _Recorder) -> None:
    """Adam (Kingma & Ba 2015) with torch's betas; pixels are projected back to [0,1] after every step."""
    optimizer = torch.optim.Adam([x], lr=settings.learning_rate)
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=False)
        terms = loss(x)
        recorder.evaluations += 1
        recorder.record(level, x, _scalars(terms), advance=step > 0)
        if step == steps:
            break
        terms["total"].backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)


def optimize_image(content: torch.Tensor, styles: Sequence[torch.Tensor], loss: PerceptualLoss,
                   settings: OptimizeSettings, *, style_blend: Sequence[float] | None = None,
                   content_masks: Sequence[torch.Tensor] | None = None,
                   style_masks: Sequence[torch.Tensor] | None = None, progress: bool = True,
                   callback: Callback | None = None) -> OptimizationResult:
    """Optimise an image of ``content`` 1,3,H,W toward ``styles`` (each 1,3,h,w, any size) under ``loss``.

    The result has the content's aspect ratio and longer side ``settings.image_size``. ``content_masks`` (one
    1,1,H,W mask per style, white = region) bind each content region to one style; ``style_masks`` restrict
    each style to one of its own regions. ``callback(step, image, terms)`` runs after every step.
    """
    styles = list(styles)
    if content.dim() != 4 or content.shape[:2] != (1, 3):
        raise ValueError(f"content must have shape 1,3,H,W, got {tuple(content.shape)}")
    if not styles:
        raise ValueError("give at least one style image")
    if style_masks is not None and content_masks is None:
        raise ValueError("style_masks need content_masks: each content region is bound to a style region")
    options: dict[str, Any] = {}
    if content_masks is not None:
        if style_blend is not None:
            raise ValueError("style_blend and content_masks exclude each other: with masks, each region gets "
                             "its own style")
        if len(content_masks) != len(styles):
            raise ValueError(f"got {len(styles)} styles but {len(content_masks)} content masks; give one mask per "
                             "style (white = where that style goes)")
        options["content_masks"] = [_as_mask(m, f"content_masks[{i}]") for i, m in enumerate(content_masks)]
        if style_masks is not None:
            if len(style_masks) != len(styles):
                raise ValueError(f"got {len(styles)} styles but {len(style_masks)} style masks; give one per style")
            options["style_masks"] = [_as_mask(m, f"style_masks[{i}]") for i, m in enumerate(style_masks)]

    loss = _working_loss(loss, masked=content_masks is not None)
    device = loss.vgg.mean.device
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        image, history, final_terms, evaluations = _optimize(content, styles, loss, settings, style_blend, options,
                                                             progress, callback, device)
        seconds = time.perf_counter() - started
    return OptimizationResult(image=image.cpu(), history=history, seconds=seconds, peak_memory_bytes=memory.bytes,
                              final_terms=final_terms, evaluations=evaluations)


def _optimize(content: torch.Tensor, styles: list[torch.Tensor], loss: PerceptualLoss, settings: OptimizeSettings,
              style_blend: Sequence[float] | None, options: dict[str, Any], progress: bool,
              callback: Callback | None, device: torch.device) -> tuple[torch.Tensor, list[dict[str, float]],
                                                                         dict[str, float], int]:
    """The pyramid loop of ``optimize_image``: (result 1,3,H,W in [0,1], history, final terms, evaluations)."""
    generator = torch.Generator().manual_seed(settings.seed)
    pyramid = ImagePyramid(content.shape[-2], content.shape[-1], settings, loss,
                           [tuple(style.shape[-2:]) for style in styles])
    full_content = pyramid.image(content.float().to(device), pyramid.finest)
    target_content, target_styles = full_content, [s.float().to(device) for s in styles]
    if settings.preserve_color:  # luminance-only transfer (Gatys et al. 2017 §5.1)
        target_styles = [match_luminance(s, full_content) for s in target_styles]
        target_content = match_luminance(full_content, full_content)
    recorder = _Recorder(settings, sum(level.steps for level in pyramid.levels), progress, callback,
                         full_content if settings.preserve_color else None)
    image = None
    try:
        for level in pyramid.levels:
            level_content = pyramid.image(target_content, level)
            level_styles = pyramid.styles(target_styles, level)
            loss.set_content(level_content)
            loss.set_style(level_styles, style_blend, **options)
            start = (_initial_image(settings, level_content, level_styles, generator) if image is None
                     else pyramid.image(image, level))
            x = start.detach().to(device).contiguous().requires_grad_(True)
            run_level = _run_lbfgs if settings.optimizer == "lbfgs" else _run_adam
            run_level(x, loss, level.steps, settings, level.index, recorder)
            image = x.detach()
        with torch.no_grad():
            final_terms = _scalars(loss(image))
    finally:
        recorder.close()
    result = image.clamp(0, 1)
    if settings.preserve_color:
        result = preserve_colors(result, full_content)
    return result, recorder.history, final_terms, recorder.evaluations


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
    from fststyle.files import (
        atomic_write_json,
        check_writable,
        mark_output_folder,
        refuse_overwriting_inputs,
    )
    from fststyle.images import check_image_suffix, check_jpeg_quality, load_image, save_image
    from fststyle.losses import blend_weights

    for value, key, example in ((content, "input", "photo.jpg"), (styles, "style", "--style painting.jpg"),
                                (output, "output", "-o out.png")):
        if value is None:
            raise UserError(f"optimize needs {key}: e.g. fststyle optimize photo.jpg --style painting.jpg -o out.png "
                            f"(missing: {example})")
    engine = dict(engine)
    output = check_image_suffix(output)
    report_path = output.with_suffix(".json")
    quality = check_jpeg_quality(jpeg_quality)
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


__all__ = ["ImagePyramid", "OptimizationResult", "OptimizedFiles", "PyramidLevel", "OptimizeSettings", "build_loss", "optimize_files", "optimize_image", "settings_from_config", "step_images"]
