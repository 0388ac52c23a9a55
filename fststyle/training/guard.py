"""The artefact guard: a Lightning callback that watches every validation for blobs and for the training
collapse they follow, says so in one line, and can stop the run at its last healthy checkpoint.

What it watches (on the held-out preview photos, per style for a network of several):
- ``val/blobs`` (fststyle.artefacts): the share of pixels in solid black or white patches the photo lacks;
- ``val/style`` against its best so far: the blobs of the runs in docs/artefacts.md followed a collapse of
  the style loss (3.1x within 250 steps) and began as coloured glows, which no pixel figure catches.

Every validation without an alarm saves ``<run>/checkpoints/healthy.ckpt``; with ``stop`` the first alarm
ends the run and ``fststyle.training.run`` exports the style model from that checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

HEALTHY_CHECKPOINT = "healthy.ckpt"
FIGURES = ("blobs", "hatching")


def artefact_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The artefact figures among a trainer's metrics, without their ``val/`` prefix: ``blobs``, ``hatching``
    and, for a network of several styles, ``<style>/blobs`` and ``<style>/hatching`` (synced over processes)."""
    return {name[len("val/"):]: float(value) for name, value in metrics.items()
            if name.startswith("val/") and name.rsplit("/", 1)[-1] in FIGURES}


@dataclass
class Alarm:
    """What the guard saw at one validation."""

    step: int
    reason: str


class ArtefactGuard(Callback):
    """Watches ``val/blobs`` and ``val/style`` (and ``val/<style>/...``) after every validation.

    Args:
        checkpoints: the run's checkpoint folder (``healthy.ckpt`` goes there).
        blobs: the ``val/blobs`` share that raises the alarm (0.005: 0.5 % of the preview pixels).
        style_rise: the alarm also rises when ``val/style`` exceeds its best so far by this factor.
        stop: end the run at the first alarm (the model is then exported from ``healthy.ckpt``).
    """

    def __init__(self, checkpoints: Path, blobs: float = 0.005, style_rise: float = 1.5, stop: bool = False) -> None:
        if not 0 < blobs <= 1 or not style_rise > 1:
            raise ValueError(f"artefact_guard.blobs must be in (0, 1] and artefact_guard.style_rise above 1, "
                             f"got {blobs} and {style_rise}")
        self.checkpoints = Path(checkpoints)
        self.blobs, self.style_rise, self.stop = blobs, style_rise, stop
        #: the lowest val/style seen so far, per style key ("" for a network of one style)
        self.best_style: dict[str, float] = {}
        self.alarm: Alarm | None = None
        #: the step of healthy.ckpt and the artefact figures of that validation (None: none saved yet)
        self.healthy_step: int | None = None
        self.healthy_figures: dict[str, float] = {}
        #: set when ``stop`` ended the run
        self.stopped = False

    @property
    def healthy_path(self) -> Path:
        return self.checkpoints / HEALTHY_CHECKPOINT

    def load_healthy_weights(self, transformer: torch.nn.Module) -> None:
        """Put the transformer weights of ``healthy.ckpt`` (the last validation without an alarm) into
        ``transformer``."""
        state = torch.load(self.healthy_path, map_location="cpu", weights_only=True)["state_dict"]
        transformer.load_state_dict({k[len("transformer."):]: v for k, v in state.items()
                                     if k.startswith("transformer.")})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step == 0 or trainer.state.fn != TrainerFn.FITTING:
            return  # the untrained network, or a validate() outside fit
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val/")}
        reasons = self._reasons(metrics)
        step = trainer.global_step
        if not reasons:
            self.alarm = None
            trainer.save_checkpoint(self.healthy_path, weights_only=False)  # the full state: a run can resume from it
            self.healthy_step = step
            self.healthy_figures = artefact_figures(trainer.callback_metrics)
            return
        first = self.alarm is None
        self.alarm = Alarm(step, "; ".join(reasons))
        if first or self.stop:
            rank_zero_warn(self.message(), category=UserWarning)
        if self.stop:
            self.stopped = True
            trainer.should_stop = True

    def _reasons(self, metrics: dict[str, float]) -> list[str]:
        """What is wrong in these val/ metrics (empty: healthy); updates the best style losses."""
        keys = sorted({name[len("val/"):-len("/style")] for name in metrics if name.endswith("/style")}) or [""]
        reasons = []
        for key in keys:
            prefix = f"val/{key}/" if key else "val/"
            label = f" ({key})" if key else ""
            blobs, style = metrics.get(prefix + "blobs"), metrics.get(prefix + "style")
            if blobs is not None and blobs > self.blobs:
                reasons.append(f"blobs cover {blobs:.2%} of the preview pixels{label}, over "
                               f"artefact_guard.blobs={self.blobs:g}")
            if style is not None and math.isfinite(style):
                best = self.best_style.get(key, style)
                if style > self.style_rise * best:
                    reasons.append(f"val/style{label} rose {style / best:.1f}x over its best, a training collapse")
                self.best_style[key] = min(best, style)
        return reasons

    def message(self) -> str:
        """The alarm's one line: the step, what was seen, the checkpoint to go back to and the settings to change."""
        assert self.alarm is not None
        back = (f"the last healthy checkpoint is {self.healthy_path} (step {self.healthy_step})"
                if self.healthy_step is not None else "no healthy checkpoint was saved yet")
        action = ("stopping: the style model is exported from it" if self.stop else
                  "set artefact_guard.stop=true to stop there")
        return (f"artefact guard: step {self.alarm.step}: {self.alarm.reason}; {back}; {action}. To train on from "
                f"it: ckpt_path={self.healthy_path} with optimizer.lr halved, or optimizer.adaptive_clip=2 "
                "(docs/training.md, 'Blobs')")


def artefact_metadata(figures: dict[str, float], step: int) -> dict[str, Any] | None:
    """The held-out artefact figures a model records: ``{"step", "blobs", "hatching"}`` and, for a network of
    several styles, ``"styles": {name: {"blobs", "hatching"}}``; None without a validation (no preview photos).
    A hatching figure of photos without flat areas is NaN, recorded as null (JSON has no NaN)."""
    if not figures:
        return None

    def number(value: float) -> float | None:
        return value if value == value else None

    artefacts: dict[str, Any] = {"step": step}
    for name, value in figures.items():
        style, _, figure = name.rpartition("/")
        if style:
            artefacts.setdefault("styles", {}).setdefault(style, {})[figure] = number(value)
        else:
            artefacts[figure] = number(value)
    return artefacts
