"""The histogram term (Risser, Wilmot & Barnes 2017): exact matching by sorting, blended targets, off by default,
and usable by both engines: a real training run logs it, and a Gatys run with it ends nearer the style's
per-channel histograms than one without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fststyle.bundled import config_dir
from fststyle.cli import jobs
from fststyle.cli.arguments import prepare_command_line
from fststyle.cli.config import setting_descriptions
from fststyle.io.decode import load_image
from fststyle.losses import HistogramLoss, PerceptualLoss, match_histograms, sorted_mixture, term_names
from fststyle.nets.vgg import VGGFeatures
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.settings import build_loss, settings_from_config
from fststyle.training.run import build_module


def test_matching_keeps_each_channels_order_and_takes_the_targets_values() -> None:
    features = torch.randn(2, 3, 4, 5)
    target = torch.randn(3, 20).sort(dim=1).values
    matched = match_histograms(features, target)
    flat, matched_flat = features.flatten(2), matched.flatten(2)
    assert torch.equal(matched_flat.sort(dim=2).values, target.expand(2, 3, 20))  # same count: exactly its values
    assert torch.equal(matched_flat.argsort(dim=2), flat.argsort(dim=2))  # the ranks are the features' own


def test_a_target_of_another_count_is_interpolated_at_the_same_quantiles() -> None:
    target = torch.tensor([[0.0, 1.0, 2.0, 3.0]])  # quantiles 1/8, 3/8, 5/8, 7/8
    matched = match_histograms(torch.tensor([[[[5.0, -5.0]]]]), target)  # quantiles 1/4 and 3/4
    assert matched.flatten().tolist() == [2.5, 0.5]
    ends = match_histograms(torch.arange(8.0).view(1, 1, 2, 4), target).flatten()
    assert ends[0] == 0.0 and ends[-1] == 3.0  # quantiles beyond the target's first and last: its ends


def test_blended_targets_are_the_mixture_of_the_style_histograms() -> None:
    a, b = torch.rand(2, 6), torch.rand(2, 6) + 1
    assert torch.equal(sorted_mixture([a], [1.0]), a.sort(dim=1).values)
    assert torch.equal(sorted_mixture([a, b], [1.0, 0.0]), a.sort(dim=1).values)  # weight 0 drops a style
    assert torch.equal(sorted_mixture([a, b], [0.5, 0.5]), torch.cat([a, b], dim=1).sort(dim=1).values)
    zeros, ones = torch.zeros(1, 4), torch.ones(1, 4)
    assert sorted_mixture([zeros, ones], [0.75, 0.25]).tolist() == [[0.0] * 6 + [1.0] * 2]


def test_the_style_scores_zero_against_itself_and_gradients_reach_the_image() -> None:
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", weights="random", layers=["relu2_1"])
    loss = PerceptualLoss(vgg, [HistogramLoss({"relu1_1": 1.0, "relu2_1": 0.5}, weight=3.0)])
    style = torch.rand(1, 3, 24, 32)
    loss.set_style(style)
    terms = loss(style)
    assert list(terms) == ["histogram.relu1_1", "histogram.relu2_1", "histogram", "total"]
    assert float(terms["total"]) == 0.0
    image = torch.rand(1, 3, 20, 20, requires_grad=True)
    loss(image)["histogram"].backward()
    assert image.grad is not None and image.grad.abs().sum() > 0 and torch.isfinite(image.grad).all()


def test_off_by_default_and_a_term_of_its_own_when_on(random_vgg_loss) -> None:
    settings = random_vgg_loss("vgg16", {"relu2_2": 1.0}, {"relu1_2": 1.0}, tv_weight=0.5,
                               histogram_layers={"relu1_1": 1.0, "relu4_1": 1.0})
    image, style = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 36)
    off = PerceptualLoss.from_config({**settings, "histogram_weight": 0.0})
    off.set_style(style)
    assert "histogram" not in off.terms and term_names(off(image, image)) == ["content", "style", "tv", "total"]
    assert off.vgg.names[-1] == "relu2_2"  # no VGG layer is run for a term that is off
    on = PerceptualLoss.from_config({**settings, "histogram_weight": 2.0})
    on.set_style(style)
    terms = on(image, image)
    assert term_names(terms) == ["content", "style", "tv", "histogram", "total"]
    assert torch.allclose(terms["histogram"], terms["histogram.relu1_1"] + terms["histogram.relu4_1"])
    assert torch.allclose(terms["total"], terms["content"] + terms["style"] + terms["tv"] + terms["histogram"])
    with pytest.raises(ValueError, match="histogram_weight must be >= 0"):
        PerceptualLoss.from_config({**settings, "histogram_weight": -1.0})
    with pytest.raises(ValueError, match="histogram loss needs at least one layer"):
        PerceptualLoss.from_config({**settings, "histogram_weight": 1.0, "histogram_layers": {}})


def test_several_styles_in_one_network_each_get_their_own_histogram_targets(repo, tiny_config,
                                                                            tmp_path: Path) -> None:
    paths = [repo / "data/styles/the_scream.jpg", repo / "data/styles/udnie.jpg"]
    module = build_module(tiny_config(tmp_path, f"style=[{paths[0]},{paths[1]}]", "style_mode=multi",
                                      "loss.histogram_weight=1.0e3"))
    first, second = (terms["histogram"].target_relu1_1 for terms in module.style_terms)
    assert not torch.equal(first, second)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        terms = module.loss_terms(module(images, module.style_weights([0, 1])), images, [0, 1])
    assert {"the_scream/histogram", "udnie/histogram", "histogram"} <= set(terms)
    assert torch.allclose(terms["histogram"], (terms["the_scream/histogram"] + terms["udnie/histogram"]) / 2)


@pytest.fixture(scope="module")
def gatys_inputs(bundled_data) -> tuple[torch.Tensor, torch.Tensor]:
    return (load_image(sorted((bundled_data / "preview").glob("*.jpg"))[0], 64),
            load_image(bundled_data / "styles" / "starry_night.jpg", 64))


def test_gatys_with_the_term_ends_nearer_the_styles_histograms(compose, gatys_inputs) -> None:
    """The same 20 L-BFGS steps at 64 px from the same start, with the term off and on. relu4_1's raw histogram
    term is about 70x relu1_1's on these images (Caffe VGG-19), so relu1_1 gets 50x the layer weight."""
    photo, style = gatys_inputs
    quantiles = torch.linspace(0.01, 0.99, 99)

    def histogram_distance(image: torch.Tensor, vgg: VGGFeatures, layer: str | None) -> float:
        """Mean |difference| of 99 quantiles of each channel (of VGG ``layer``, or of RGB), image vs style."""
        ours, theirs = ((vgg(x, [layer])[layer] if layer else x)[0].flatten(1) for x in (image, style))
        return float((torch.quantile(ours, quantiles, dim=1) - torch.quantile(theirs, quantiles, dim=1)).abs().mean())

    distances = {}
    for weight in (0, 20):
        engine = compose("optimize", "engine=gatys", "engine.steps=20", "engine.image_size=64",
                         f"engine.loss.histogram_weight={weight}", "engine.loss.histogram_layers.relu1_1=50").engine
        loss = build_loss(engine)
        result = optimize_image(photo, [style], loss, settings_from_config(engine), progress=False)
        assert ("histogram" in result.final_terms) == (weight > 0)
        with torch.no_grad():
            distances[weight] = {layer: histogram_distance(result.image, loss.vgg, layer)
                                 for layer in ("relu1_1", "relu4_1", None)}
    # measured: relu1_1 5.1 -> 3.3, relu4_1 46 -> 42, RGB 0.064 -> 0.044
    for layer, off in distances[0].items():
        assert distances[20][layer] < 0.95 * off, (layer or "RGB", distances)


