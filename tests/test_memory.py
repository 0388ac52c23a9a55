"""The one peak-memory measurement shared by compare, optimize and bench."""

from pathlib import Path

import pytest
import torch

from fststyle.memory import PeakMemory


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_peak_memory_sees_a_large_cpu_allocation():
    with PeakMemory(torch.device("cpu")) as small:
        torch.ones(1000).sum()
    with PeakMemory(torch.device("cpu")) as large:
        torch.ones(64 * 2**20).sum()  # 256 MiB of float32
    assert large.bytes >= 200 * 2**20 > small.bytes
