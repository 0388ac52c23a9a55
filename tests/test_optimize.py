"""The optimisation engine on real photos and the real (Caffe) VGG-19: small images, few steps."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from fststyle.cli import jobs
from fststyle.color import rgb_to_yiq
from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.io.files import OUTPUT_MARKER
from fststyle.losses import ContentLoss, GramStyleLoss, PerceptualLoss, TotalVariationLoss
from fststyle.nets.vgg import VGGFeatures
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.pyramid import ImagePyramid
from fststyle.optimize.settings import OptimizeSettings, build_loss, settings_from_config

GATYS_STYLE = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return VGGFeatures("vgg19", weights="caffe", pooling="avg", layers=["relu5_1"])


@pytest.fixture
def gatys(vgg) -> PerceptualLoss:
    """The gatys.yaml loss on the shared VGG (weights as in conf/engine/gatys.yaml)."""
    return PerceptualLoss(vgg, [ContentLoss({"relu4_2": 1.0}, 5.0), GramStyleLoss(GATYS_STYLE, weight=100.0),
                                TotalVariationLoss(1e5)])


@pytest.fixture(scope="module")
def photo(bundled_data) -> torch.Tensor:
    return load_image(sorted((bundled_data / "preview").glob("*.jpg"))[0])


@pytest.fixture(scope="module")
def starry(bundled_data) -> torch.Tensor:
    return load_image(bundled_data / "styles" / "starry_night.jpg", 128)


@pytest.fixture(scope="module")
def scream(bundled_data) -> torch.Tensor:
    return load_image(bundled_data / "styles" / "the_scream.jpg", 128)


def test_gatys_run_stylises_and_keeps_the_content(gatys, photo, starry):
    settings = OptimizeSettings(steps=20, image_size=64)
    result = optimize_image(photo, [starry], gatys, settings, progress=False)
    pyramid = ImagePyramid(*photo.shape[-2:], settings)
    assert result.image.shape[-2:] == pyramid.sizes[-1]
    assert 0 <= result.image.min() and result.image.max() <= 1
    start, end = result.history[0], result.final_terms
    assert [h["step"] for h in result.history] == list(range(21))
    assert end["style"] < start["style"] / 10, "the style loss must fall by a large factor"
    # optimize_image left the caller's loss without targets: give it the ones the run had at its finest level
    gatys.set_content(pyramid.image(photo, pyramid.finest))
    gatys.set_style(pyramid.styles([starry], pyramid.finest))
    # scored against the cached content: an image with the painting's content, and one with none
    painting = float(gatys(torch.nn.functional.interpolate(starry, size=result.image.shape[-2:]))["content"])
    noise = float(gatys(torch.rand_like(result.image))["content"])
    assert end["content"] < 0.6 * min(painting, noise), "the content must stay recognisable"
    content = torch.nn.functional.interpolate(photo, size=result.image.shape[-2:], mode="area")
    luminance = torch.stack([rgb_to_yiq(content)[0, 0].flatten(), rgb_to_yiq(result.image)[0, 0].flatten()])
    assert torch.corrcoef(luminance)[0, 1] > 0.5, "the photo's light and dark areas must survive"


def test_blend_weights_one_zero_equal_the_single_style(gatys, photo, starry, scream):
    settings = OptimizeSettings(steps=2, image_size=48, optimizer="adam")
    single = optimize_image(photo, [starry], gatys, settings, progress=False).image
    blended = optimize_image(photo, [starry, scream], gatys, settings, style_blend=[1, 0], progress=False).image
    other = optimize_image(photo, [starry, scream], gatys, settings, style_blend=[0, 1], progress=False).image
    assert torch.allclose(single, blended, atol=1e-5)
    assert not torch.allclose(single, other, atol=1e-2)


def test_preserve_color_keeps_the_content_chroma(gatys, photo, starry):
    settings = OptimizeSettings(steps=5, image_size=64, preserve_color=True)
    result = optimize_image(photo, [starry], gatys, settings, progress=False).image
    content = torch.nn.functional.interpolate(photo, size=result.shape[-2:], mode="bicubic", antialias=True)
    chroma_error = (rgb_to_yiq(result)[:, 1:] - rgb_to_yiq(content.clamp(0, 1))[:, 1:]).abs().mean()
    plain = optimize_image(photo, [starry], gatys, OptimizeSettings(steps=5, image_size=64), progress=False).image
    plain_error = (rgb_to_yiq(plain)[:, 1:] - rgb_to_yiq(content.clamp(0, 1))[:, 1:]).abs().mean()
    assert chroma_error < 0.01 < plain_error
    assert (rgb_to_yiq(result)[:, :1] - rgb_to_yiq(content)[:, :1]).abs().mean() > 0.01  # luminance was stylised


def test_fixed_seed_reproduces_noise_runs(gatys, photo, starry):
    settings = OptimizeSettings(steps=2, image_size=48, init="noise", seed=7)
    first = optimize_image(photo, [starry], gatys, settings, progress=False)
    again = optimize_image(photo, [starry], gatys, settings, progress=False)
    other = optimize_image(photo, [starry], gatys, OptimizeSettings(steps=2, image_size=48, init="noise", seed=8),
                           progress=False)
    assert torch.equal(first.image, again.image) and first.history == again.history
    assert not torch.equal(first.image, other.image)


def test_pyramid_adam_and_intermediate_images(gatys, photo, starry, tmp_path):
    seen = []
    settings = OptimizeSettings(optimizer="adam", pyramid_levels=2, level_steps=[4, 2], image_size=64, save_every=3,
                                save_dir=str(tmp_path / "steps"), tensorboard=str(tmp_path / "tb"))
    result = optimize_image(photo, [starry], gatys, settings, progress=False,
                            callback=lambda step, image, terms: seen.append((step, tuple(image.shape[-2:]))))
    sizes = ImagePyramid(*photo.shape[-2:], settings).sizes
    assert max(sizes[0]) == 32 and max(sizes[1]) == 64
    assert [h["level"] for h in result.history] == [0] * 5 + [1] * 3
    assert seen[0] == (0, sizes[0]) and seen[-1] == (6, sizes[1])
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["step_00003.png", "step_00006.png"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert len(events.Scalars("optimize/total")) == len(result.history)
    assert result.history[-1]["total"] < result.history[0]["total"]


def test_mrf_engine_lowers_the_mrf_loss(compose, photo, starry):
    cfg = compose("optimize", "engine=mrf")
    loss = build_loss(cfg.engine)
    settings = settings_from_config(cfg.engine)
    assert settings.pyramid_levels == 3 and settings.steps == 100  # CNNMRF's defaults
    small = OptimizeSettings(steps=5, image_size=96, pyramid_levels=2)
    result = optimize_image(photo, [starry], loss, small, progress=False)
    assert result.final_terms["style"] < 0.7 * result.history[0]["style"]


def test_clear_errors_for_bad_inputs(random_vgg_loss, compose, bundled_data, tmp_path):
    style = str(bundled_data / "styles" / "starry_night.jpg")
    photo = str(sorted((bundled_data / "preview").glob("*.jpg"))[0])
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="style file not found: .*nope.jpg"):
        jobs.optimize(compose("optimize", "engine=gatys", f"input={photo}", f"style={missing}", f"output={tmp_path}/o.png"))
    with pytest.raises(FileNotFoundError, match="input file not found"):
        jobs.optimize(compose("optimize", "engine=gatys", f"input={missing}", f"style={style}", f"output={tmp_path}/o.png"))
    with pytest.raises(ValueError, match="optimize needs style"):
        jobs.optimize(compose("optimize", "engine=gatys", f"input={photo}", f"output={tmp_path}/o.png"))
    with pytest.raises(ValueError, match="2 styles but 1 content_masks"):
        jobs.optimize(compose("optimize", "engine=gatys", f"input={photo}", f"style=[{style},{style}]",
                           f"content_masks=[{photo}]", f"output={tmp_path}/o.png"))
    with pytest.raises(ValueError, match="unknown optimisation settings"):
        settings_from_config({"name": "gatys", "step": 3})
    with pytest.raises(ValueError, match="Gram style loss"):
        loss = PerceptualLoss.from_config(random_vgg_loss("vgg19", style_layers={"relu3_1": 1.0}, style_loss="mrf"))
        optimize_image(torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], loss, OptimizeSettings(steps=1),
                       content_masks=[torch.ones(1, 1, 32, 32)], progress=False)


def test_infer_cli_writes_the_image_and_the_json(repo, bundled_data, tmp_path):
    output = tmp_path / "out" / "result.png"
    command = [sys.executable, "infer.py", "engine=gatys", f"output={output}", "engine.image_size=48",
               "engine.steps=2", "engine.save_every=2",
               f"content={sorted((bundled_data / 'preview').glob('*.jpg'))[0]}",
               f"style={bundled_data / 'styles' / 'udnie.jpg'}"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_image(output).shape[-1] == 48
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["engine"] == "gatys" and report["settings"]["steps"] == 2 and report["seconds"] > 0
    assert [h["step"] for h in report["history"]] == [0, 1, 2] and "style.relu1_1" in report["final"]
    assert not list(output.parent.glob(".*")), "no temporary files may be left behind"
    steps = output.parent / "result_steps"
    assert (steps / "step_00002.png").is_file() and (steps / OUTPUT_MARKER).is_file()


@pytest.fixture(scope="module")
def random_mrf(random_vgg_loss) -> PerceptualLoss:
    """conf/engine/mrf.yaml's layers and patches on a random VGG-19 (the pyramid logic needs no real weights)."""
    return PerceptualLoss.from_config(random_vgg_loss("vgg19", {"relu4_2": 1.0}, {"relu3_1": 1.0, "relu4_1": 1.0},
                                                      style_loss="mrf",
                                                      mrf={"patch_size": 3, "stride": 2, "style_stride": 2}))


