"""Peak memory of a block of code, on CUDA or (Linux) CPU: one measurement for compare, optimize and bench."""

from __future__ import annotations

import ctypes
import gc
import platform
from pathlib import Path

import torch


class PeakMemory:
    """Peak memory of the code inside ``with``: CUDA allocator peak above the start, or on CPU (Linux)
    the peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set at the start.
    ``bytes`` is None off Linux on CPU. A nested ``PeakMemory`` resets the peak, so the outer one then sees
    only the peak from the inner start on."""

    def __init__(self, device: torch.device | str) -> None:
        self.device, self.bytes = torch.device(device), None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _reset_cpu_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start is not None:
            self.bytes = max(0, _proc_status_bytes("VmHWM") - self._start)


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_cpu_peak() -> int | None:
    """Give freed heap back to the OS (glibc malloc_trim), reset the peak RSS; the RSS now, or None off Linux."""
    try:
        if platform.libc_ver()[0] == "glibc":
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_bytes("VmRSS")
    except (OSError, KeyError):
        return None


__all__ = ["PeakMemory"]
