"""The optimisation engine (slow path): optimise the pixels of one image against a ``PerceptualLoss``.

Gatys, Ecker & Bethge 2016 ("Image Style Transfer Using Convolutional Neural Networks") with the Gram loss,
Li & Wand 2016 (CNNMRF) with the MRF loss; coarse-to-fine pyramid (CNNMRF), several styles with blend weights,
colour preservation and spatial masks (Gatys et al. 2017). Plain PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fststyle.color import match_luminance, preserve_colors
from fststyle.losses import (
    GramStyleLoss,
    PerceptualLoss,
    SpatialGramStyleLoss,
    StyleLoss,
    term_names,
)
from fststyle.memory import PeakMemory
from fststyle.optimize.lbfgs import DeviceLBFGS
from fststyle.optimize.pyramid import ImagePyramid
from fststyle.optimize.settings import (
    CUDA_GRAPH_WARMUP,
    INITS,
    LBFGS_TOLERANCE,
    Callback,
    OptimizationResult,
    OptimizeSettings,
)


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
    from fststyle.io.decode import load_image

    return load_image(path, size).to(content.device)


def _scalars(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value.detach()) for name, value in terms.items()}


class _Recorder:
    """Per-step bookkeeping: history, progress bar, intermediate images, TensorBoard, user callback.

    The terms of each step stay on the device and are read in one transfer every ``READ_EVERY`` steps, at a
    level's end, or at once when a callback or an intermediate image needs them: one host sync per batch of
    steps instead of one per step."""

    READ_EVERY = 25

    def __init__(self, settings: OptimizeSettings, total_steps: int, progress: bool, callback: Callback | None,
                 colour_source: torch.Tensor | None) -> None:
        self.settings, self.callback, self.colour_source = settings, callback, colour_source
        self.history: list[dict[str, float]] = []
        self.unread: list[tuple[int, int, list[str], torch.Tensor]] = []  # level, step, names, terms on device
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

    def record(self, level: int, image: torch.Tensor, terms: Mapping[str, torch.Tensor], advance: bool) -> None:
        """Log the terms of the image reached after ``self.step`` steps (``advance``: one more step was taken)."""
        if advance:
            self.step += 1
            self.bar.update(1)
        values = torch.stack([value.detach().float().reshape(()) for value in terms.values()])
        self.unread.append((level, self.step, list(terms), values))
        every = self.settings.save_every
        saving = advance and every and self.step % every == 0
        if self.callback is not None or saving or len(self.unread) >= self.READ_EVERY:
            self.read()
        if saving:
            from fststyle.io.encode import save_image

            picture = self.viewable(image)
            save_image(picture, Path(self.settings.save_dir) / f"step_{self.step:05d}.png")
            if self.writer is not None:
                self.writer.add_image("optimize/image", picture[0].cpu(), self.step)
        if self.callback is not None:
            self.callback(self.step, image.detach(), dict(self.history[-1]))

    def read(self) -> None:
        """Bring the unread steps' terms to the host (one transfer) into the history, bar and TensorBoard."""
        if not self.unread:
            return
        rows = torch.stack([values for *_, values in self.unread]).tolist()
        for (level, step, names, _), row in zip(self.unread, rows, strict=True):
            terms = dict(zip(names, row, strict=True))
            self.history.append({"level": level, "step": step, **terms})
            if self.writer is not None:
                for name, value in terms.items():
                    self.writer.add_scalar(f"optimize/{name}", value, step)
        self.unread.clear()
        last = self.history[-1]
        self.bar.set_postfix({k: f"{last[k]:.4g}" for k in term_names(last)}, refresh=False)

    def close(self) -> None:
        self.read()
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def lbfgs_iterations(x: torch.Tensor, loss: PerceptualLoss, settings: OptimizeSettings,
                     ) -> tuple[Callable[[], dict[str, torch.Tensor]], Callable[[], dict[str, torch.Tensor]],
                                DeviceLBFGS]:
    """(first, next, optimizer) of the engine's L-BFGS on the leaf ``x`` 1,3,H,W: ``first()`` evaluates the
    loss and gradient at the start and moves ``x`` to the first trial point, ``next()`` evaluates the trial
    and moves to the next one; both return the terms of the last accepted point (tensors on the device, which
    the next call overwrites). ``optimizer.settle()`` ends a run on that point. Only ``next`` is the same every
    time, so only it is captured in a CUDA graph."""
    optimizer = DeviceLBFGS(x, lr=settings.learning_rate, history_size=settings.history_size,
                            tolerance_grad=LBFGS_TOLERANCE, tolerance_change=LBFGS_TOLERANCE)
    x.grad = torch.zeros_like(x)
    mixed = settings.precision == "bf16-mixed"
    graphed = x.is_cuda and settings.cuda_graph
    layout = torch.channels_last if x.is_cuda else torch.contiguous_format  # cuDNN's fast layout
    loss.vgg.to(memory_format=layout)
    accepted_terms: dict[str, torch.Tensor] = {}

    def evaluate_and_step() -> dict[str, torch.Tensor]:
        x.grad.zero_()
        # autocast's weight cache cannot outlive a CUDA graph capture (torch.cuda.graph's documentation)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=mixed, cache_enabled=not graphed):
            terms = loss(x.contiguous(memory_format=layout))
        terms["total"].backward()
        optimizer.step(terms["total"], full_history=graphed)
        with torch.no_grad():
            for name, value in terms.items():
                if name in accepted_terms:
                    accepted_terms[name].copy_(torch.where(optimizer.accepted, value, accepted_terms[name]))
                else:
                    accepted_terms[name] = value.detach().float().clone()
        return accepted_terms

    return evaluate_and_step, _graphed(evaluate_and_step) if graphed else evaluate_and_step, optimizer