def test_mrf_pyramid_skips_levels_too_small_for_the_patch_and_says_so(random_mrf, caplog):
    # the case: a 400x600 (portrait) photo at 128 px, 3 levels: the coarsest is 21x32, relu4_1 there 2x4
    settings = OptimizeSettings(steps=1, image_size=128, pyramid_levels=3, level_steps=[3, 2, 1], optimizer="adam")
    with caplog.at_level("WARNING", logger="fststyle.optimize"):
        result = optimize_image(torch.rand(1, 3, 600, 400), [torch.rand(1, 3, 96, 120)], random_mrf, settings,
                                progress=False)
    assert result.image.shape[-2:] == (128, 85)
    assert sorted({h["level"] for h in result.history}) == [1, 2]  # pyramid levels 2 and 3 ran, with 2 + 1 steps
    assert max(h["step"] for h in result.history) == 3
    (warning,) = caplog.records
    assert warning.getMessage() == ("MRF pyramid level 1 of 3 (21x32 px) skipped with its 3 steps: relu4_1 of the "
                                    "21x32 px output is 2x4, smaller than the 3x3 MRF patch")


def test_mrf_pyramid_checks_the_style_images_too(random_mrf, caplog):
    # a 4:1 panorama as the style: its copy at the 64 px level is 16 px high, relu4_1 of it only 2 px
    with caplog.at_level("WARNING", logger="fststyle.optimize"):
        result = optimize_image(torch.rand(1, 3, 64, 64), [torch.rand(1, 3, 25, 100)], random_mrf,
                                OptimizeSettings(steps=1, image_size=128, pyramid_levels=3), progress=False)
    assert {h["level"] for h in result.history} == {2}
    assert [r.getMessage().split(": ")[1] for r in caplog.records] == [
        "relu3_1 of the 32x8 px style image is 8x2, smaller than the 3x3 MRF patch",
        "relu4_1 of the 64x16 px style image is 8x2, smaller than the 3x3 MRF patch"]


