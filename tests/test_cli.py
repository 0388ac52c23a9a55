"""The entry layer: any legal file name on the command line, and a mistyped setting is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from fststyle.bundled import bundled_path, config_dir
from fststyle.cli.arguments import hydra_quoted, prepare_command_line, quote_path_values
from fststyle.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONF = config_dir()
MODEL = bundled_path("checkpoints/starry_night.safetensors")
#: legal file names that Hydra's override grammar rejects or misreads when unquoted
AWKWARD_NAMES = ["é.jpg", "c(1).jpg", "a, b.jpg", "it's.jpg", 'say "hi".jpg', "x#1 ~y.jpg", "a=b.jpg",
                 "dir\\back\\.jpg", "ends with backslash\\", "${not_an_interpolation}.jpg", "日本 写真.png", "123"]


def _run(script: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_quoted_value_reads_back_exactly_through_hydra_and_omegaconf(name: str) -> None:
    override = OverridesParser.create().parse_overrides([f"input={hydra_quoted(name)}"])[0]
    config = OmegaConf.create({"input": override.value()})
    assert config.input == name


def test_only_plain_path_values_are_quoted() -> None:
    arguments = ["input=c(1).jpg", "output=null", "style=[a.jpg,b.jpg]", "tile=1024", "engine=gatys",
                 "data.root=/data/my coco", "+callbacks.x.folder=a(b)", "output=${input}_x", "model='m.safetensors'"]
    assert quote_path_values(arguments) == [
        "input='c(1).jpg'", "output=null", "style=[a.jpg,b.jpg]", "tile=1024", "engine=gatys",
        "data.root='/data/my coco'", "+callbacks.x.folder=a(b)", "output=${input}_x", "model='m.safetensors'"]


@pytest.mark.parametrize(("script", "arguments", "message"), [
    ("stylize", ["modle=m.safetensors"], "unknown setting 'modle': did you mean model?"),
    ("optimize", ["engine=gatys", "gatys.steps=3"], "unknown setting 'gatys.steps': did you mean engine.steps?"),
    ("compare", ["gatys.stpes=3"], "did you mean gatys.steps?"),
    ("optimize", ["engine=gatsy"], "unknown choice 'engine=gatsy': engine is one of gatys, mrf"),
    ("train", ["experiment=demo", "trainer.max_step=3"], "did you mean trainer.max_steps?"),
    ("train", ["loss.content_layers.relu3_3=1"], "to add one, write +loss.content_layers.relu3_3=1"),
    ("train", ["engine.loss.style_layers={relu1_1: 1}"], "unknown setting 'engine.loss.style_layers': did you mean"),
    ("stylize", ["strength=a(b"], "quote a value with special characters: \"strength='a(b'\""),
])
def test_bad_overrides_are_refused_with_the_fix(script: str, arguments: list[str], message: str) -> None:
    with pytest.raises(UserError) as caught:
        prepare_command_line([f"{script}.py", *arguments], CONF, script)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("script", "key", "default"), [
    ("train", "loss.style_layers", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]),
    ("optimize", "engine.loss.content_layers", ["relu4_2"]),
])
def test_a_layer_map_written_whole_replaces_the_default(script: str, key: str, default: list[str]) -> None:
    """Hydra alone would merge it: the default layers would stay, or a layer they lack would be refused."""
    from fststyle.cli.config import compose

    argv = prepare_command_line([f"{script}.py", f"{key}={{relu1_1: 2.0, relu5_1: 0.5}}"], CONF, script)
    layers = OmegaConf.select(compose(script, argv[1:], folder=CONF), key)
    assert OmegaConf.to_container(layers) == {"relu1_1": 2.0, "relu5_1": 0.5}
    assert not set(default) & set(layers)


def test_help_and_sweeps_go_to_hydra_untouched() -> None:
    for arguments in (["--help"], ["--multirun", "input=a,b.jpg"]):
        assert prepare_command_line(["infer.py", *arguments], CONF, "stylize") == ["infer.py", *arguments]


@pytest.mark.parametrize(("script", "message"), [
    ("infer.py", "error: unknown setting 'modle': did you mean model?"),
    ("train.py", "error: unknown setting 'modle': the settings are style, style_blend,"),
])
def test_cli_refuses_an_unknown_setting_in_one_line_with_exit_2(script: str, message: str, tmp_path: Path) -> None:
    result = _run(script, "modle=x.safetensors", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no outputs/ run folder


def test_awkward_file_names_work_as_input_output_content_and_style(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    photo, painting = tmp_path / "été (1), it's.jpg", tmp_path / 'c(1) "q" #2.png'
    Image.fromarray(pixels).save(photo)
    Image.fromarray(pixels[::-1]).save(painting)

    stylised = tmp_path / "日本 (a,b).png"
    result = _run("infer.py", f"model={MODEL}", f"input={photo}", f"output={stylised}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(stylised).size == (56, 40)

    optimised = tmp_path / "ñ out (2).png"
    result = _run("infer.py", "engine=gatys", f"content={photo}", f"style={painting}", f"output={optimised}",
                  "engine.steps=1", "engine.image_size=32", "engine.loss.network.weights=random", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(optimised).size == (32, 23)
