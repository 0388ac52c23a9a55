"""train.py end to end: Hydra composition, the demo preset, two-process DDP, and signals (real subprocesses)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fststyle.bundled import bundled_path
from fststyle.cli import run_job
from fststyle.style_model import StyleModel
from fststyle.training.run import train

REPO = Path(__file__).resolve().parents[1]  # train.py's folder: the subprocesses run there
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


class StallRank(pl.Callback):
    """On process ``rank``, at global step ``step``: writes its pid to ``marker`` and blocks for good, so the
    other processes wait for it in the step's collectives (what a rank stuck in I/O or a bad collective does)."""

    def __init__(self, rank: int, step: int, marker: str) -> None:
        self.rank, self.step, self.marker = rank, step, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            self.marker.write_text(str(os.getpid()))
            while True:
                time.sleep(1)


def recorder(folder: Path) -> list[str]:
    return ["+callbacks.record._target_=tests.test_train.BatchHashRecorder", f"+callbacks.record.folder={folder}"]


DDP_ON_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
              "networks.channels_last=false", "trainer.benchmark=false"]


def start_train(*overrides: str) -> subprocess.Popen:
    """train.py in its own session (so a test can end it and every rank it started), output in ``stdout``."""
    return subprocess.Popen([sys.executable, "train.py", *overrides], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(process: subprocess.Popen, ready, seconds: float) -> None:
    """Poll ``ready()`` until it is true; fail (showing the output) if the process ends or time runs out."""
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"not ready after {seconds} s:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.2)


def end_session(process: subprocess.Popen) -> None:
    """Kill whatever is left of the process's session (the ranks it started included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_train(*overrides: str, timeout: int = 300, command: tuple[str, ...] = ("train.py",)) -> subprocess.CompletedProcess:
    """``python train.py OVERRIDES`` (or another ``command``, e.g. ``-m fststyle train``) in the repo."""
    return subprocess.run([sys.executable, *command, *overrides], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_fast_dev_run_through_the_hydra_config(tiny_config, tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "trainer.fast_dev_run=true"))
    assert result.global_step == 1
    model = StyleModel.load(result.model_path)
    assert model.network.config.width == 0.25 and model.metadata["image_size"] == 32


def test_demo_preset_runs_end_to_end(tmp_path: Path) -> None:
    """The offline demo (Caffe VGG-19, bundled sample) via train.py, shortened to 3 steps of 64 px crops."""
    done = run_train("experiment=demo", "trainer.max_steps=3", "data.image_size=64", "data.preview_size=64",
                     f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tensorboard --logdir {tmp_path}" in done.stdout
    assert (tmp_path / "starry_night.safetensors").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    info = StyleModel.load(tmp_path / "starry_night.safetensors").metadata
    assert info["steps"] == 3 and info["loss"]["network"]["weights"] == "caffe" and info["hardware"].startswith("cpu")
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["step_000000.png", "step_000003.png"]


def test_two_process_ddp_ranks_see_different_images(tiny, tmp_path: Path) -> None:
    hashes = tmp_path / "hashes"
    done = run_train(*tiny, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.precision=32-true", "networks.channels_last=false", "trainer.benchmark=false",
                     "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}", *recorder(hashes),
                     command=("-m", "fststyle", "train"))  # Lightning re-runs the command line for rank 1
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert len(rank0) == len(rank1) == 3 * 2  # 3 steps of batch 2 on each rank
    assert not set(rank0) & set(rank1)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert (tmp_path / "run" / "the_scream.safetensors").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_a_loadable_last_checkpoint(tiny, tmp_path: Path, signum: int) -> None:
    """SIGTERM to the process (SLURM, kill) or SIGINT to its whole process group (Ctrl-C in a terminal,
    which also reaches the DataLoader worker) mid-run: training stops after the step with last.ckpt."""
    hashes = tmp_path / "hashes"
    process = subprocess.Popen(
        [sys.executable, "train.py", *tiny, "data.num_workers=1", "trainer.max_steps=100000",
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
    # the resume hint names the run directory (ckpt_path= takes it), not the longer path of its last.ckpt
    assert re.search(rf"Resume: the same command with ckpt_path={re.escape(str(tmp_path / 'run'))}$", output, re.M)
    assert process.returncode == 128 + signum


def lines(path: Path) -> int:
    return len(path.read_text().split()) if path.is_file() else 0


def test_ddp_rank_whose_batch_is_all_unreadable_neither_deadlocks_nor_ignores_sigterm(tiny, coco_folder, tmp_path: Path) -> None:
    """Two images, one unreadable, batch 1 on each of 2 processes: every step one rank has an empty batch.
    That rank used to skip the step's collective the other rank entered, and both hung for good; SIGTERM could
    not end them. Now the run keeps stepping, and SIGTERM stops both ranks after the same step with last.ckpt."""
    photo = (bundled_path("data/preview/000000000030.jpg")).read_bytes()
    root = coco_folder(tmp_path / "coco", {"photo.jpg": photo, "broken.jpg": photo[:300]})
    hashes, run = tmp_path / "hashes", tmp_path / "run"
    process = start_train(*tiny, *DDP_ON_CPU, f"data.root={root}", "data.batch_size=1", "trainer.max_steps=100000",
                          "trainer.val_check_interval=100000", "checkpoint_every_n_steps=100000",
                          f"hydra.run.dir={run}", *recorder(hashes))
    try:
        # the photo is read once per step, by whichever rank drew it: 4 photos = 4 steps with an empty batch
        wait_for(process, lambda: lines(hashes / "rank0.txt") + lines(hashes / "rank1.txt") >= 4, 120)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        end_session(process)
    assert process.returncode == 143, output[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] >= 4
    assert "skipping unreadable training image" in output and "broken.jpg" in output


def test_sigterm_ends_a_ddp_run_stuck_in_a_collective(tiny, tmp_path: Path) -> None:
    """Rank 1 blocks for good at step 2, so rank 0 waits for it inside the step's gradient all-reduce, where
    no Python signal handler runs. SIGTERM still ends the run: the watchdog exits 143 after the grace period
    (2 s here) and kills the rank it started."""
    marker, run = tmp_path / "stalled.pid", tmp_path / "run"
    process = start_train(*tiny, *DDP_ON_CPU, "trainer.max_steps=100000", "trainer.val_check_interval=100000",
                          "checkpoint_every_n_steps=100000", "sigterm_grace_s=2", f"hydra.run.dir={run}",
                          "+callbacks.stall._target_=tests.test_train.StallRank", "+callbacks.stall.rank=1",
                          "+callbacks.stall.step=2", f"+callbacks.stall.marker={marker}")
    try:
        wait_for(process, marker.is_file, 240)
        time.sleep(1)  # rank 0 reaches the all-reduce of step 2
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        stalled = int(marker.read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{stalled}") and not zombie(stalled):
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{stalled}") or zombie(stalled), "the stalled rank is still running"
    finally:
        end_session(process)
    assert process.returncode == 143, output[-3000:]
    assert "did not stop within 2 s" in output


def zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but was not reaped yet (its parent, the killed rank 0, is gone)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True


def test_missing_data_root_is_one_line_naming_the_fix() -> None:
    """experiment=johnson2016 needs MS-COCO; without data.root the command says so (no traceback), exit 2."""
    done = run_train("experiment=johnson2016", timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith("error: data.root is not set") and done.stderr.count("\n") == 1, done.stderr
    assert "data/README.md" in done.stderr and "experiment=demo" in done.stderr


@pytest.mark.parametrize("saved, fix", [
    ([], "pass a run directory whose checkpoints/ holds one, or a .ckpt file"),
    (["step_0000002.ckpt", "step_0000004.ckpt"], "pass one of its checkpoints, e.g. ckpt_path={folder}/step_0000004.ckpt"),
], ids=["empty", "periodic-only"])
def test_resume_from_a_run_without_last_checkpoint_is_one_line_naming_the_fix(
        tiny_config, tmp_path: Path, capsys, saved: list[str], fix: str) -> None:
    """ckpt_path=<run directory> whose checkpoints/ holds no last.ckpt: one line naming the folder and the fix."""
    folder = tmp_path / "old_run" / "checkpoints"
    folder.mkdir(parents=True)
    for name in saved:
        (folder / name).write_bytes(b"")
    cfg = tiny_config(tmp_path / "new_run", f"ckpt_path={folder.parent}")
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: ckpt_path={folder.parent}: no last.ckpt in {folder}") and error.count("\n") == 1
    assert fix.format(folder=folder) in error, error


@pytest.mark.parametrize("override, names", [
    ("style=nowhere.jpg", "style image not found"),
    ("data.root=nowhere", "training images (data.root) not found"),
    ("data.preview=nowhere", "preview folder (data.preview) not found"),
    ("ckpt_path=nowhere.ckpt", "checkpoint to resume (ckpt_path) not found"),
    ("data.kind=lmdb", "data.kind must be coco"),
    ("data.max_images=0", "lists no images"),
])
def test_training_user_errors_are_one_line_with_the_fix(tiny_config, tmp_path: Path, capsys, override: str, names: str) -> None:
    """What train.py does with them (fststyle.cli.run_job): one line on stderr naming the setting, exit 2."""
    cfg = tiny_config(tmp_path, override)
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and names in error and error.count("\n") == 1, error
