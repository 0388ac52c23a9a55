"""Shared fixtures: the repository and its configs, tiny training settings, small real data and loss settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from fststyle.cli.config import compose as compose_job
from fststyle.training.settings import plain_config

REPO = Path(__file__).resolve().parents[1]


def compose_config(config_name: str, *overrides: str) -> DictConfig:
    """conf/<config_name>.yaml composed with ``overrides``, as the command line composes it."""
    return compose_job(config_name, overrides)


def tiny_train_overrides() -> list[str]:
    """train.yaml overrides for mechanics-only runs: the bundled sample, random VGG weights, 32 px crops,
    a quarter-width network."""
    return ["data=sample", "transformer.width=0.25", "loss.network.weights=random", "data.image_size=32",
            "data.batch_size=2", "data.num_workers=0", "data.preview_size=32", "style_size=32",
            "trainer.log_every_n_steps=1", "trainer.val_check_interval=2", "checkpoint_every_n_steps=2",
            f"style={REPO / 'data/styles/the_scream.jpg'}", f"data.root={REPO / 'data/coco_sample'}",
            f"data.preview={REPO / 'data/preview'}"]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root (conf/, data/, train.py, infer.py)."""
    return REPO


@pytest.fixture(scope="session")
def compose() -> Callable[..., DictConfig]:
    """``compose(config_name, *overrides)``: a config of conf/ composed as the command line does."""
    return compose_config


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """The tiny training overrides (``tiny_train_overrides``)."""
    return tiny_train_overrides()


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., dict[str, Any]]:
    """``tiny_config(run_dir, *overrides)``: train.yaml with the tiny overrides, as plain containers."""
    def build(run_dir: Path, *overrides: str) -> dict[str, Any]:
        return plain_config(compose_config("train", *tiny_train_overrides(), f"run_dir={run_dir}", *overrides))
    return build


@pytest.fixture(scope="session")
def random_vgg_loss() -> Callable[..., dict[str, Any]]:
    """``random_vgg_loss(arch, content_layers, style_layers, **more)``: PerceptualLoss settings on randomly
    initialised VGG weights (tests of mechanics, no download)."""
    def settings(arch: str = "vgg16", content_layers: dict[str, float] | None = None,
                 style_layers: dict[str, float] | None = None, **more: Any) -> dict[str, Any]:
        network = {"arch": arch, "weights": "random", **more.pop("network", {})}
        return {"network": network, "content_layers": content_layers or {"relu1_2": 1.0},
                "style_layers": style_layers or {"relu1_2": 1.0}, **more}
    return settings


@pytest.fixture(scope="session")
def coco_folder() -> Callable[[Path, dict[str, bytes]], Path]:
    """``coco_folder(root, images)``: a COCO-layout folder (annotations/instances_train2017.json + train2017/)
    holding ``images`` (file name -> file bytes)."""
    def build(root: Path, images: dict[str, bytes]) -> Path:
        (root / "train2017").mkdir(parents=True)
        (root / "annotations").mkdir()
        for name, content in images.items():
            (root / "train2017" / name).write_bytes(content)
        entries = [{"id": index + 1, "file_name": name} for index, name in enumerate(images)]
        (root / "annotations" / "instances_train2017.json").write_text(
            json.dumps({"images": entries, "annotations": [], "categories": []}))
        return root
    return build


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (coco128, styles, content); skips the test if it is absent."""
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture(scope="session")
def bundled_data() -> Path:
    """The project's own data/ folder (coco_sample, preview, styles)."""
    return REPO / "data"


@pytest.fixture
def tiny_jpegs(tmp_path: Path) -> list[Path]:
    """Three small real JPEGs of different sizes and aspect ratios (smooth colour gradients)."""
    paths = []
    for index, (width, height) in enumerate([(64, 48), (40, 72), (96, 96)]):
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60 * index)], axis=-1)
        path = tmp_path / "jpegs" / f"photo_{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths
