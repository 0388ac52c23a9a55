"""``train(cfg)`` wires a run and does nothing more: it builds the data, the module (network, loss and style
targets), the callbacks and a Lightning Trainer from a config mapping, fits, and exports the style model.

The parts live elsewhere: settings in ``train_settings``, the module in ``module``, fine-tuning in ``finetune``,
checkpoints in ``checkpoints``, signal handling in ``signals``, previews and the progress bar in ``callbacks``,
the artefact guard in ``guard``. Hydra-free: it takes the composed ``train.yaml`` (a DictConfig or a plain mapping). ``fststyle train`` is the
Hydra entry point that composes it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from fststyle.devices import device_name
from fststyle.errors import UserError
from fststyle.io.files import resolved_path
from fststyle.style_model import StyleModel, training_metadata
from fststyle.training.callbacks import LossProgressBar, PreviewGrids
from fststyle.training.checkpoints import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    InterruptCheckpoint,
    resume_checkpoint,
)
from fststyle.training.data import StyleDataModule
from fststyle.training.finetune import finetune_base, model_style_images, start_from_base
from fststyle.training.guard import ArtefactGuard, artefact_figures, artefact_metadata
from fststyle.training.module import StyleTransferModule
from fststyle.training.settings import TrainingSettings, plain_config
from fststyle.training.signals import SignalStop

#: what Lightning warns when fit(ckpt_path=None) finds no last checkpoint of InterruptCheckpoint's: a fresh run
NO_LAST_CHECKPOINT_WARNINGS = (r"`\.fit\(ckpt_path=None\)` was called without a model|"
                               r"\.fit\(ckpt_path=\"last\"\) is set, but there is no last checkpoint")


def without_advertisements(record: logging.LogRecord) -> bool:
    """A logging filter that drops Lightning's tip to install its cloud logger (printed at every run's start)."""
    return "try installing [litlogger]" not in record.getMessage()


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run left its outputs."""

    run_dir: Path
    model_path: Path | None  # None on ranks other than 0
    global_step: int
    skipped_images: int
    module: StyleTransferModule


def build_module(cfg: Mapping[str, Any] | DictConfig) -> StyleTransferModule:
    """The StyleTransferModule a config describes (style targets computed, on the CPU); a fine-tune starts from
    its base model's weights."""
    cfg = plain_config(cfg)
    if not cfg.get("finetune_from"):
        return StyleTransferModule.from_settings(TrainingSettings.from_config(cfg))
    base, finetune = finetune_base(cfg["finetune_from"])
    module = StyleTransferModule.from_settings(
        TrainingSettings.from_config(cfg, finetune, transformer=base.network.config.to_dict()))
    start_from_base(module.transformer, base)
    module.model_style_images = model_style_images(base, module.style_images)
    return module