def test_fststyle_optimize_takes_the_term_from_its_config(compose, bundled_data, tmp_path: Path) -> None:
    output = tmp_path / "out.png"
    jobs.optimize(compose("optimize", "engine=gatys", "engine.steps=2", "engine.image_size=48",
                          "engine.loss.histogram_weight=20",
                          f"input={sorted((bundled_data / 'preview').glob('*.jpg'))[0]}",
                          f"style={bundled_data / 'styles' / 'udnie.jpg'}", f"output={output}"))
    final = json.loads(output.with_suffix(".json").read_text())["final"]
    assert final["histogram"] > 0 and {"histogram.relu1_1", "histogram.relu4_1"} <= set(final)


def test_masks_are_refused_with_the_term_on(random_vgg_loss) -> None:
    loss = PerceptualLoss.from_config(random_vgg_loss("vgg19", style_layers={"relu3_1": 1.0},
                                                      histogram_weight=1.0, histogram_layers={"relu1_1": 1.0}))
    with pytest.raises(ValueError, match=r"histogram term; set its weight to 0"):
        optimize_image(torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], loss, settings_from_config({"steps": 1}),
                       content_masks=[torch.ones(1, 1, 32, 32)], progress=False)


def test_the_command_line_takes_its_layer_map_whole_and_help_describes_it(compose) -> None:
    argv = prepare_command_line(["optimize.py", "engine.loss.histogram_layers={relu2_1: 1.0}"], config_dir(),
                                "optimize")
    layers = OmegaConf.select(compose("optimize", *argv[1:]), "engine.loss.histogram_layers")
    assert OmegaConf.to_container(layers) == {"relu2_1": 1.0}  # not merged into the default relu1_1, relu4_1
    for job, prefix in (("train", "loss"), ("optimize", "engine.loss"), ("compare", "gatys.loss")):
        described = {key: text for key, _, text in setting_descriptions(job)}
        assert "Risser et al. 2017" in described[f"{prefix}.histogram_layers"], job
        assert "0 = off" in described[f"{prefix}.histogram_weight"], job
