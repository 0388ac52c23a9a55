"""Shared fixtures: the real data in ../shared/data and a few small real JPEGs."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


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
