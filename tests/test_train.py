"""train.py end to end: Hydra composition, the demo preset, two-process DDP, and signals (real subprocesses)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fststyle.export import load_style_model
from fststyle.training import train  # noqa: I001  (after the shared test settings)
from tests.test_module import REPO, TINY, tiny_config

ENV = {**os.environ, "PYTHONPATH": str(REPO), "FSTSTYLE_OFFLINE": "1"}


class BatchHashRecorder(pl.Callback):
    """Appends the SHA-1 of every training batch to ``<folder>/rank<global rank>.txt`` (flushed per batch)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, _ = batch
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as handle:
            for image in images:
                handle.write(hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() + "\n")


def recorder(folder: Path) -> list[str]:
    return ["+callbacks.record._target_=tests.test_train.BatchHashRecorder", f"+callbacks.record.folder={folder}"]


def run_train(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_fast_dev_run_through_the_hydra_config(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "trainer.fast_dev_run=true"))
    assert result.global_step == 1
    net, info = load_style_model(result.model_path)
    assert info["transformer"]["width"] == 0.25 and info["image_size"] == 32


def test_demo_preset_runs_end_to_end(tmp_path: Path) -> None:
    """The offline demo (Caffe VGG-19, bundled sample) via train.py, shortened to 3 steps of 64 px crops."""
    done = run_train("experiment=demo", "trainer.max_steps=3", "data.image_size=64", "data.preview_size=64",
                     f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tensorboard --logdir {tmp_path}" in done.stdout
    assert (tmp_path / "starry_night.safetensors").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    _, info = load_style_model(tmp_path / "starry_night.safetensors")
    assert info["steps"] == 3 and info["loss"]["network"]["weights"] == "caffe"
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["step_000000.png", "step_000003.png"]


def test_two_process_ddp_ranks_see_different_images(tmp_path: Path) -> None:
    hashes = tmp_path / "hashes"
    done = run_train(*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.precision=32-true", "trainer.channels_last=false", "trainer.benchmark=false",
                     "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}", *recorder(hashes))
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert len(rank0) == len(rank1) == 3 * 2  # 3 steps of batch 2 on each rank
    assert not set(rank0) & set(rank1)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert (tmp_path / "run" / "the_scream.safetensors").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_a_loadable_last_checkpoint(tmp_path: Path, signum: int) -> None:
    """SIGTERM to the process (SLURM, kill) or SIGINT to its whole process group (Ctrl-C in a terminal,
    which also reaches the DataLoader worker) mid-run: training stops after the step with last.ckpt."""
    hashes = tmp_path / "hashes"
    process = subprocess.Popen(
        [sys.executable, "train.py", *TINY, "data.num_workers=1", "trainer.max_steps=100000",
         "checkpoint_every_n_steps=100000", "trainer.val_check_interval=100000", f"hydra.run.dir={tmp_path / 'run'}",
         *recorder(hashes)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (hashes / "rank0.txt").is_file() or len((hashes / "rank0.txt").read_text().split()) < 4:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
            time.sleep(0.2)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file(), output[-3000:]
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] >= 2
    assert not list(last.parent.glob(".*.tmp*")), "a temporary checkpoint file was left behind"
    assert f"ckpt_path={last}" in output
    assert process.returncode == 128 + signum
