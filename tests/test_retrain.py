"""checkpoints/retrain.py, the GPU retrain as one command, dry-run on the CPU with a handful of steps."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from fststyle.style_model import StyleModel

TINY = ["transformer.width=0.25", "loss.network.weights=random", "data.image_size=32", "data.preview_size=32",
        "style_size=32", "trainer.log_every_n_steps=1"]


def test_retrain_dry_run_writes_models_scalars_and_previews(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(repo / "checkpoints" / "retrain.py"), "--out", str(out),
                             "--work", str(tmp_path / "work"), "--device", "cpu", "--steps", "3",
                             "--data", str(repo / "data" / "coco_sample" / "train2017"), "--", *TINY],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "retrain.log", "starry_night.safetensors", "starry_night_preview.png", "starry_night_scalars.csv",
        "the_scream.safetensors", "the_scream_preview.png", "the_scream_scalars.csv"]
    images = {p.name for p in (tmp_path / "work" / "images").iterdir()}
    assert images and not images & {p.name for p in (repo / "data" / "preview").iterdir()}  # held out
    for style in ("starry_night", "the_scream"):
        model = StyleModel.load(out / f"{style}.safetensors")
        assert model.metadata["steps"] == 3 and model.network.config.width == 0.25
        assert "blobs" in model.metadata["artefacts"]
        with open(out / f"{style}_scalars.csv") as handle:
            tags = {row["tag"] for row in csv.DictReader(handle)}
        assert {"train/total", "val/style", "val/blobs", "val/hatching"} <= tags
    assert "trainer=gpu" not in (out / "retrain.log").read_text()  # the dry run stayed on the CPU