def _callbacks(cfg: dict[str, Any], checkpoints: Path) -> list[Callback]:
    from hydra.utils import instantiate  # only to build the user's `callbacks` entries

    every = cfg.get("checkpoint_every_n_steps")
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=str(checkpoints), filename="step_{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_last=True, save_top_k=-1 if cfg.get("checkpoint_keep_all") else 1),
        InterruptCheckpoint(checkpoints),
        SignalStop(cfg.get("sigterm_grace_s"), checkpoints),
        LearningRateMonitor(logging_interval="step"),
        LossProgressBar(),
        PreviewGrids(),
        ArtefactGuard(checkpoints, **(cfg.get("artefact_guard") or {})),
    ]
    for name, spec in (cfg.get("callbacks") or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise UserError(f"callbacks.{name} needs a _target_ (the Callback class to build), got {spec!r}; "
                            f"e.g. +callbacks.{name}._target_=package.module.Class")
        callbacks.append(instantiate(spec))
    return callbacks


def train(cfg: Mapping[str, Any] | DictConfig) -> TrainResult:
    """Train one style model as ``cfg`` (the composed ``conf/train.yaml``) says; returns where it went."""
    cfg = plain_config(cfg)
    # The frozen VGG is in eval mode on purpose (VGGFeatures.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="pytorch_lightning")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(without_advertisements)
    run_dir = resolved_path(cfg["run_dir"], "run directory", must_exist=False)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None:  # checked before the networks and data are built
        ckpt_path = resume_checkpoint(ckpt_path)
    pl.seed_everything(cfg.get("seed", 0), workers=True)
    trainer_args = dict(cfg["trainer"])
    datamodule = StyleDataModule.from_config(cfg["data"])
    module = build_module(cfg)
    checkpoints = run_dir / "checkpoints"
    if ckpt_path is None and (checkpoints / LAST_CHECKPOINT).is_file():
        # Lightning resumes a run directory's last.ckpt by itself (InterruptCheckpoint is an OnExceptionCheckpoint):
        # a requeued job with a fixed run directory goes on; say so rather than do it silently
        ckpt_path = checkpoints / LAST_CHECKPOINT
        rank_zero_info(f"Resuming from {ckpt_path}: the run directory's last checkpoint (another run_dir starts afresh)")
    elif ckpt_path is None:  # the same lookup finds nothing and warns twice about it: noise we cause
        warnings.filterwarnings("ignore", message=NO_LAST_CHECKPOINT_WARNINGS)
    plugins = [AtomicCheckpointIO(), *(trainer_args.pop("plugins", None) or [])]
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=TensorBoardLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False),
        callbacks=_callbacks(cfg, checkpoints),
        plugins=plugins,
        **trainer_args,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        guard = next(c for c in trainer.callbacks if isinstance(c, ArtefactGuard))
        previews = next(c for c in trainer.callbacks if isinstance(c, PreviewGrids))
        steps = trainer.global_step
        restored = guard.stopped and guard.healthy_step is not None
        if restored:  # export the weights from before the alarm
            guard.load_healthy_weights(module.transformer)
            steps = guard.healthy_step
            rank_zero_info(f"artefact guard: exporting the style model of step {steps} ({guard.healthy_path})")
        elif not trainer.fast_dev_run and previews.last_step not in (None, trainer.global_step):
            trainer.validate(module, datamodule=datamodule, verbose=False)  # the final preview grid
        model_path = None
        if trainer.is_global_zero:
            # the device it trained on: after fit, Lightning's teardown has moved the module back to the CPU
            hardware = device_name(trainer.strategy.root_device)
            hardware += f" x {trainer.world_size}" if trainer.world_size > 1 else ""
            figures = guard.healthy_figures if restored else artefact_figures(trainer.callback_metrics)
            model_path = _export(cfg, module, run_dir, steps, hardware, figures)
            skipped = module.skipped_images_total
            print(f"\nRun directory: {run_dir}\n"
                  f"TensorBoard:   tensorboard --logdir {run_dir}\n"
                  f"Style model:   {model_path}\n"
                  f"Steps: {trainer.global_step}; unreadable training images skipped: {skipped}", flush=True)
    except SIGTERMException:
        rank_zero_info(f"Stopped by a signal. Resume: the same command with ckpt_path={run_dir}")
        sigint = any(isinstance(c, SignalStop) and c.interrupted for c in trainer.callbacks)
        raise SystemExit(130 if sigint else 143) from None  # the shells' codes for death by SIGINT / SIGTERM
    finally:
        for callback in trainer.callbacks:
            if isinstance(callback, SignalStop):
                callback.close()
    return TrainResult(run_dir, model_path, trainer.global_step, module.skipped_images_total, module)


def _export(cfg: dict[str, Any], module: StyleTransferModule, run_dir: Path, steps: int, hardware: str,
            figures: dict[str, float]) -> Path:
    """Write the transformer as a ``.safetensors`` style model with its metadata (and single style image);
    ``hardware`` is what it trained on (``cuda:0 (NVIDIA H100 80GB HBM3) x 8``), ``figures`` the artefact
    figures of its last validation."""
    hparams = module.hparams
    path = cfg.get("export_path")
    path = resolved_path(path, "export_path", must_exist=False) if path else run_dir / f"{hparams.style['name']}.safetensors"
    metadata = training_metadata(dict(hparams), steps, hardware, artefact_metadata(figures, steps))
    return StyleModel(module.transformer, metadata, module.model_style_images).save(path)
