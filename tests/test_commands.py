"""``fststyle <command>``: paths as ordinary arguments, settings as overrides, --help that lists every setting,
models by name, the public API, and a wheel that runs outside the repository."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from fststyle.bundled import bundled_path, shipped_models
from fststyle.cli.config import setting_descriptions
from fststyle.cli.main import COMMANDS, job_overrides
from fststyle.errors import UserError
from infer import command as infer_command

REPO = Path(__file__).resolve().parents[1]
AWKWARD = "my photo (1) é, it's.jpg"


def fststyle(*arguments: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m fststyle ARGUMENTS`` in ``cwd`` (fststyle importable from the repo unless ``env`` says)."""
    env = env or {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fststyle", *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "teal").save(path)
    return path


def test_stylize_takes_paths_as_arguments_and_a_shipped_model_by_name(tmp_path: Path) -> None:
    photo(tmp_path / AWKWARD)
    result = fststyle("stylize", AWKWARD, "--model", "starry_night", "-o", "out/", "strength=0.7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out" / AWKWARD).size == (40, 30)


def test_several_inputs_go_into_the_output_folder_by_name(tmp_path: Path) -> None:
    photo(tmp_path / "a.jpg")
    photo(tmp_path / "album" / "b.png")
    result = fststyle("stylize", "a.jpg", "album", "-m", "the_scream", "-o", "styled", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "styled" / "a.jpg").is_file() and (tmp_path / "styled" / "album" / "b.png").is_file()


def test_two_inputs_of_one_name_are_refused_before_any_work(tmp_path: Path) -> None:
    photo(tmp_path / "x" / "p.jpg")
    photo(tmp_path / "y" / "p.jpg")
    result = fststyle("stylize", "x/p.jpg", "y/p.jpg", "-m", "starry_night", "-o", "out", cwd=tmp_path)
    assert result.returncode == 2 and "would both be written to" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_file_is_a_path_even_when_it_looks_like_a_setting(tmp_path: Path) -> None:
    parser = argparse.Namespace(arguments=["strength=0.5", "a=b.jpg"], model="m", output=None)
    (tmp_path / "a=b.jpg").touch()
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        overrides = job_overrides("stylize", COMMANDS["stylize"], parser)
    finally:
        os.chdir(cwd)
    assert overrides == ["input='a=b.jpg'", "model='m'", "strength=0.5"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["a.jpg", "b.jpg"], "takes one input"),
    (["a.jpg", "input=b.jpg"], "input given twice"),
])
def test_misused_paths_are_named(arguments: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        job_overrides("optimize", COMMANDS["optimize"], argparse.Namespace(arguments=arguments, style=None, output=None))


def test_help_lists_every_setting_with_its_description(tmp_path: Path) -> None:
    result = fststyle("optimize", "--help", "engine=mrf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: fststyle optimize INPUT [-s STYLE] [-o OUTPUT] [KEY=VALUE ...]" in result.stdout
    assert "engine.loss.mrf.patch_size=3" in result.stdout and "CNNMRF mrf_patch_size" in result.stdout


@pytest.mark.parametrize(("job", "overrides"), [
    ("train", []), ("train", ["experiment=demo"]), ("train", ["trainer=ddp", "+callbacks=gatys_gap"]),
    ("stylize", []), ("optimize", ["engine=gatys"]), ("optimize", ["engine=mrf"]), ("compare", []), ("export", []),
])
def test_every_setting_of_every_job_has_a_description(job: str, overrides: list[str]) -> None:
    settings = setting_descriptions(job, overrides)
    assert len(settings) >= 3
    assert [key for key, _, description in settings if not description] == []


def test_unknown_command_and_setting_are_one_line_exit_2(tmp_path: Path) -> None:
    for arguments, message in ((["stylise"], "did you mean stylize?"),
                               (["stylize", "x.jpg", "--model", "starry_night", "strenght=1"], "did you mean strength?"),
                               (["stylize", "x.jpg", "--model", "starry_nite"], "not found"),
                               (["train", "photo.jpg"], "takes no paths")):
        result = fststyle(*arguments, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr


def test_models_lists_the_shipped_models_with_their_training(tmp_path: Path) -> None:
    result = fststyle("models", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert set(shipped_models()) == {"starry_night", "the_scream", "multistyle"}
    steps = {"starry_night": "2000", "the_scream": "2000", "multistyle": "6500"}
    for name in shipped_models():
        (line,) = [line for line in lines if line.startswith(name + " ")]
        assert "128 px" in line and steps[name] in line and "cpu" in line.lower()
    (line,) = [line for line in lines if line.startswith("multistyle ")]
    assert "starry_night, the_scream, udnie" in line


def test_models_reads_headers_without_importing_torch(tmp_path: Path) -> None:
    """fststyle models reads three file headers: it must not pay torch's import (issue: 3.3 s and 840 MB)."""
    code = ("import sys\nfrom fststyle.cli.main import main\ntry:\n    main(['models'])\nexcept SystemExit as end:\n"
            "    assert not end.code, end.code\nprint(sorted({'torch', 'torchvision', 'pytorch_lightning'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]", result.stdout
    assert "starry_night" in result.stdout


def test_stylize_imports_neither_the_losses_nor_lightning(tmp_path: Path) -> None:
    """Stylising a photo needs the network alone: torchvision's model zoo (through the losses) and Lightning
    cost seconds of start-up that the photo does not need."""
    Image.new("RGB", (40, 30), "teal").save(tmp_path / "photo.jpg")
    code = ("import sys\nfrom fststyle.cli.main import main\ntry:\n    main(['stylize', 'photo.jpg', '-m', 'starry_night', "
            "'-o', 'out.jpg', 'device=cpu'])\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
            "print(sorted({'torchvision', 'pytorch_lightning', 'fststyle.losses'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]", result.stdout
    assert Image.open(tmp_path / "out.jpg").size == (40, 30)



def test_a_run_composes_its_config_once(tmp_path: Path) -> None:
    """A command composes its config once: the override check is that composition (hydra.main composed it
    twice more, once only to read ``hydra.mode``). --cfg still goes through hydra.main."""
    Image.new("RGB", (40, 30), "teal").save(tmp_path / "photo.jpg")
    code = ("import sys\nfrom hydra._internal.config_loader_impl import ConfigLoaderImpl\n"
            "from fststyle.cli.main import main\ncount = []\nload = ConfigLoaderImpl.load_configuration\n"
            "def counted(*args, **kwargs):\n    count.append(1)\n    return load(*args, **kwargs)\n"
            "ConfigLoaderImpl.load_configuration = counted\ntry:\n"
            "    main(['stylize', 'photo.jpg', '-m', 'starry_night', '-o', 'out.jpg', 'device=cpu'] + sys.argv[1:])\n"
            "except SystemExit as end:\n    print('exit', end.code)\nprint('compositions', len(count))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1] == "compositions 1", run.stdout + run.stderr
    assert Image.open(tmp_path / "out.jpg").size == (40, 30)
    typo = subprocess.run([sys.executable, "-c", code, "strenght=0.5"], cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    assert typo.stdout.splitlines()[-2:] == ["exit 2", "compositions 2"], typo.stdout  # the nearest key's lookup
    assert typo.stderr.strip() == "error: unknown setting 'strenght': did you mean strength?", typo.stderr

def test_export_a_shipped_model_by_name_into_the_working_directory(tmp_path: Path) -> None:
    result = fststyle("export", "starry_night", "format=torchscript", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "starry_night.pt").stat().st_size > 100_000


@pytest.mark.parametrize(("legacy", "command"), [
    (["model=m", "input=p.jpg", "output=o.jpg"], ["stylize", "model=m", "input=p.jpg", "output=o.jpg"]),
    (["engine=fast", "model=m", "input=p.jpg"], ["stylize", "model=m", "input=p.jpg"]),
    (["engine=mrf", "content=p.jpg", "style=s.jpg"], ["optimize", "engine=mrf", "input=p.jpg", "style=s.jpg"]),
    (["--config-name", "compare", "model=m"], ["compare", "model=m"]),
    (["model=m", "export=onnx"], ["export", "model=m", "format=onnx"]),
])
def test_infer_py_command_lines_keep_working_as_fststyle_commands(legacy: list[str], command: list[str]) -> None:
    assert infer_command(legacy) == command


def test_the_public_api_imports_no_lightning() -> None:
    probe = ("import sys, fststyle\n"
             "[getattr(fststyle, name) for name in fststyle.__all__]\n"
             "print(sorted(m for m in sys.modules if 'lightning' in m or m.startswith('hydra')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel offline needs setuptools")
def test_the_wheel_runs_outside_the_repository(tmp_path: Path) -> None:
    """The wheel carries configs, sample data and models: stylise by model name and list the models from a
    folder that is not the repository, with only the wheel's fststyle importable."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("fststyle-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    conf, data = bundled_path("conf"), bundled_path("data")
    shipped = {f"fststyle/conf/{path.relative_to(conf).as_posix()}" for path in conf.rglob("*.yaml")}
    shipped |= {f"fststyle/checkpoints/{name}.safetensors" for name in shipped_models()}
    shipped |= {f"fststyle/sample_data/{path.relative_to(data).as_posix()}" for path in data.rglob("*.jpg")}
    assert shipped <= set(names), sorted(shipped - set(names))
    installed = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(installed), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    photo(work / AWKWARD)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import fststyle; print(fststyle.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
    result = fststyle("stylize", AWKWARD, "--model", "starry_night", cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert (work / "my photo (1) é, it's_starry_night.jpg").is_file()
    assert "starry_night" in fststyle("models", cwd=work, env=env).stdout
    config = fststyle("train", "experiment=demo", "--cfg", "job", "--resolve", cwd=work, env=env)
    assert config.returncode == 0 and str(installed / "fststyle" / "sample_data" / "coco_sample") in config.stdout
