"""Models of several styles at inference: style= in stylize, compare and infer.py, fststyle models, and ONNX /
TorchScript exports that take the style weights as an input; one-style models keep today's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.bundled import bundled_path
from fststyle.cli import jobs
from fststyle.compare.scoring import scoring_loss
from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.nets.transformer import InstanceNorm2d, TransformerNet
from fststyle.style_model import StyleModel
from fststyle.stylize.export import export_model
from fststyle.stylize.stylizer import Stylizer
from infer import command

REPO = Path(__file__).resolve().parents[1]
NAMES = ["starry_night", "the_scream", "udnie"]
#: a cheap scoring loss: random VGG-16 weights (mechanics only), two style layers
LOSS = {"network": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu2_2": 1.0},
        "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0}, "content_weight": 1.0, "style_weight": 1.0,
        "tv_weight": 0.0}
STYLE_SIZE = 32
#: float32 on CPU, same operations in another order (onnxruntime vs PyTorch); as tests/test_export.py
TOLERANCE = 1e-4


def several_styles(path: Path) -> Path:
    """A style model of three styles (random weights) whose styles' instance-norm scale and shift differ
    strongly, storing each style's image at STYLE_SIZE."""
    torch.manual_seed(0)
    network = TransformerNet(width=0.25, residual_blocks=1, styles=len(NAMES)).eval()
    with torch.no_grad():
        for norm in network.modules():
            if isinstance(norm, InstanceNorm2d):
                norm.weight.copy_(1 + 0.5 * torch.randn_like(norm.weight))
                norm.bias.copy_(0.5 * torch.randn_like(norm.bias))
    images = [load_image(bundled_path(f"data/styles/{name}.jpg"), STYLE_SIZE) for name in NAMES]
    metadata = {"style": {"name": "+".join(NAMES), "paths": [], "blend": None, "size": STYLE_SIZE}, "loss": LOSS,
                "image_size": 48, "steps": 0, "styles": [{"name": name, "steps": 0} for name in NAMES]}
    return StyleModel(network, metadata, images).save(path)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return several_styles(tmp_path_factory.mktemp("several") / "three.safetensors")


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return load_image(bundled_path("data/preview/000000000030.jpg"), 48)


def fststyle(*arguments: str, cwd: Path, script: tuple[str, ...] = ("-m", "fststyle")) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *script, *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_a_shipped_one_style_model_gives_the_output_it_gave_before_multi_style() -> None:
    """tests/data/starry_night_64_reference.png: written by commit 8ba6619 (before conditional instance norm)
    with Stylizer.load("checkpoints/starry_night.safetensors") on data/preview/000000000030.jpg at 64 px."""
    photo = load_image(bundled_path("data/preview/000000000030.jpg"), 64)
    reference = load_image(Path(__file__).with_name("data") / "starry_night_64_reference.png")[0]
    for style in (None, "starry_night"):  # its own name chooses it
        stylised = Stylizer.load("starry_night", device="cpu", style=style)(photo)
        assert (stylised[0] - reference).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(UserError, match="has no style 'udnie'; its styles: starry_night"):
        Stylizer.load("starry_night", device="cpu", style="udnie")


def test_each_style_differs_and_a_halfway_blend_lies_between_them(model_path: Path, photo: torch.Tensor) -> None:
    model = StyleModel.load(model_path)
    outputs = {name: Stylizer.from_model(model, device="cpu", style=name)(photo) for name in NAMES}
    for first, second in ((0, 1), (0, 2), (1, 2)):
        assert (outputs[NAMES[first]] - outputs[NAMES[second]]).abs().mean() > 0.02
    # a perfectly trained model: each style's stored image is what the network makes of the photo for it, so
    # the style distance (the model's Gram style loss against that image) is 0 at the style and grows away from it
    perfect = StyleModel(model.network, model.metadata, [outputs[name] for name in NAMES], model_path)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        a, b = NAMES[a], NAMES[b]
        blended = Stylizer.from_model(model, device="cpu", style={a: 0.5, b: 0.5})(photo)
        for near, far in ((a, b), (b, a)):
            one = perfect.select(near)
            loss = scoring_loss(one, torch.device("cpu"), one.style_images)
            distance = {name: float(loss(image, photo)["style"]) for name, image in
                        (("near", outputs[near]), ("far", outputs[far]), ("blend", blended))}
            assert distance["near"] < distance["blend"] < distance["far"], (near, far, distance)