def test_mrf_image_too_small_even_at_the_finest_level_is_a_user_error(random_mrf):
    with pytest.raises(UserError, match=r"image_size=20 is too small for the MRF loss: relu4_1 of the 13x20 px "
                                        r"output is 1x2, smaller than the 3x3 MRF patch; use a larger image_size"):
        optimize_image(torch.rand(1, 3, 600, 400), [torch.rand(1, 3, 96, 120)], random_mrf,
                       OptimizeSettings(steps=1, image_size=20, pyramid_levels=1), progress=False)


def test_optimize_image_leaves_the_callers_loss_and_its_targets_alone(random_vgg_loss):
    torch.manual_seed(0)
    loss = PerceptualLoss.from_config(random_vgg_loss("vgg16", {"relu2_2": 1.0}, {"relu1_2": 1.0, "relu2_2": 1.0}))
    probe, content, style = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24), torch.rand(1, 3, 20, 28)
    loss.set_style(style)
    loss.set_content(content)
    buffers = dict(loss.named_buffers())
    before = {name: float(value) for name, value in loss(probe).items()}
    settings = OptimizeSettings(steps=2, optimizer="adam", image_size=32, pyramid_levels=2, style_scale=0.5)
    other = torch.rand(1, 3, 40, 30)
    optimize_image(torch.rand(1, 3, 30, 40), [other], loss, settings, progress=False)
    optimize_image(torch.rand(1, 3, 30, 40), [other, style], loss, settings, progress=False,
                   content_masks=[torch.ones(1, 1, 30, 40), torch.zeros(1, 1, 30, 40)])
    assert {name: float(value) for name, value in loss(probe).items()} == before
    after = dict(loss.named_buffers())
    assert after.keys() == buffers.keys() and all(value is buffers[name] for name, value in after.items())
    fresh = PerceptualLoss.from_config(random_vgg_loss("vgg16", {"relu2_2": 1.0}, {"relu1_2": 1.0}))
    optimize_image(torch.rand(1, 3, 30, 40), [other], fresh, settings, progress=False)
    with pytest.raises(RuntimeError, match="set_style"):  # optimize_image set no targets on it
        fresh(probe, probe)


