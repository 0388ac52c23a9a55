"""The optimisation engine's settings (checked when built) and its result record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fststyle.errors import UserError
from fststyle.losses import (
    PerceptualLoss,
)
from fststyle.nets.vgg import WeightsUnavailableError

#: Adam's step on [0,1] pixels: neural-style's -learning_rate 1e1 on its 0-255 pixel scale (Johnson 2015,
#: jcjohnson/neural-style), divided by 256. L-BFGS takes neural-style's fixed step of 1 (its optim.lbfgs config
#: has learningRate 1 and no line search): the first step is scaled by 1/|g|_1, the curvature sizes the rest.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0 / 256}
INITS = ("content", "noise", "style")
PRECISIONS = ("32-true", "bf16-mixed")  # Lightning's names, as the trainer configs use them
#: eager L-BFGS iterations on a side stream before the capture of a CUDA graph (torch.cuda.graph's warm-up)
CUDA_GRAPH_WARMUP = 3
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
    precision: str = "32-true"  # 32-true | bf16-mixed (VGG's convolutions in bf16; Gram, losses, L-BFGS in fp32)
    cuda_graph: bool = True  # on CUDA, replay each L-BFGS iteration from one captured graph

    def __post_init__(self) -> None:
        if self.optimizer not in DEFAULT_LR:
            raise UserError(f"optimizer must be one of {sorted(DEFAULT_LR)}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
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


