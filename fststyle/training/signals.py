"""Stopping a run on SIGTERM or Ctrl-C: every process after the same step, with a watchdog for a stuck one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from fststyle.training.module import StyleTransferModule


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
