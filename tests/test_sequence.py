"""Numbered image sequences (fststyle.stylize.kinds.SequenceKind): ``frames/%05d.png`` in and out, every frame in number
order with its own number, through the library and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.errors import InputNotFoundError, UserError
from fststyle.io.files import OverwriteError
from fststyle.nets.transformer import TransformerNet
from fststyle.stylize.runner import stylize_paths
from fststyle.stylize.stylizer import Stylizer

REPO = Path(__file__).resolve().parents[1]
NUMBERS = [1, 2, 3, 7, 12]


def tiny_stylizer() -> Stylizer:
    torch.manual_seed(0)
    return Stylizer(TransformerNet(width=0.25, residual_blocks=1).eval())


def frames(folder: Path) -> Path:
    """frames/00001.png .. 00012.png (the numbers in NUMBERS, 28x20) beside files that are not its frames."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in NUMBERS:
        Image.new("RGB", (28, 20), (10 * number, 90, 160)).save(folder / f"{number:05d}.png")
    Image.new("RGB", (28, 20)).save(folder / "1.png")  # another numbering
    Image.new("RGB", (28, 20)).save(folder / "00004.jpg")  # another suffix
    (folder / "notes.txt").write_text("shot 12")
    return folder / "%05d.png"


def test_every_frame_is_written_under_its_own_number(tmp_path: Path) -> None:
    pattern = frames(tmp_path / "frames")
    report = stylize_paths([pattern], tmp_path / "out" / "%05d.png", tiny_stylizer(), temporal="none", batch_size=2)
    assert "1 sequence in" in report.summary() and not report.failed
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"{number:05d}.png" for number in NUMBERS]
    for number in NUMBERS:
        with Image.open(tmp_path / "out" / f"{number:05d}.png") as written, \
                Image.open(tmp_path / "frames" / f"{number:05d}.png") as source:
            assert written.size == (28, 20)
            assert np.abs(np.asarray(written, dtype=int) - np.asarray(source, dtype=int)).mean() > 5


def test_without_an_output_the_frames_go_beside_the_inputs_named_after_the_style(tmp_path: Path) -> None:
    pattern = frames(tmp_path / "frames")
    stylize_paths([pattern], None, tiny_stylizer(), temporal="flow")
    assert sorted(path.name for path in (tmp_path / "frames").glob("*_stylised.png")) == [
        f"{number:05d}_stylised.png" for number in NUMBERS]


def test_missing_frames_an_unnumbered_output_and_an_output_onto_the_frames_are_refused(tmp_path: Path) -> None:
    pattern = frames(tmp_path / "frames")

    def never() -> Stylizer:
        pytest.fail("the model was loaded")

    with pytest.raises(InputNotFoundError, match=r"no frames match .*%04d\.png"):
        stylize_paths([tmp_path / "frames" / "%04d.png"], tmp_path / "out" / "%04d.png", never)
    with pytest.raises(UserError, match="a numbered sequence needs a numbered output"):
        stylize_paths([pattern], tmp_path / "out.png", never)
    with pytest.raises(OverwriteError):
        stylize_paths([pattern], tmp_path / "frames" / "%05d.png", never)
    assert not (tmp_path / "out").exists()


def test_the_command_takes_a_sequence_pattern_in_and_out(tmp_path: Path) -> None:
    frames(tmp_path / "frames")
    result = subprocess.run([sys.executable, "-m", "fststyle", "stylize", "frames/%05d.png", "-m", "starry_night",
                             "-o", "styled/%05d.png", "temporal=none"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "styled").iterdir()) == [f"{n:05d}.png" for n in NUMBERS]
