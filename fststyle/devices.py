"""Which device a job runs on, and its name for reports and model metadata."""

from __future__ import annotations

import os
import platform

import torch

from fststyle.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present (under torchrun or SLURM, the GPU of this process's local rank), else
    CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"device={device} is not a device ({error}); use device=auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device} asked for, but PyTorch sees no CUDA GPU; use device=cpu or device=auto")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device={device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s); "
                        f"use device=cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def device_name(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (x86_64, 2 threads)``: what a figure was measured on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