def test_untargeted_copy_shares_the_frozen_vgg_and_not_the_targets(random_mrf):
    gram = PerceptualLoss(random_mrf.vgg, [ContentLoss({"relu4_2": 1.0}), GramStyleLoss({"relu3_1": 1.0})])
    for loss in (random_mrf, gram):
        loss.set_style(torch.rand(1, 3, 64, 64))
        targets = dict(loss.style.named_buffers())
        copy = loss.untargeted_copy()
        assert copy.vgg is loss.vgg and type(copy.style) is type(loss.style)
        assert [id(p) for p in copy.parameters()] == [id(p) for p in loss.vgg.parameters()]  # no second VGG
        assert not dict(copy.style.named_buffers())
        copy.set_style(torch.rand(1, 3, 48, 48))
        assert all(value is targets[name] for name, value in loss.style.named_buffers())
        assert all(not torch.equal(value, targets[name]) for name, value in copy.style.named_buffers())


def test_image_pyramid_sizes_style_sizes_and_skipped_mrf_levels(random_mrf):
    settings = OptimizeSettings(steps=1, image_size=128, pyramid_levels=3, level_steps=[3, 2, 1], style_scale=0.5)
    plain = ImagePyramid(600, 400, settings)
    assert plain.sizes == [(32, 21), (64, 43), (128, 85)] and [lv.steps for lv in plain.levels] == [3, 2, 1]
    assert plain.style_size((96, 120), plain.finest) == (51, 64)  # style_scale 0.5 of the level's 128 px
    assert plain.style_size((96, 120), plain.levels[0]) == (13, 16)  # never below 16 px
    styles = plain.styles([torch.rand(1, 3, 96, 120)], plain.levels[1])
    assert styles[0].shape[-2:] == (26, 32)
    assert plain.image(torch.rand(1, 3, 600, 400), plain.finest).shape[-2:] == (128, 85)
    skipping = ImagePyramid(600, 400, dataclasses.replace(settings, style_scale=1.0), random_mrf, [(96, 120)])
    assert [lv.index for lv in skipping.levels] == [1, 2] and skipping.sizes == plain.sizes[1:]


def test_optimize_files_is_the_whole_job_from_python(random_vgg_loss, bundled_data, tmp_path):
    """No CLI and no Hydra: the library call checks the inputs, runs, and writes the image and its report."""
    from fststyle.optimize.job import optimize_files

    photo = sorted((bundled_data / "preview").glob("*.jpg"))[0]
    style = tmp_path / "starry_night.jpg"
    style.write_bytes((bundled_data / "styles" / "starry_night.jpg").read_bytes())
    engine = {"name": "gatys", "loss": random_vgg_loss(), "steps": 2, "optimizer": "adam", "image_size": 32}
    with pytest.raises(UserError, match="overwrite"):  # refused before any loss is built
        optimize_files(photo, [style], style, engine)
    assert style.read_bytes() == (bundled_data / "styles" / "starry_night.jpg").read_bytes()
    with pytest.raises(UserError, match="style_blend and content_masks exclude each other"):
        optimize_files(photo, [style], tmp_path / "o.png", engine, content_masks=[photo], style_blend=[1.0])
    with pytest.raises(UserError, match="optimize takes one photo, got 2"):
        optimize_files([photo, photo], style, tmp_path / "o.png", engine)
    assert not (tmp_path / "o.png").exists()
    run = optimize_files(photo, style, tmp_path / "out" / "o.png", engine, seed=3, progress=False)
    assert run.image == tmp_path / "out" / "o.png" and run.image.is_file()
    assert max(load_image(run.image).shape[-2:]) == 32
    report = json.loads(run.report_path.read_text())
    assert report == json.loads(json.dumps(run.report))
    assert report["engine"] == "gatys" and report["content"] == str(photo) and report["style"] == [str(style)]
    assert report["settings"]["seed"] == 3 and [h["step"] for h in report["history"]] == [0, 1, 2]
    assert report["final"] == run.result.final_terms


def test_optimize_library_errors_need_no_hydra(repo, tmp_path):
    """A user error of the library call is raised (and importable) without Hydra, OmegaConf or Lightning."""
    script = ("import sys\nfrom fststyle.errors import UserError\nfrom fststyle.optimize.job import optimize_files\n"
              "from fststyle.compare.job import compare_paths\n"
              "try:\n    optimize_files('photo.jpg', None, 'o.png', {})\nexcept UserError as error:\n    print(error)\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'lightning'}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert done.stdout.splitlines() == ["optimize needs style: e.g. fststyle optimize photo.jpg --style painting.jpg "
                                        "-o out.png (missing: --style painting.jpg)", "[]"]