def test_stylize_and_infer_py_choose_or_blend_a_style_and_name_the_output_after_it(model_path: Path, compose,
                                                                                   tmp_path: Path) -> None:
    source = tmp_path / "photo.png"
    Image.open(bundled_path("data/preview/000000000030.jpg")).resize((48, 32)).save(source)
    refused = fststyle("stylize", str(source), "-m", str(model_path), cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "holds 3 styles: starry_night, the_scream, udnie" in refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photo.png"]
    blend = "style={starry_night: 0.7, the_scream: 0.3}"
    legacy = command([f"model={model_path}", f"input={source}", blend])  # python infer.py ... 'style={...}'
    assert legacy == ["stylize", f"model={model_path}", f"input={source}", blend]
    for overrides in (legacy[1:], [f"model={model_path}", f"input={source}", "style=udnie"]):
        assert jobs.stylize(compose("stylize", *overrides, "device=cpu")) == 0
    for style, name in (({"starry_night": 0.7, "the_scream": 0.3}, "starry_night+the_scream"), ("udnie", "udnie")):
        written = load_image(tmp_path / f"photo_{name}.png")
        expected = Stylizer.load(model_path, device="cpu", style=style)(load_image(source))
        assert (written - expected).abs().max() <= 1 / 255 + 1e-6


def test_compare_takes_a_style_name_or_blend_and_keeps_image_paths_as_scoring_targets(model_path: Path, compose,
                                                                                      tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(bundled_path("data/preview/000000000030.jpg")).resize((48, 32)).save(photos / "a.png")
    scoring_image = tmp_path / "painting.png"
    Image.open(bundled_path("data/styles/the_scream.jpg")).resize((40, 30)).save(scoring_image)

    def run(*overrides: str) -> dict:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        cfg = compose("compare", f"model={model_path}", f"input={photos}", f"output={out}", "engines=[fast]",
                      "device=cpu", "image_size=48", "cell_height=32", *overrides)
        assert jobs.compare(cfg) == 0
        report = json.loads((out / "report.json").read_text())
        return {"report": report, "fast": load_image(out / "fast" / "a.png")}

    content = load_image(photos / "a.png", 48)
    for override, style, name, blend in (("udnie", "udnie", "udnie", None),
                                         ("{starry_night: 0.25, udnie: 0.75}", {"starry_night": 0.25, "udnie": 0.75},
                                          "starry_night+udnie", [0.25, 0.75])):
        result = run(f"style={override}")
        assert result["report"]["model"]["style"]["name"] == name
        assert result["report"]["model"]["style"]["blend"] == blend
        chosen = StyleModel.load(model_path).select(style)
        assert (result["fast"] - Stylizer.from_model(chosen, device="cpu")(content)).abs().max() <= 1 / 255 + 1e-6
        # scored against the chosen styles' stored images
        loss = scoring_loss(chosen, torch.device("cpu"), chosen.style_images)  # stored at the style size
        scored = result["report"]["photos"][0]["results"]["fast"]["losses"]["style"]
        assert scored == pytest.approx(float(loss(result["fast"], content)["style"]), rel=1e-4)
    with_image = run("style=[udnie," + str(scoring_image) + "]")  # a name chooses, an existing file is scored
    chosen = StyleModel.load(model_path).select("udnie")
    loss = scoring_loss(chosen, torch.device("cpu"), [load_image(scoring_image, STYLE_SIZE)])
    scored = with_image["report"]["photos"][0]["results"]["fast"]["losses"]["style"]
    assert scored == pytest.approx(float(loss(with_image["fast"], content)["style"]), rel=1e-4)
    for overrides, message in (((), "holds 3 styles: starry_night, the_scream, udnie"),
                               (("style=mosaic",), "style=mosaic is neither one of the styles of .* \\(starry_night, "
                                                   "the_scream, udnie\\) nor an existing image file")):
        with pytest.raises(UserError, match=message):
            run(*overrides)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exports_of_a_multi_style_model_take_the_style_weights(model_path: Path, tmp_path: Path, kind: str) -> None:
    if kind == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime")
        session = onnxruntime.InferenceSession(str(export_model(model_path, "onnx", tmp_path / "m.onnx")),
                                               providers=["CPUExecutionProvider"])
        assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("images", [3, "height", "width"]),
                                                                         ("style_weights", [3])]

        def exported(images: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
            return session.run(None, {"images": images.numpy(), "style_weights": weights.numpy()})[0]
    else:
        scripted = torch.jit.load(str(export_model(model_path, "torchscript", tmp_path / "m.pt")))

        def exported(images: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return scripted(images, weights).numpy()
    network = StyleModel.load(model_path).network
    one_hot, blend = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.5]])
    per_image = torch.cat([one_hot, blend])
    for images, weights in ((torch.rand(1, 3, 37, 29), one_hot), (torch.rand(2, 3, 32, 40), blend),
                            (torch.rand(2, 3, 21, 30), per_image)):
        with torch.no_grad():
            reference = network(images, weights).numpy()
        np.testing.assert_allclose(exported(images, weights), reference, atol=TOLERANCE, rtol=0)
    chosen = StyleModel.load(model_path).select({"starry_night": 0.5, "udnie": 0.5}).network
    images = torch.rand(1, 3, 24, 24)
    with torch.no_grad():  # the exported blend is the blend stylize runs
        np.testing.assert_allclose(exported(images, blend), chosen(images).numpy(), atol=TOLERANCE, rtol=0)


def test_models_lists_the_styles_of_a_multi_style_model(model_path: Path, monkeypatch, capsys) -> None:
    import fststyle.bundled

    shipped = fststyle.bundled.shipped_models()
    monkeypatch.setattr(fststyle.bundled, "shipped_models", lambda: {**shipped, "three": model_path})
    assert jobs.models() == 0
    lines = capsys.readouterr().out.splitlines()
    (line,) = [line for line in lines if line.startswith("three ")]
    assert "starry_night, the_scream, udnie" in line
    (line,) = [line for line in lines if line.startswith("starry_night ")]
    assert line.split()[1] == "starry_night"
