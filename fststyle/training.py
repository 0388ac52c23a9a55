"""``train(cfg)``: build the data, the module and a Lightning Trainer from a config mapping, fit, export.

Hydra-free: it takes the composed ``train.yaml`` (a DictConfig or a plain mapping). ``fststyle train`` is the
Hydra entry point that composes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from fststyle.callbacks import PreviewGrids
from fststyle.data import StyleDataModule
from fststyle.devices import device_name
from fststyle.errors import UserError
from fststyle.files import atomic_write, resolved_path
from fststyle.finetune import finetune_base, model_style_images, start_from_base
from fststyle.guard import ArtefactGuard, artefact_figures
from fststyle.images import image_files
from fststyle.module import NonFiniteLossError, StyleTransferModule
from fststyle.style_model import StyleModel, training_metadata
from fststyle.train_settings import TrainingSettings, plain_config

LAST_CHECKPOINT = "last.ckpt"
#: what Lightning warns when fit(ckpt_path=None) finds no last checkpoint of InterruptCheckpoint's: a fresh run
NO_LAST_CHECKPOINT_WARNINGS = (r"`\.fit\(ckpt_path=None\)` was called without a model|"
                               r"\.fit\(ckpt_path=\"last\"\) is set, but there is no last checkpoint")


def without_advertisements(record: logging.LogRecord) -> bool:
    """A logging filter that drops Lightning's tip to install its cloud logger (printed at every run's start)."""
    return "try installing [litlogger]" not in record.getMessage()


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


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Lightning's OnExceptionCheckpoint writing ``last.ckpt`` after the step a signal stopped, and at the end.

    Subclassed as ``last.ckpt`` is the resume point, not a crash dump: the base class saves on any exception
    (here not on an error such as a NaN loss: the last good periodic checkpoint stays; nor on a second Ctrl-C,
    which may land mid-step) and deletes its file at teardown. ModelCheckpoint's ``save_last`` misses the end.
    """

    def __init__(self, checkpoints: Path) -> None:
        super().__init__(checkpoints, filename=Path(LAST_CHECKPOINT).stem)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | NonFiniteLossError):
            rank_zero_warn(f"No checkpoint written; resume from the latest one: ckpt_path={Path(self.dirpath).parent}")
            return
        # After a Ctrl-C, DataLoader workers (same process group) may die first, between steps: the weights are
        # intact then. Other processes may be elsewhere, where a synchronised save could hang.
        if isinstance(exception, SIGTERMException) or (pl_module.stop_requested and trainer.world_size == 1):
            super().on_exception(trainer)
            rank_zero_info(f"Saved {self.ckpt_path} at global step {trainer.global_step}; "
                           f"resume with ckpt_path={Path(self.dirpath).parent}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.fast_dev_run:
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep ``last.ckpt`` (the base class removes its file here)."""


class SignalStop(Callback):
    """SIGTERM or a first Ctrl-C stops every process together after the current step, and always ends the run.

    Lightning's own SIGTERM handler runs a broadcast inside the handler, i.e. a collective started at whatever
    point the signal finds one process, which can pair with a different collective of another process and
    deadlock. From ``on_train_start`` this handler replaces it: it only sets ``stop_requested`` on the module,
    which the step's one all-reduce carries to every process, so all of them stop after the same step
    (``InterruptCheckpoint`` then writes ``last.ckpt``). During fit a first Ctrl-C (SIGINT) takes the same
    path; a second one interrupts at once.

    A process blocked in native code (a collective waiting for a rank that never comes, a hung reader) runs no
    Python signal handler at all. So a watchdog thread, woken through ``signal.set_wakeup_fd`` (written by the
    C-level handler whatever the main thread is doing), ends the process with status 143 (130 after Ctrl-C),
    and the ranks it started, if the graceful stop has not ended it ``grace_s`` seconds after the signal.
    """

    #: whether a watchdog of this process is listening (forked children then drop the inherited wakeup fd)
    watching = False

    def __init__(self, grace_s: float | None, checkpoints: Path) -> None:
        self.grace_s = grace_s
        self.checkpoints = checkpoints
        self._pid = os.getpid()
        self._module: StyleTransferModule | None = None
        self._trainer: pl.Trainer | None = None
        self._finished = threading.Event()
        self._wakeup: tuple[socket.socket, socket.socket, int] | None = None
        self.interrupted = False  # by a Ctrl-C: the exit status is 130, not 143
        self._previous_sigint: Any = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pid, self._trainer, self._module = os.getpid(), trainer, pl_module
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            if self.grace_s is not None:
                self._start_watchdog()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker (Ctrl-C reaches the whole process group): keep serving batches
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        rank_zero_info("\nInterrupted: stopping after this step and saving the last checkpoint "
                       "(press Ctrl-C again to stop at once, without it)")
        signal.raise_signal(signal.SIGTERM)

    def on_fit_end(self, *_: Any) -> None:
        """Give Ctrl-C back its previous handler when fit ends or raises (the final preview and export follow)."""
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    on_exception = on_fit_end

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # after Lightning registered its handler
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid or self._module is None:
            return  # a forked DataLoader worker
        if not self._module.stop_requested:
            self._module.stop_requested = True
            rank_zero_info("\nSIGTERM: stopping after this step and saving the last checkpoint")

    def _start_watchdog(self) -> None:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = (reader, writer, previous)
        SignalStop.watching = True
        self._finished.clear()
        threading.Thread(target=self._watch, args=(reader,), name="fststyle-sigterm-watchdog", daemon=True).start()

    def close(self) -> None:
        """Stop watching (train() calls it when it returns or raises, after the final preview and export)."""
        self._finished.set()
        if self._wakeup is not None and threading.current_thread() is threading.main_thread():
            reader, writer, previous = self._wakeup
            signal.set_wakeup_fd(previous)
            writer.close()  # ends the watch thread's recv
            self._wakeup = None
            SignalStop.watching = False

    def _watch(self, reader: socket.socket) -> None:
        """Wait for SIGTERM or SIGINT, then give the graceful stop ``grace_s`` seconds before ending the process."""
        seen: set[int] = set()
        with reader:
            while not seen & {signal.SIGTERM, signal.SIGINT}:
                try:
                    data = reader.recv(64)
                except OSError:
                    return
                if not data:
                    return  # closed: the run ended
                seen.update(data)
        if self._finished.wait(self.grace_s):
            return
        status = 130 if signal.SIGINT in seen else 143
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        if launcher is not None:
            launcher.kill(signal.SIGKILL)  # the ranks this process started (fststyle train trainer=ddp)
        print(f"error: training did not stop within {self.grace_s:g} s of the signal (a process is stuck, e.g. "
              f"waiting for another in a collective); ending with status {status} and no new checkpoint. "
              f"Resume from the latest one in {self.checkpoints}", file=sys.stderr, flush=True)
        os._exit(status)


def _forget_watchdog_in_child() -> None:
    """A forked child (a DataLoader worker) must not wake its parent's watchdog with signals sent to it alone."""
    if SignalStop.watching:
        with contextlib.suppress(ValueError):  # forked from another thread: Python allows it from the main one only
            signal.set_wakeup_fd(-1)


os.register_at_fork(after_in_child=_forget_watchdog_in_child)


class LossProgressBar(TQDMProgressBar):
    """The TQDM bar with the latest step's loss, from the module's host copy (no device sync of its own)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        if getattr(pl_module, "last_loss", None) is not None:
            metrics["loss"] = f"{pl_module.last_loss:.3g}"
        return metrics


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run left its outputs."""

    run_dir: Path
    model_path: Path | None  # None on ranks other than 0
    global_step: int
    skipped_images: int
    module: StyleTransferModule


def resume_checkpoint(ckpt_path: str | os.PathLike) -> Path:
    """The checkpoint ``ckpt_path=`` names: a ``.ckpt`` file, or a run directory or its ``checkpoints/`` folder
    (their ``last.ckpt``)."""
    path = resolved_path(ckpt_path, "checkpoint to resume (ckpt_path)")
    if not path.is_dir():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if (folder / LAST_CHECKPOINT).is_file():
        return folder / LAST_CHECKPOINT
    others = sorted(folder.glob("*.ckpt"))
    fix = (f"pass one of its checkpoints, e.g. ckpt_path={others[-1]}" if others
           else "pass a run directory whose checkpoints/ holds one, or a .ckpt file")
    raise UserError(f"ckpt_path={ckpt_path}: no {LAST_CHECKPOINT} in {folder} (the run saved none); {fix}")


def data_module(data: dict[str, Any]) -> StyleDataModule:
    """The StyleDataModule with its paths resolved; ``preview`` may be a folder or a list of files."""
    data = dict(data)
    # str, not Path: the data module's hyper-parameters go into checkpoints read with weights_only=True
    data["root"] = str(resolved_path(data["root"], "training images (data.root)"))
    preview = data.get("preview") or []
    data["preview"] = [str(p.resolve()) for p in image_files(preview, "preview folder (data.preview)")] if preview else []
    if data.get("cache_dir") is not None:
        data["cache_dir"] = str(resolved_path(data["cache_dir"], "cache_dir", must_exist=False))
    return StyleDataModule(**data)


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
    datamodule = data_module(cfg["data"])
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
            state = torch.load(guard.healthy_path, map_location="cpu", weights_only=True)["state_dict"]
            module.transformer.load_state_dict({k[len("transformer."):]: v for k, v in state.items()
                                                if k.startswith("transformer.")})
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
    metadata = training_metadata(dict(hparams), steps, hardware, _artefact_metadata(figures, steps))
    return StyleModel(module.transformer, metadata, module.model_style_images).save(path)


def _artefact_metadata(figures: dict[str, float], step: int) -> dict[str, Any] | None:
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
