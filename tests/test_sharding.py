"""``fststyle stylize`` under torchrun: the processes split the inputs and write every output exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from fststyle.bundled import bundled_path
from fststyle.stylize.sharding import process_rank, share


def test_shares_are_disjoint_and_cover_every_item() -> None:
    items = list(range(7))
    shares = [share(items, rank, 3) for rank in range(3)]
    assert sorted(sum(shares, [])) == items and shares[0] == [0, 3, 6]


def test_rank_comes_from_torchrun_or_slurm(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert process_rank() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert process_rank() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_rank() == (1, 2)


def test_two_processes_write_every_output_exactly_once(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(5):
        Image.new("RGB", (40 + index, 30), (40 * index, 90, 120)).save(photos / f"p{index}.png")
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (36, 28), "olive").save(tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(bundled_path("conf").parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "fststyle",
                           "stylize", "photos", "a.png", "b.png", "c.png", "-m", "starry_night", "-o", "out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    shares = [tuple(map(int, found)) for found in re.findall(r"process \d of 2: (\d+) files, (\d+) folder images", output)]
    assert len(shares) == 2 and all(files and images for files, images in shares)  # both processes worked
    assert [sum(column) for column in zip(*shares, strict=True)] == [3, 5]  # disjoint shares that add up
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a.png", "b.png", "c.png", *(f"photos/p{index}.png" for index in range(5))]
