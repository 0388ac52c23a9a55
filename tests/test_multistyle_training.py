"""Several styles in one network (conditional instance norm, Dumoulin et al. 2017) in real short Lightning runs:
style_mode=multi, finetune_from=, their checkpoints and exports, and the callbacks that compare one style."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fststyle.cli import run_job
from fststyle.cli.main import main as fststyle_main
from fststyle.errors import UserError
from fststyle.nets.transformer import InstanceNorm2d, TransformerConfig, TransformerNet
from fststyle.style_model import StyleModel
from fststyle.training.callbacks import GatysGapCallback
from fststyle.training.data import StyleDataModule
from fststyle.training.run import build_module, train

STYLES = ("the_scream", "udnie", "starry_night")


def multi_overrides(repo: Path, *names: str) -> list[str]:
    """style=[...] of the bundled styles ``names`` (default: all three) trained apart (style_mode=multi)."""
    paths = ",".join(str(repo / f"data/styles/{name}.jpg") for name in names or STYLES)
    return [f"style=[{paths}]", "style_mode=multi"]


def stripes_png(path: Path) -> Path:
    """A 48x48 PNG of diagonal colour stripes: a style image unlike the bundled ones."""
    y, x = np.mgrid[0:48, 0:48]
    pixels = np.stack([(x + y) % 12 * 20, (x - y) % 8 * 30, np.full_like(x, 200)], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def outputs_by_style(model: StyleModel, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named style's output for one fixed 1,3,40,52 image (the model's one-style network of it)."""
    images = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return {name: model.select(name).network(images) for name in names}


def convolution_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that is not an instance norm's scale or shift, by name."""
    norms = {name for name, module in network.named_modules() if isinstance(module, InstanceNorm2d)}
    return {name: value.detach().clone() for name, value in network.named_parameters()
            if name.rsplit(".", 1)[0] not in norms}


