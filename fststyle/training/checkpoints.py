"""Training checkpoints: atomic writes, ``last.ckpt`` after a signal and at the end, and where ``ckpt_path=``
resumes from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import OnExceptionCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from fststyle.errors import UserError
from fststyle.io.files import atomic_write, resolved_path
from fststyle.training.module import NonFiniteLossError

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
