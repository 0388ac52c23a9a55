"""``python infer.py`` end to end for engine=fast: a file and a folder, via the real CLI and Hydra compose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from fststyle.export import save_style_model
from fststyle.stylize import run
from fststyle.transformer import TransformerNet

REPO = Path(__file__).resolve().parents[1]
PREVIEW = REPO / "data" / "preview"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    network = TransformerNet(width=0.25, residual_blocks=1)
    return save_style_model(network, tmp_path_factory.mktemp("cli") / "tiny.safetensors", {"style": {"name": "tiny"}})


def _infer(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "infer.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="infer", overrides=list(overrides))


def test_cli_stylises_a_file_tiled_with_colour_and_strength(model_path: Path, tmp_path: Path) -> None:
    photo = sorted(PREVIEW.glob("*.jpg"))[0]
    output = tmp_path / "out.png"
    result = _infer(f"model={model_path}", f"input={photo}", f"output={output}", "tile=256", "tile_overlap=64",
                    "preserve_color=true", "strength=0.7")
    assert result.returncode == 0, result.stdout + result.stderr
    with Image.open(output) as written, Image.open(photo) as source:
        assert written.size == source.size


def test_cli_stylises_a_folder_with_summary_and_grid(model_path: Path, tmp_path: Path) -> None:
    result = _infer(f"model={model_path}", f"input={PREVIEW}", f"output={tmp_path / 'out'}",
                    f"grid={tmp_path / 'grid.png'}")
    assert result.returncode == 0, result.stdout + result.stderr
    names = sorted(path.name for path in PREVIEW.glob("*.jpg"))
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == names
    assert f"stylised {len(names)} images in" in result.stdout + result.stderr
    assert (tmp_path / "grid.png").is_file()


def test_run_returns_non_zero_when_a_file_is_broken(model_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    Image.new("RGB", (20, 16), "teal").save(source / "good.png")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = _config(f"model={model_path}", f"input={source}", f"output={tmp_path / 'out'}")
    assert run(cfg) == 1
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "broken.png").exists()


def test_run_exports_and_rejects_missing_settings(model_path: Path, tmp_path: Path) -> None:
    assert run(_config(f"model={model_path}", "export=torchscript", f"output={tmp_path / 'm.pt'}")) == 0
    assert (tmp_path / "m.pt").is_file()
    assert run(_config(f"model={model_path}")) == 2  # no input
    assert run(_config(f"model={tmp_path / 'missing.safetensors'}", f"input={tmp_path}")) == 2
