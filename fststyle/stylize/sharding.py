"""Splitting a stylize job across the processes that torchrun or SLURM started: disjoint shares by rank.

No process group is needed: every process lists the same inputs in the same order and takes every
``world``-th one from its ``rank`` on, so together they write each output exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

Item = TypeVar("Item")


def process_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK/WORLD_SIZE or SLURM's SLURM_PROCID/SLURM_NTASKS; (0, 1) alone."""
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    return 0, 1


def share(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """This process's share of ``items``: every ``world``-th item from index ``rank``."""
    return list(items[rank::world])
