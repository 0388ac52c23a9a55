"""The stylize pipeline (fststyle.stylize.plan, fststyle.stylize.runner, fststyle.stylize.kinds): each input checked once, the container
of a video opened once to check and once to run, nothing in a folder dropped silently, shares by rank that do
not depend on what is already written, and a run stopped by Ctrl-C or SIGTERM that says how to resume."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import fststyle.io.video
import fststyle.stylize.plan
from fststyle.errors import RunInterrupted
from fststyle.io.files import OUTPUT_MARKER
from fststyle.nets.transformer import TransformerNet
from fststyle.stylize.plan import check_sources, input_kinds, make_plan
from fststyle.stylize.runner import stylize_paths
from fststyle.stylize.stylizer import Stylizer

REPO = Path(__file__).resolve().parents[1]


def tiny_stylizer() -> Stylizer:
    torch.manual_seed(0)
    return Stylizer(TransformerNet(width=0.25, residual_blocks=1).eval())


def photos(folder: Path, count: int) -> list[Path]:
    """``count`` small PNGs of one size in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"{index}.png")
        Image.new("RGB", (24, 20), (40 * index, 90, 120)).save(paths[-1])
    return paths


class InterruptingStylizer:
    """A stand-in Stylizer that returns its input and calls ``interrupt`` at its ``after + 1``-th batch."""

    style_name = "standin"

    def __init__(self, after: int, interrupt: Callable[[], None]) -> None:
        self.after, self.interrupt, self.calls = after, interrupt, 0

    def stylize(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            self.interrupt()
        return images.clone()


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_ctrl_c_says_what_was_written_and_skip_existing_resumes(tmp_path: Path, caplog) -> None:
    photos(tmp_path / "photos", 5)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="fststyle"), pytest.raises(RunInterrupted) as stopped:
        stylize_paths([tmp_path / "photos"], out, lambda: InterruptingStylizer(2, keyboard_interrupt), batch_size=1)
    assert stopped.value.signal_number == signal.SIGINT
    assert "interrupted: wrote 2 of 5 outputs" in caplog.text and "skip_existing=true" in caplog.text
    written = sorted(path.name for path in out.iterdir())
    assert written == [OUTPUT_MARKER, "0.png", "1.png"]  # no temporary file left
    for name in ("0.png", "1.png"):
        with Image.open(out / name) as image:
            image.load()  # whole
    report = stylize_paths([tmp_path / "photos"], out, tiny_stylizer(), skip_existing=True)
    assert sorted(path.name for path in report.written) == ["2.png", "3.png", "4.png"]
    assert sorted(path.name for path in report.skipped) == ["0.png", "1.png"]


SIGTERM_RUN = """
import logging, os, signal, sys
import torch
from fststyle.cli import run_job
from fststyle.stylize.runner import stylize_paths

class Terminated:
    style_name = "standin"
    calls = 0
    def stylize(self, images):
        self.calls += 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return images.clone()

logging.basicConfig(level=logging.INFO, format="%(message)s")
run_job(lambda: stylize_paths([sys.argv[1]], sys.argv[2], lambda: Terminated(), batch_size=1))
"""


def test_sigterm_ends_the_command_with_143_a_resume_hint_and_no_traceback(tmp_path: Path) -> None:
    photos(tmp_path / "photos", 5)
    result = subprocess.run([sys.executable, "-c", SIGTERM_RUN, "photos", "out"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "Traceback" not in result.stderr and "interrupted: wrote 2 of 5 outputs" in result.stderr, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [OUTPUT_MARKER, "0.png", "1.png"]


def test_files_of_no_kind_are_named_and_hidden_temporary_and_output_files_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "album"
    photos(folder, 1)
    (folder / "logo.svg").write_text("<svg/>")
    (folder / "notes.txt").write_text("hello")
    (folder / ".0.png.1a2b3c4d.tmp.png").write_bytes(b"half")  # an atomic write's temporary file
    (folder / ".hidden.png").write_bytes(b"hidden")
    photos(folder / "styled", 1)
    (folder / "styled" / OUTPUT_MARKER).write_text("")
    report = stylize_paths([folder], tmp_path / "out", tiny_stylizer())
    assert [path.name for path in report.written] == ["0.png"]
    assert report.unsupported == [folder / "logo.svg", folder / "notes.txt"]
    assert "2 skipped, not a photo or video: " in report.summary() and "logo.svg" in report.summary()


def test_shares_by_rank_are_disjoint_cover_everything_and_ignore_existing_outputs(tmp_path: Path) -> None:
    named = photos(tmp_path / "named", 3)
    photos(tmp_path / "album", 5)
    kinds = input_kinds()
    sources = check_sources([tmp_path / "album", *named], kinds)

    def shares(skip_existing: bool) -> list[list[str]]:
        plans = [make_plan(sources, tmp_path / "out", kinds, rank=rank, world=2, skip_existing=skip_existing)
                 for rank in range(2)]
        return [sorted(item.target.relative_to(tmp_path / "out").as_posix() for item in [*plan.items, *plan.skipped])
                for plan in plans]

    before = shares(False)
    assert sorted(before[0] + before[1]) == ["0.png", "1.png", "2.png", *(f"album/{i}.png" for i in range(5))]
    assert not set(before[0]) & set(before[1])
    (tmp_path / "out" / "album").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / "album" / "1.png")  # rank 1 wrote one already
    assert shares(True) == before


def tiny_clip(path: Path, frames: int = 4) -> Path:
    """A 32x24 H.264 clip of ``frames`` flat frames."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(frames):
            pixels = np.full((24, 32, 3), 30 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def counting(monkeypatch, counts: Counter, owner: Any, name: str) -> None:
    """Count the calls of ``owner.name`` in ``counts[name]``."""
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_a_video_run_opens_its_container_twice_and_runs_each_check_once(tmp_path: Path, monkeypatch) -> None:
    """Once to check it before the model loads, once to stylise it (four times, and each check twice or
    three times, before the plan)."""
    av = pytest.importorskip("av")
    source = tiny_clip(tmp_path / "clip.mp4")
    counts: Counter = Counter()
    opened = []
    open_container = av.open
    monkeypatch.setattr(av, "open", lambda path, *args, **kwargs: opened.append(path) or open_container(path, *args,
                                                                                                         **kwargs))
    for name in ("check_video_codec", "check_video_input", "check_video_output", "check_video_suffix"):
        counting(monkeypatch, counts, fststyle.io.video, name)
    for name in ("check_writable", "refuse_overwriting_inputs"):
        counting(monkeypatch, counts, fststyle.stylize.plan, name)
    for name in ("check_video_quality", "check_temporal_mode", "check_jpeg_quality"):
        counting(monkeypatch, counts, fststyle.stylize.plan, name)
    report = stylize_paths([source], tmp_path / "out.mp4", tiny_stylizer(), temporal="none")
    assert report.written == [tmp_path / "out.mp4"]
    assert opened.count(str(source)) == 2
    assert counts == dict.fromkeys(counts, 1) and len(counts) == 9, counts
