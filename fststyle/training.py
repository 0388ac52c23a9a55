"""``train(cfg)``: build the data, the module and a Lightning Trainer from a config mapping, fit, export.

Hydra-free: it takes the composed ``train.yaml`` (a DictConfig or a plain mapping). ``train.py`` is the
Hydra entry point that composes it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from fststyle.data import StyleDataModule
from fststyle.export import save_style_model, style_metadata
from fststyle.files import atomic_write
from fststyle.images import list_images
from fststyle.module import StyleTransferModule, style_name

#: trainer-group keys that configure the networks rather than the Lightning Trainer
NETWORK_SWITCHES = ("channels_last", "compile")
LAST_CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes local checkpoints to a temporary file beside the target, then renames it over the target:
    an interrupted save never leaves a truncated ``last.ckpt`` (fsspec's transaction moves a file from
    the temp dir, which is a copy when /tmp is another file system)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if "://" in str(path):  # s3://, gs://: object stores upload whole objects already
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path) as tmp:
            torch.save(checkpoint, tmp)


class CheckpointOnInterrupt(Callback):
    """Stop gracefully on SIGINT/SIGTERM and leave ``last.ckpt``.

    Lightning turns SIGTERM into a stop at the end of the current step (all ranks together). A first
    Ctrl-C (SIGINT) is routed through the same path; a second one interrupts at once. When the stop
    arrives, the current state (weights, optimiser, loop counters) is written to ``last.ckpt``.
    """

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / LAST_CHECKPOINT
        self.interrupted = False
        self._previous_sigint: Any = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        rank_zero_info("\nInterrupted: stopping after this step and saving the last checkpoint "
                       "(press Ctrl-C again to stop at once, without it)")
        signal.raise_signal(signal.SIGTERM)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return  # an error (e.g. a non-finite loss): the last good periodic checkpoint stays
        if isinstance(exception, KeyboardInterrupt) and trainer.world_size > 1:
            # Other processes may be inside a collective; a synchronised save could hang.
            rank_zero_warn(f"Interrupted mid-step: no checkpoint written; resume from {self.path.parent}")
            return
        trainer.save_checkpoint(self.path)
        rank_zero_info(f"Saved {self.path} at global step {trainer.global_step}; resume with ckpt_path={self.path}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run left its outputs."""

    run_dir: Path
    model_path: Path | None  # None on ranks other than 0
    global_step: int
    skipped_images: int


def _plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return dict(cfg)


def _path(value: str | os.PathLike, what: str, must_exist: bool = True) -> Path:
    """An absolute path (relative ones resolve against the working directory the command ran in)."""
    path = Path(value).expanduser().resolve()
    if must_exist and not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (from {value!r}; relative paths resolve against "
                                f"{Path.cwd()}). Fix the path, or run from the directory it is relative to.")
    return path


def _style(cfg: dict[str, Any]) -> dict[str, Any]:
    """The module's ``style`` hyper-parameters from the ``style``, ``style_blend``, ``style_size`` keys."""
    paths = cfg["style"] if isinstance(cfg["style"], list | tuple) else [cfg["style"]]
    if not paths or paths == [None]:
        raise ValueError("no style image: set style=path/to/painting.jpg (e.g. data/styles/starry_night.jpg)")
    paths = [str(_path(p, "style image")) for p in paths]
    return {"name": style_name(paths), "paths": paths, "blend": cfg.get("style_blend"),
            "size": cfg.get("style_size")}


def _data_module(data: dict[str, Any]) -> StyleDataModule:
    """The StyleDataModule with its paths resolved; ``preview`` may be a folder or a list of files."""
    data = dict(data)
    data["root"] = _path(data["root"], "training images (data.root)")
    preview = data.get("preview") or []
    if isinstance(preview, str | os.PathLike):
        folder = _path(preview, "preview folder (data.preview)")
        preview = list_images(folder) if folder.is_dir() else [folder]
    data["preview"] = [_path(p, "preview photo (data.preview)") for p in preview]
    if data.get("cache_dir") is not None:
        data["cache_dir"] = _path(data["cache_dir"], "cache_dir", must_exist=False)
    return StyleDataModule(**data)


def build_module(cfg: Mapping[str, Any] | DictConfig) -> StyleTransferModule:
    """The StyleTransferModule a config describes (style targets computed, on the CPU)."""
    cfg = _plain(cfg)
    switches = {k: bool(cfg["trainer"].get(k, False)) for k in NETWORK_SWITCHES}
    return StyleTransferModule(transformer=cfg["model"], loss=cfg["loss"], style=_style(cfg),
                               image_size=cfg["data"]["image_size"], optimizer=cfg.get("optimizer"), **switches)


def _callbacks(cfg: dict[str, Any], checkpoints: Path) -> list[Callback]:
    from hydra.utils import instantiate  # only to build the user's `callbacks` entries

    every = cfg.get("checkpoint_every_n_steps")
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="step_{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_last=True, save_top_k=1),
        CheckpointOnInterrupt(checkpoints),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(),
    ]
    for name, spec in (cfg.get("callbacks") or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ValueError(f"callbacks.{name} needs a _target_ (the Callback class to build), got {spec!r}")
        callbacks.append(instantiate(spec))
    return callbacks


def train(cfg: Mapping[str, Any] | DictConfig) -> TrainResult:
    """Train one style model as ``cfg`` (the composed ``conf/train.yaml``) says; returns where it went."""
    cfg = _plain(cfg)
    run_dir = _path(cfg["run_dir"], "run directory", must_exist=False)
    pl.seed_everything(cfg.get("seed", 0), workers=True)
    trainer_args = {k: v for k, v in cfg["trainer"].items() if k not in NETWORK_SWITCHES}
    datamodule = _data_module(cfg["data"])
    module = build_module(cfg)
    checkpoints = run_dir / "checkpoints"
    plugins = [AtomicCheckpointIO(), *(trainer_args.pop("plugins", None) or [])]
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        logger=TensorBoardLogger(save_dir=run_dir, name="", version="", default_hp_metric=False),
        callbacks=_callbacks(cfg, checkpoints),
        plugins=plugins,
        **trainer_args,
    )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None:
        ckpt_path = _path(ckpt_path, "checkpoint to resume (ckpt_path)")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        rank_zero_info(f"Stopped by a signal. Resume: python train.py ... ckpt_path={checkpoints / LAST_CHECKPOINT}")
        raise
    model_path = None
    if trainer.is_global_zero:
        model_path = _export(cfg, module, run_dir, trainer.global_step)
        skipped = module.skipped_images_total
        print(f"\nRun directory: {run_dir}\n"
              f"TensorBoard:   tensorboard --logdir {run_dir}\n"
              f"Style model:   {model_path}\n"
              f"Steps: {trainer.global_step}; unreadable training images skipped: {skipped}", flush=True)
    return TrainResult(run_dir, model_path, trainer.global_step, module.skipped_images_total)


def _export(cfg: dict[str, Any], module: StyleTransferModule, run_dir: Path, steps: int) -> Path:
    """Write the transformer as a ``.safetensors`` style model with its metadata (and single style image)."""
    hparams = module.hparams
    path = cfg.get("export_path")
    path = _path(path, "export_path", must_exist=False) if path else run_dir / f"{hparams.style['name']}.safetensors"
    metadata = {k: v for k, v in style_metadata(dict(hparams), steps).items() if k not in ("format", "transformer")}
    # contiguous: safetensors refuses strided views (load_image gives a permuted one)
    style_image = module.style_images[0].contiguous() if len(module.style_images) == 1 else None
    return save_style_model(module.transformer, path, metadata, style_image=style_image)