def _graphed(step: Callable[[], dict[str, torch.Tensor]]) -> Callable[[], dict[str, torch.Tensor]]:
    """``step`` replayed from one CUDA graph after ``CUDA_GRAPH_WARMUP`` eager calls on a side stream
    (torch.cuda.graph's documented warm-up); it reads and writes only tensors that outlive the graph."""
    calls = 0
    graph = torch.cuda.CUDAGraph()
    terms: dict[str, torch.Tensor] = {}  # ``step`` returns this same dict of tensors every time

    def replay() -> dict[str, torch.Tensor]:
        nonlocal calls
        calls += 1
        if calls > CUDA_GRAPH_WARMUP:
            graph.replay()
            return terms
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            terms.update(step())
        torch.cuda.current_stream().wait_stream(side)
        if calls == CUDA_GRAPH_WARMUP:  # recorded, not run: the terms keep this call's values
            with torch.cuda.graph(graph):
                step()
        return terms

    return replay


def _run_lbfgs(x: torch.Tensor, loss: PerceptualLoss, steps: int, settings: OptimizeSettings, level: int,
               recorder: _Recorder) -> None:
    """``steps`` iterations of the engine's L-BFGS (``DeviceLBFGS``), each one loss and gradient evaluation;
    each records the terms of the last accepted point, where the run ends."""
    first, next_step, optimizer = lbfgs_iterations(x, loss, settings)
    accepted = optimizer.accepted_point.view_as(x)
    recorder.record(level, accepted, first(), advance=False)
    recorder.evaluations += 1
    for _ in range(steps):
        recorder.record(level, accepted, next_step(), advance=True)
        recorder.evaluations += 1
    optimizer.settle()


def _run_adam(x: torch.Tensor, loss: PerceptualLoss, steps: int, settings: OptimizeSettings, level: int,
              recorder: _Recorder) -> None:
    """Adam (Kingma & Ba 2015) with torch's betas; pixels are projected back to [0,1] after every step."""
    optimizer = torch.optim.Adam([x], lr=settings.learning_rate)
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=False)
        terms = loss(x)
        recorder.evaluations += 1
        recorder.record(level, x, terms, advance=step > 0)
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


