"""Lightning callbacks for training style networks: the progress bar's loss, the preview grids, and how far the fast network is from the
optimisation target."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from fststyle.bundled import bundled_path
from fststyle.errors import UserError
from fststyle.io.convert import pil_to_tensor
from fststyle.io.decode import load_image
from fststyle.io.encode import save_image
from fststyle.io.grids import labelled_grid
from fststyle.io.listing import image_files
from fststyle.losses import term_names
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.settings import settings_from_config

log = logging.getLogger(__name__)

#: the held-out photos the training previews show (data/preview)
PREVIEW_PHOTOS = bundled_path("data/preview")


class LossProgressBar(TQDMProgressBar):
    """The TQDM bar with the latest step's loss, from the module's host copy (no device sync of its own)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        if getattr(pl_module, "last_loss", None) is not None:
            metrics["loss"] = f"{pl_module.last_loss:.3g}"
        return metrics


class PreviewGrids(pl.Callback):
    """After every validation, a content | stylised grid of the preview photos (one stylised column per trained
    style): logged as the TensorBoard image ``preview`` and written to ``<run>/previews/step_000123.png`` by rank 0,
    from the stylised photos N,K,3,H,W that ``StyleTransferModule.validation_step`` returns."""

    def __init__(self) -> None:
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: the global step of the latest preview grid (None: none yet)
        self.last_step: int | None = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: torch.Tensor,
                                batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep the batch's contents N,3,H,W and stylised photos N,K,3,H,W for the grid."""
        self._batches.append((batch.detach(), outputs))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gather the previews of all processes; rank 0 logs and writes the grid."""
        if not self._batches:
            return
        contents = torch.cat([content for content, _ in self._batches])
        stylised = torch.cat([output for _, output in self._batches])  # N,K,3,H,W
        self._batches.clear()
        step = self.last_step = trainer.global_step
        if trainer.world_size > 1:
            contents = pl_module.all_gather(contents).flatten(0, 1)
            stylised = pl_module.all_gather(stylised).flatten(0, 1)
        if not trainer.is_global_zero:
            return
        labels = ([f"stylised, step {step}"] if not len(pl_module.style_terms)
                  else [f"{name}, step {step}" for name in pl_module.trained_style_names])
        grid = labelled_grid([[c, *s] for c, s in zip(contents, stylised, strict=True)],
                             col_labels=["content", *labels], cell_height=contents.shape[-2])
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("preview", pil_to_tensor(grid), step)
        save_image(grid, self.path(trainer, step))

    @staticmethod
    def path(trainer: pl.Trainer, step: int) -> Path:
        """Where the preview grid of ``step`` is written: ``<run>/previews/step_000123.png``."""
        return Path(trainer.default_root_dir) / "previews" / f"step_{step:06d}.png"


class GatysGapCallback(pl.Callback):
    """Every ``every_n_steps`` training steps, log the gap between the fast network and a Gatys reference.

    At the start of training each preview photo 1,3,H,W is optimised once (Gatys et al. 2015) with the
    module's own ``loss`` (same network, layers, weights, style targets): the best image that loss can
    reach from that photo under ``settings``. Then, every ``every_n_steps`` steps, the network stylises the
    same photos and the callback logs, averaged over the photos, for every loss term:
    ``gatys_gap/<term>`` = fast minus reference, and for the whole terms (``losses.term_names``)
    ``gatys_ratio/<term>`` = fast / reference (1 = as good as the optimisation). ``gatys_reference/<term>`` is logged once at the start.
    It compares one style: a fine-tune that adds one style is measured on that style; a run that trains
    several styles in one network is refused before it starts.
    """

    def __init__(self, photos: str | Path | Sequence[str | Path] = PREVIEW_PHOTOS, every_n_steps: int = 500,
                 image_size: int = 256, settings: Mapping[str, Any] | None = None, progress: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.photos = photos
        self.photo_paths = image_files(photos, "GatysGapCallback photos")
        self.every_n_steps = every_n_steps
        self.image_size = image_size
        self.settings = settings_from_config(dict(settings or {}))
        self.progress = progress
        self._contents: list[torch.Tensor] = []
        self._reference: dict[str, float] = {}
        #: the trained style of a network of several (a fine-tune adding one): its style weights 1,S and targeted
        #: style terms (``StyleTransferModule.style_terms``); None for a one-style network
        self._style_weights: torch.Tensor | None = None
        self._style_terms: torch.nn.ModuleDict | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse, before any training, a run that trains several styles: the gap is one style's."""
        trained = len(getattr(pl_module, "style_terms", ()))
        if trained > 1:
            raise UserError(f"GatysGapCallback compares one style; this run trains {trained} "
                            f"({', '.join(pl_module.trained_style_names)}) in one network: remove the callback, "
                            "or train (or fine-tune, finetune_from=) one style per run")

    @torch.enable_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Optimise the cached Gatys reference of every preview photo with the module's loss (rank 0 only)."""
        if not trainer.is_global_zero:
            return
        self._contents = [load_image(p, self.image_size).to(pl_module.device) for p in self.photo_paths]
        styles, blend = pl_module.style_images, (pl_module.hparams.get("style") or {}).get("blend")
        if len(getattr(pl_module, "style_terms", ())) == 1:  # the one new style of a fine-tune
            self._style_weights, self._style_terms = pl_module.style_weights([0]), pl_module.style_terms[0]
        # optimise against the training targets: the style image at its training size, not rescaled
        settings = dataclasses.replace(self.settings, image_size=self.image_size,
                                       style_scale=max(styles[0].shape[-2:]) / self.image_size)
        start = time.perf_counter()
        references = []
        for content in self._contents:  # optimize_image leaves the module's loss and its targets as they are
            result = optimize_image(content, styles, pl_module.loss, settings, style_blend=blend,
                                             progress=self.progress)
            with torch.no_grad():
                references.append(pl_module.loss(result.image.to(pl_module.device), content, style=self._style_terms))
        self._reference = _mean_terms(references)
        log.info("GatysGapCallback: reference for %d preview photos in %.1f s", len(self._contents),
                 time.perf_counter() - start)
        _log(trainer, {f"gatys_reference/{k}": v for k, v in self._reference.items()}, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """At every ``every_n_steps``-th optimiser step, log the fast-minus-reference gap and ratio."""
        step = trainer.global_step
        if not trainer.is_global_zero or not self._reference or step % self.every_n_steps:
            return
        _log(trainer, self.gap(pl_module), step)

    @torch.no_grad()
    def gap(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """``gatys_gap/<term>`` and ``gatys_ratio/<term>`` of the network now, averaged over the photos."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            fast = _mean_terms([pl_module.loss(pl_module(content, self._style_weights), content,
                                               style=self._style_terms) for content in self._contents])
        finally:
            pl_module.train(was_training)
        metrics = {f"gatys_gap/{term}": value - self._reference[term] for term, value in fast.items()}
        metrics.update({f"gatys_ratio/{term}": fast[term] / self._reference[term]
                        for term in term_names(fast) if self._reference.get(term)})
        return metrics


def _mean_terms(terms: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """The mean over photos of each named loss term, as floats."""
    return {name: sum(float(t[name]) for t in terms) / len(terms) for name in terms[0]}


def _log(trainer: pl.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Write scalars to every logger of the trainer at ``step`` (not throttled by log_every_n_steps)."""
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)