@pytest.fixture(scope="module")
def multi_run(repo, tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """A 4-step run of the three bundled styles in one network (previews and checkpoints every 2 steps)."""
    return train(tiny_config(tmp_path_factory.mktemp("multi"), "trainer.max_steps=4", *multi_overrides(repo)))


@pytest.fixture(scope="module")
def single_run(tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """A 2-step run of one style (the_scream)."""
    return train(tiny_config(tmp_path_factory.mktemp("single"), "trainer.max_steps=2"))


# ---- style_mode=multi ------------------------------------------------------------------------------------
def test_multi_model_lists_its_styles_with_steps_and_images(multi_run) -> None:
    model = StyleModel.load(multi_run.model_path)
    assert multi_run.model_path.name == "+".join(STYLES) + ".safetensors"
    assert model.network.config.styles == 3 and model.style_names == list(STYLES)
    assert model.metadata["styles"] == [{"name": name, "steps": 4} for name in STYLES]
    assert len(model.style_images) == 3
    for image, trained in zip(model.style_images, multi_run.module.style_images, strict=True):
        assert image.shape == trained.shape and (image - trained).abs().max() <= 0.5 / 255 + 1e-6
    outputs = outputs_by_style(model, list(STYLES))
    for first, second in itertools.combinations(STYLES, 2):
        assert (outputs[first] - outputs[second]).abs().max() > 1e-5, (first, second)


def test_multi_run_logs_every_style(multi_run) -> None:
    events = EventAccumulator(str(multi_run.run_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/total", "train/style", "val/total", "val/style"}
    for name in STYLES:
        expected |= {f"train/{name}/style", f"train/{name}/content", f"train/{name}/total",
                     f"val/{name}/style", f"val/{name}/content", f"val/{name}/total", f"val/{name}/saturated"}
    assert expected <= scalars, expected - scalars
    # the plain val/ terms are the mean over the styles
    total = events.Scalars("val/total")[-1].value
    assert total == pytest.approx(sum(events.Scalars(f"val/{name}/total")[-1].value for name in STYLES) / 3, rel=1e-5)


def test_multi_preview_has_a_column_per_style(multi_run, single_run) -> None:
    multi = Image.open(multi_run.run_dir / "previews" / "step_000004.png")
    single = Image.open(single_run.run_dir / "previews" / "step_000002.png")
    assert multi.height == single.height
    assert multi.width >= single.width + 2 * 32  # two more 32 px columns: content | 3 styles vs content | 1


def test_every_style_gets_an_even_share_of_images_across_epochs(repo, tiny_config, tmp_path: Path) -> None:
    """3 styles, batches of 2, epochs of 5 batches: over 3 epochs (30 images) each style gets 10 images."""
    cfg = tiny_config(tmp_path, *multi_overrides(repo))
    module = build_module(cfg)
    seen: list[int] = []
    chosen = module.batch_styles

    def recording(batch_size: int, batch_idx: int) -> list[int] | None:
        styles = chosen(batch_size, batch_idx)
        seen.extend(styles)
        return styles

    module.batch_styles = recording
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=5, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=StyleDataModule.from_config(cfg["data"]))
    assert trainer.global_step == 15 and Counter(seen) == {0: 10, 1: 10, 2: 10}


def test_blend_of_a_list_is_still_one_style(repo, tiny_config, tmp_path: Path) -> None:
    paths = [repo / "data/styles/the_scream.jpg", repo / "data/styles/udnie.jpg"]
    module = build_module(tiny_config(tmp_path, f"style=[{paths[0]},{paths[1]}]", "style_blend=[3,1]"))
    assert module.transformer.config.styles == 1 and not len(module.style_terms)
    assert "names" not in module.hparams.style and module.hparams.style["name"] == "the_scream+udnie"
    expected = module.loss.style.untargeted_copy()
    with torch.no_grad():
        expected.set_targets_from_images(module.loss.vgg, module.style_images, [0.75, 0.25])
    for (name, value), (_, target) in zip(module.loss.style.named_buffers(), expected.named_buffers(), strict=True):
        assert torch.allclose(value, target, rtol=1e-5, atol=0), name
    with torch.no_grad():
        output = module(torch.rand(2, 3, 32, 32))  # one style: no style weights
    assert output.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("overrides, says", [
    (["style_mode=mix"], "style_mode='mix' is not a mode"),
    (["style_names=[a,b]"], "style_names= has 2 names for 3 style images"),
    (["style_names=[a,b,a]"], "two style images share the style name 'a'"),
    (["style_blend=[1,1,1]"], "style_blend= blends the Gram targets of one style"),
    (["style_mode=blend", "style_names=[a,b,c]"], "style_names= names the styles of style_mode=multi"),
    (["style_names=[a,b/c,d]"], "style_names= 'b/c'"),
    (["style_names=[a,'',d]"], "style_names= ''"),
])
def test_style_setting_errors_are_one_line(repo, tiny_config, tmp_path: Path, capsys, overrides, says) -> None:
    cfg = tiny_config(tmp_path, "trainer.max_steps=1", *multi_overrides(repo), *overrides)
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and says in error and error.count("\n") == 1, error


def test_one_style_name_may_be_a_plain_string(repo, tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path, *multi_overrides(repo, "udnie"), "style_names=painting"))
    assert module.settings.style.names == ("painting",) and module.hparams.style["name"] == "painting"


# ---- checkpoints and export ------------------------------------------------------------------------------
def test_multi_checkpoint_loads_and_exports_with_its_styles(multi_run, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes((multi_run.run_dir / "checkpoints" / "last.ckpt").read_bytes())
    loaded = StyleModel.load(checkpoint)
    assert loaded.style_names == list(STYLES) and loaded.metadata["styles"] == [{"name": n, "steps": 4} for n in STYLES]
    fststyle_main(["export", str(checkpoint), "format=safetensors"])  # returns on success
    exported = StyleModel.load(checkpoint.with_suffix(".safetensors"))
    assert exported.style_names == list(STYLES) and exported.metadata["styles"] == loaded.metadata["styles"]
    trained = StyleModel.load(multi_run.model_path)
    for name, output in outputs_by_style(exported, list(STYLES)).items():
        assert torch.equal(output, outputs_by_style(trained, [name])[name]), name


# ---- finetune_from ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_finetune(multi_run, tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """The three-style model fine-tuned for 2 steps with a fourth style, stripes (a PNG of its own)."""
    stripes = stripes_png(tmp_path_factory.mktemp("styles") / "stripes.png")
    run_dir = tmp_path_factory.mktemp("finetune")
    cfg = tiny_config(run_dir, "trainer.max_steps=2", f"finetune_from={multi_run.model_path}", f"style={stripes}")
    return cfg, train(cfg)


def test_finetune_keeps_old_styles_bit_identical_and_adds_the_new_one(multi_run, multi_finetune) -> None:
    _, result = multi_finetune
    base, tuned = StyleModel.load(multi_run.model_path), StyleModel.load(result.model_path)
    assert tuned.style_names == [*STYLES, "stripes"] and result.model_path.name == "+".join(tuned.style_names) + ".safetensors"
    assert tuned.metadata["styles"] == [*({"name": name, "steps": 4} for name in STYLES), {"name": "stripes", "steps": 2}]
    before, after = outputs_by_style(base, list(STYLES)), outputs_by_style(tuned, tuned.style_names)
    for name in STYLES:
        assert torch.equal(before[name], after[name]), name
        assert (after["stripes"] - after[name]).abs().max() > 1e-5, name
    base_weights, tuned_weights = convolution_weights(base.network), convolution_weights(tuned.network)
    assert base_weights.keys() == tuned_weights.keys()
    assert all(torch.equal(base_weights[name], tuned_weights[name]) for name in base_weights)
    assert len(tuned.style_images) == 4 and all(torch.equal(a, b) for a, b in zip(base.style_images, tuned.style_images[:3], strict=False))


def test_finetune_resumes_from_its_last_checkpoint(multi_run, multi_finetune, tmp_path: Path) -> None:
    cfg, first = multi_finetune
    resumed = train({**cfg, "run_dir": str(tmp_path), "ckpt_path": str(first.run_dir),
                     "trainer": {**cfg["trainer"], "max_steps": 4}})
    assert resumed.global_step == 4
    base, tuned = StyleModel.load(multi_run.model_path), StyleModel.load(resumed.model_path)
    assert tuned.metadata["styles"][-1] == {"name": "stripes", "steps": 4}
    before, after = outputs_by_style(base, list(STYLES)), outputs_by_style(tuned, list(STYLES))
    assert all(torch.equal(before[name], after[name]) for name in STYLES)


def test_finetune_of_a_one_style_model(single_run, repo, tiny_config, tmp_path: Path) -> None:
    udnie = repo / "data/styles/udnie.jpg"
    result = train(tiny_config(tmp_path, "trainer.max_steps=2", f"finetune_from={single_run.model_path}",
                               f"style={udnie}"))
    base, tuned = StyleModel.load(single_run.model_path), StyleModel.load(result.model_path)
    assert tuned.style_names == ["the_scream", "udnie"]
    assert tuned.metadata["styles"] == [{"name": "the_scream", "steps": 2}, {"name": "udnie", "steps": 2}]
    images = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        old, new = base.network(images), tuned.select("the_scream").network(images)
        assert torch.equal(old, new)
        assert (tuned.select("udnie").network(images) - old).abs().max() > 1e-5
    base_weights, tuned_weights = convolution_weights(base.network), convolution_weights(tuned.network)
    assert all(torch.equal(base_weights[name], tuned_weights[name]) for name in base_weights)


def test_finetune_of_a_blend_writes_a_loadable_model(repo, tiny_config, tmp_path: Path) -> None:
    """A blend model stores its images (two, for one style); the fine-tune cannot store one image per style."""
    paths = [repo / "data/styles/the_scream.jpg", repo / "data/styles/udnie.jpg"]
    blend = train(tiny_config(tmp_path / "blend", "trainer.max_steps=1", "trainer.val_check_interval=1",
                              f"style=[{paths[0]},{paths[1]}]"))
    assert len(StyleModel.load(blend.model_path).style_images) == 2
    tuned = train(tiny_config(tmp_path / "tuned", "trainer.max_steps=1", "trainer.val_check_interval=1",
                              f"finetune_from={blend.model_path}", f"style={repo / 'data/styles/starry_night.jpg'}"))
    model = StyleModel.load(tuned.model_path)
    assert model.style_names == ["the_scream+udnie", "starry_night"] and model.style_images is None


def test_finetune_name_clash_is_one_line(multi_run, repo, tiny_config, tmp_path: Path, capsys) -> None:
    cfg = tiny_config(tmp_path, "trainer.max_steps=1", f"finetune_from={multi_run.model_path}",
                      f"style={repo / 'data/styles/udnie.jpg'}")
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        f"error: finetune_from={multi_run.model_path} already holds the style name 'udnie'"), error


# ---- callbacks that compare one style --------------------------------------------------------------------
def test_gatys_gap_refuses_several_trained_styles(repo, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "trainer.max_steps=1", *multi_overrides(repo),
                      "+callbacks.gap._target_=fststyle.training.callbacks.GatysGapCallback", "+callbacks.gap.every_n_steps=1",
                      "+callbacks.gap.image_size=32", "+callbacks.gap.settings.steps=1", "+callbacks.gap.progress=false")
    with pytest.raises(UserError, match="GatysGapCallback compares one style; this run trains 3") as error:
        train(cfg)
    assert "\n" not in str(error.value)


def test_gatys_gap_measures_the_one_new_style_of_a_finetune(multi_run, repo, tmp_path: Path, tiny_config) -> None:
    stripes = stripes_png(tmp_path / "styles" / "stripes.png")
    cfg = tiny_config(tmp_path / "run", f"finetune_from={multi_run.model_path}", f"style={stripes}")
    module = build_module(cfg)
    photos = sorted((repo / "data/preview").glob("*.jpg"))[:1]
    callback = GatysGapCallback(photos=photos, every_n_steps=1, image_size=32, settings={"steps": 2}, progress=False)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[callback])
    trainer.fit(module, datamodule=StyleDataModule.from_config(cfg["data"]))
    gap = callback.gap(module)
    new_style = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    with torch.no_grad():
        fast = module.loss(module(callback._contents[0], new_style), callback._contents[0], style=module.style_terms[0])
    assert gap["gatys_gap/total"] == pytest.approx(float(fast["total"]) - callback._reference["total"], rel=1e-5)


def test_resuming_a_finetune_without_its_settings_is_one_line(multi_finetune, tmp_path: Path, capsys) -> None:
    """Without finetune_from= the run's network holds one style, the checkpoint's four."""
    cfg, first = multi_finetune
    cfg = {**cfg, "run_dir": str(tmp_path), "ckpt_path": str(first.run_dir), "finetune_from": None}
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        "error: the checkpoint was trained on the styles the_scream, udnie, starry_night, stripes"), error


def test_finetune_of_a_batch_norm_model_is_one_line(repo, tiny_config, tmp_path: Path, capsys) -> None:
    network = TransformerNet(TransformerConfig(width=0.25, residual_blocks=1, norm="batch"))
    path = StyleModel(network, {"style": {"name": "batchy"}}).save(tmp_path / "batchy.safetensors")
    cfg = tiny_config(tmp_path / "run", "trainer.max_steps=1", f"finetune_from={path}",
                      f"style={repo / 'data/styles/udnie.jpg'}")
    with pytest.raises(SystemExit) as exited:
        run_job(lambda: train(cfg))
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: finetune_from={path} has batch norms"), error
