"""``python infer.py`` end to end: files and folders via the real CLI and Hydra compose; user errors are one line, exit 2."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fststyle.bundled import bundled_path
from fststyle.cli import jobs
from fststyle.errors import UserError
from fststyle.io.files import OUTPUT_MARKER, OverwriteError
from fststyle.io.listing import list_images
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import ModelFileError, StyleModel

REPO = Path(__file__).resolve().parents[1]
PREVIEW = bundled_path("data/preview")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    network = TransformerNet(width=0.25, residual_blocks=1)
    return StyleModel(network, {"style": {"name": "tiny"}}).save(tmp_path_factory.mktemp("cli") / "tiny.safetensors")


def _infer(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "infer.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


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
    # the output folder holds the images and fststyle's output-folder marker, nothing else (no temporary files)
    assert sorted(path.name for path in (tmp_path / "out").iterdir() if path.name != OUTPUT_MARKER) == names
    assert (tmp_path / "out" / OUTPUT_MARKER).is_file()
    assert f"stylised {len(names)} images in" in result.stdout + result.stderr
    assert (tmp_path / "grid.png").is_file()


def test_run_returns_non_zero_when_a_file_is_broken(compose, model_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    Image.new("RGB", (20, 16), "teal").save(source / "good.png")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = compose("stylize", f"model={model_path}", f"input={source}", f"output={tmp_path / 'out'}")
    assert jobs.stylize(cfg) == 1
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "broken.png").exists()


def test_run_exports_and_rejects_missing_settings(compose, model_path: Path, tmp_path: Path) -> None:
    assert jobs.export(compose("export", f"model={model_path}", "format=torchscript", f"output={tmp_path / 'm.pt'}")) == 0
    assert (tmp_path / "m.pt").is_file()
    # user errors are raised as UserError, which infer.py (fststyle.cli.run_job) turns into one line and exit 2
    with pytest.raises(UserError, match="nothing to stylise"):  # no input
        jobs.stylize(compose("stylize", f"model={model_path}"))
    with pytest.raises(ModelFileError, match="style model not found"):
        jobs.stylize(compose("stylize", f"model={tmp_path / 'missing.safetensors'}", f"input={tmp_path}"))


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (symlinks as their target name) -> its bytes."""
    return {str(path.relative_to(root)): (str(path.readlink()).encode() if path.is_symlink() else path.read_bytes())
            for path in sorted(root.rglob("*")) if path.is_symlink() or path.is_file()}


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, followed by a few bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def _hostile_models(folder: Path, model_path: Path) -> None:
    """giant.safetensors (metadata asks for 100,000 residual blocks over tiny tensors), cut.safetensors
    (truncated), evil.ckpt (a pickle that runs code), photo.jpg (a JPEG to pass as model=), a_folder/."""
    with safe_open(str(model_path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = json.loads(handle.metadata()["fststyle"])
    metadata["transformer"]["residual_blocks"] = 100_000
    save_file(tensors, str(folder / "giant.safetensors"), metadata={"fststyle": json.dumps(metadata)})
    (folder / "cut.safetensors").write_bytes(model_path.read_bytes()[:5000])
    (folder / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": _RunsCode(folder / "pwned")}))
    Image.new("RGB", (32, 24), "olive").save(folder / "photo.jpg")
    (folder / "a_folder").mkdir()


@pytest.fixture
def workspace(tmp_path: Path, model_path: Path) -> Path:
    """photos/{a,b}.png, style.png, a symlink and a hard link to photos/a.png, a hard link of the model as .onnx,
    a broken photo, an empty one, a decompression bomb, hostile model files (``_hostile_models``)."""
    (tmp_path / "photos").mkdir()
    for name, colour in (("a.png", "teal"), ("b.png", "orange")):
        Image.new("RGB", (20, 16), colour).save(tmp_path / "photos" / name)
    Image.new("RGB", (12, 12), "navy").save(tmp_path / "style.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "photos" / "a.png")
    os.link(tmp_path / "photos" / "a.png", tmp_path / "hard.png")
    (tmp_path / "model.safetensors").write_bytes(model_path.read_bytes())
    os.link(tmp_path / "model.safetensors", tmp_path / "model.onnx")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "empty.jpg").touch()
    (tmp_path / "bomb.png").write_bytes(_png_declaring(40_000, 40_000))
    _hostile_models(tmp_path, model_path)
    return tmp_path


REFUSALS = {
    "fast file onto itself via a symlink": (["input={w}/photos/a.png", "output={w}/link.png"], "is the input"),
    "fast folder onto itself": (["input={w}/photos", "output={w}/photos/"], "is the input folder"),
    "gatys output is a hard link of the content": (
        ["engine=gatys", "content={w}/photos/a.png", "style={w}/style.png", "output={w}/hard.png"], "is the input"),
    "gatys without content": (["engine=gatys", "style={w}/style.png", "output={w}/out.png"], "optimize needs input"),
    "compare into its input folder": (["--config-name", "compare", "input={w}/photos", "output={w}/photos",
                                       "engines=[fast]"], "is the input folder"),
    "export onto its model": (["export=onnx", "output={w}/model.onnx"], "is the input"),
    "a single unreadable photo": (["input={w}/broken.png", "output={w}/out.png"], "cannot read image"),
    "an empty photo": (["input={w}/empty.jpg", "output={w}/out.png"], "empty.jpg"),
    "a 40000x40000 PNG header (decompression bomb)": (["input={w}/bomb.png", "output={w}/out.png"], "max_pixels"),
    "a missing photo": (["input={w}/nowhere.jpg", "output={w}/out.png"], "nowhere.jpg"),
    "an unknown output suffix": (["input={w}/photos/a.png", "output={w}/out.xyz"], "unknown image suffix"),
    "a tile below the receptive field": (["input={w}/photos/a.png", "output={w}/out.png", "tile=64"], "tile >="),
    "a JPEG as the model": (["model={w}/photo.jpg", "input={w}/photos/a.png", "output={w}/out.png"],
                            "this is an image, not a style model"),
    "a model asking for 100,000 residual blocks": (["model={w}/giant.safetensors", "input={w}/photos/a.png",
                                                    "output={w}/out.png"], "residual_blocks"),
    "a truncated model": (["model={w}/cut.safetensors", "input={w}/photos/a.png", "output={w}/out.png"],
                          "cut.safetensors"),
    "a checkpoint that carries code": (["model={w}/evil.ckpt", "input={w}/photos/a.png", "output={w}/out.png"],
                                       "never run"),
    "a folder as the model": (["model={w}/a_folder", "input={w}/photos/a.png", "output={w}/out.png"], "a_folder"),
    "a mistyped setting": (["modle={w}/model.safetensors", "input={w}/photos/a.png"], "did you mean model?"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_cli_user_errors_are_one_line_exit_2_and_leave_the_inputs_untouched(workspace: Path, case: str) -> None:
    overrides, message = REFUSALS[case]
    arguments = [item.format(w=workspace) for item in overrides]
    if not any(item.startswith(("engine=gatys", "model=", "modle=")) for item in arguments):
        arguments.insert(2 if arguments[0] == "--config-name" else 0, f"model={workspace / 'model.safetensors'}")
    before = _snapshot(workspace)
    result = _infer(*arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _snapshot(workspace) == before  # every input byte-identical, nothing written


def test_settings_are_checked_before_the_model_or_the_vgg_is_loaded(compose, workspace: Path) -> None:
    """A wrong output suffix is reported even though the model (or the VGG weights) could not be loaded at all."""
    with pytest.raises(UserError, match="unknown image suffix '.gif'"):
        jobs.stylize(compose("stylize", f"model={workspace / 'broken.png'}", f"input={workspace / 'photos' / 'a.png'}",
                    f"output={workspace / 'out.gif'}"))
    gatys = ["engine=gatys", f"input={workspace / 'photos' / 'a.png'}", f"style={workspace / 'style.png'}",
             f"engine.loss.network.weights={workspace / 'missing_vgg.pth'}"]
    for output, message in ((workspace / "out.gif", "unknown image suffix '.gif'"),
                            (workspace / "style.png" / "out.png", "is a file, not a folder")):
        with pytest.raises(UserError, match=message):
            jobs.optimize(compose("optimize", *gatys, f"output={output}"))
    with pytest.raises(UserError, match="engine.init="):
        jobs.optimize(compose("optimize", "engine=gatys", f"input={workspace / 'photos' / 'a.png'}",
                             f"style={workspace / 'style.png'}", f"output={workspace / 'out.png'}",
                             f"engine.init={workspace / 'missing.png'}"))
    with pytest.raises(UserError, match="format=onnx writes a .onnx file"):
        jobs.export(compose("export", f"model={workspace / 'model.safetensors'}", "format=onnx", f"output={workspace / 'm.png'}"))
    with pytest.raises(UserError, match="precision must be"):
        jobs.stylize(compose("stylize", f"model={workspace / 'model.safetensors'}", f"input={workspace / 'photos' / 'a.png'}",
                    "precision=fp8"))
    with pytest.raises(UserError, match="jpeg_quality"):
        jobs.stylize(compose("stylize", f"model={workspace / 'model.safetensors'}", f"input={workspace / 'photos' / 'a.png'}",
                    "jpeg_quality=101"))
    assert not list(workspace.glob("out*")) and not list(workspace.glob("m.*"))


def test_gatys_steps_and_report_may_not_hit_an_input(compose, workspace: Path) -> None:
    content = workspace / "shot.png"
    Image.new("RGB", (20, 16), "teal").save(content)
    (workspace / "out_steps").mkdir()
    Image.new("RGB", (8, 8), "red").save(workspace / "out_steps" / "step_00002.png")
    common = [f"input={content}", "engine=gatys", "engine.steps=2", "engine.image_size=16"]
    with pytest.raises(OverwriteError, match="step_00002.png"):
        jobs.optimize(compose("optimize", *common, f"style={workspace / 'out_steps' / 'step_00002.png'}",
                             f"output={workspace / 'out.png'}", "engine.save_every=2"))
    (workspace / "shot.json").write_text("{}")  # an input where the run report (<output stem>.json) would go
    with pytest.raises(OverwriteError, match="shot.json"):
        jobs.optimize(compose("optimize", *common, f"style={workspace / 'shot.json'}", f"output={workspace / 'shot.jpg'}"))


def test_compare_output_inside_the_input_folder_is_not_compared_again(random_vgg_loss, compose, workspace: Path) -> None:
    photos = workspace / "photos"
    torch.manual_seed(0)
    loss = random_vgg_loss("vgg16", {"relu1_2": 1.0}, {"relu1_2": 1.0})
    model = StyleModel(TransformerNet(width=0.25, residual_blocks=1), {"style": {"name": "navy", "size": 12}, "loss": loss},
                       [torch.rand(1, 3, 12, 12)]).save(workspace / "scored.safetensors")
    cfg = compose("compare", f"model={model}", f"input={photos}", f"output={photos / 'cmp'}", "engines=[fast]",
                  "image_size=16", "device=cpu")
    assert jobs.compare(cfg) == 0
    assert (photos / "cmp" / OUTPUT_MARKER).is_file()
    assert list_images(photos) == [photos / "a.png", photos / "b.png"]
