from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fststyle.losses import (
    ContentLoss,
    GramStyleLoss,
    PerceptualLoss,
    TotalVariationLoss,
    blend_weights,
    gram_matrix,
    term_names,
    total_variation,
)
from fststyle.nets.vgg import VGGFeatures
from fststyle.training.run import train

STYLE_LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0}


def small_loss(content_weight=1.0, style_weight=1.0, tv_weight=0.0):
    vgg = VGGFeatures("vgg16", weights="random", layers=["relu3_3"])
    return PerceptualLoss(vgg, [ContentLoss({"relu2_2": 1.0}, content_weight),
                                GramStyleLoss(STYLE_LAYERS, weight=style_weight), TotalVariationLoss(tv_weight)])


def test_gram_equals_naive_loop():
    feats = torch.randn(2, 4, 3, 5)
    naive = torch.zeros(2, 4, 4)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                naive[n, i, j] = (feats[n, i] * feats[n, j]).sum() / (4 * 3 * 5)
    assert torch.allclose(gram_matrix(feats), naive, atol=1e-6)


def test_gram_is_fp32_under_half_precision():
    feats = torch.full((1, 2, 64, 64), 300.0, dtype=torch.bfloat16)
    gram = gram_matrix(feats)
    assert gram.dtype == torch.float32 and torch.allclose(gram, torch.full((1, 2, 2), 45000.0))


def test_total_variation():
    flat = torch.ones(1, 3, 8, 8)
    assert total_variation(flat) == 0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1  # every horizontal neighbour differs by 1, vertical ones by 0
    assert total_variation(stripes) == pytest.approx(1.0)


def test_blend_weights_validation():
    assert blend_weights(2, [3, 1]) == [0.75, 0.25]
    assert blend_weights(3, None) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="blend"):
        blend_weights(2, [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        blend_weights(2, [1.0, -1.0])


def test_zero_for_identical_inputs_and_named_terms():
    torch.manual_seed(0)
    loss = small_loss(content_weight=1.0, style_weight=1.0, tv_weight=0.0)
    image = torch.rand(1, 3, 32, 32)
    loss.set_style(image)
    terms = loss(image, content=image)
    assert set(terms) == {"content.relu2_2", "style.relu1_2", "style.relu2_2", "style.relu3_3",
                          "content", "style", "tv", "total"}
    assert term_names(terms) == ["content", "style", "tv", "total"]
    assert all(float(v) < 1e-10 for v in terms.values())


def test_total_is_the_sum_of_the_weighted_terms():
    torch.manual_seed(0)
    loss = small_loss(content_weight=2.0, style_weight=5.0, tv_weight=0.5)
    loss.set_style(torch.rand(1, 3, 40, 24))
    out, content = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    terms = loss(out, content=content)
    assert torch.allclose(terms["total"], terms["content"] + terms["style"] + terms["tv"])
    assert torch.allclose(terms["style"], sum(terms[f"style.{k}"] for k in STYLE_LAYERS))
    assert torch.allclose(terms["tv"], 0.5 * total_variation(out))
    unweighted = small_loss(content_weight=1.0, style_weight=1.0)
    unweighted.set_style(torch.rand(1, 3, 8, 8))
    assert torch.allclose(terms["content"], 2.0 * unweighted(out, content=content)["content"])


def test_loss_falls_when_optimising_an_image():
    torch.manual_seed(0)
    loss = small_loss(content_weight=1.0, style_weight=1e5, tv_weight=0.01)
    loss.set_style(torch.rand(1, 3, 48, 48))
    loss.set_content(torch.rand(1, 3, 32, 32))
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    optimiser = torch.optim.Adam([image], lr=0.02)
    first = {k: float(v.detach()) for k, v in loss(image).items()}
    for _ in range(20):
        optimiser.zero_grad()
        loss(image)["total"].backward()
        optimiser.step()
    last = {k: float(v.detach()) for k, v in loss(image).items()}
    assert last["total"] < 0.5 * first["total"]
    assert last["content"] < first["content"] and last["style"] < first["style"]


def test_blending_weight_one_zero_equals_the_single_style():
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 24, 40)
    single, blended = small_loss(), small_loss()
    single.set_style(a)
    blended.set_style([a, b], blend=[1.0, 0.0])
    out = torch.rand(1, 3, 32, 32)
    assert torch.allclose(single(out, content=out)["style"], blended(out, content=out)["style"])


def test_style_targets_are_not_saved_with_the_module():
    loss = small_loss()
    loss.set_style(torch.rand(1, 3, 16, 16))
    assert not any(k.startswith("style.target") for k in loss.state_dict())
    assert loss.style.target_relu1_2.shape == (1, 64, 64)


def test_clear_errors_for_missing_targets():
    loss = small_loss()
    with pytest.raises(RuntimeError, match="set_style"):
        loss(torch.rand(1, 3, 16, 16), content=torch.rand(1, 3, 16, 16))
    loss.set_style(torch.rand(1, 3, 16, 16))
    with pytest.raises(RuntimeError, match="set_content"):
        loss(torch.rand(1, 3, 16, 16))


def test_from_config_builds_the_named_network(random_vgg_loss):
    loss = PerceptualLoss.from_config(random_vgg_loss(
        "vgg19", {"relu4_2": 1.0}, {"relu1_1": 0.5, "relu5_1": 1.0}, network={"pooling": "avg"},
        content_weight=3.0, style_weight=7.0, tv_weight=0.0))
    assert loss.vgg.arch == "vgg19" and loss.vgg.names[-1] == "relu5_1"
    assert loss.style.layer_weights == {"relu1_1": 0.5, "relu5_1": 1.0}
    assert (loss.terms["content"].weight, loss.style.weight) == (3.0, 7.0)
    with pytest.raises(ValueError, match="style_loss"):
        PerceptualLoss.from_config({"style_layers": {"relu1_1": 1}, "style_loss": "nope"})


#: what a real training run logs besides ``train/<term>`` for each optional term
OPTIONAL_TERM_TAGS = {"stability": set(),
                      "histogram": {"train/histogram.relu1_1", "train/histogram.relu4_1", "val/histogram"}}


@pytest.mark.parametrize("term", sorted(OPTIONAL_TERM_TAGS))
def test_an_optional_term_is_logged_positive_and_summed_into_the_total(term, tiny_config, tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "trainer.max_steps=2", f"loss.{term}_weight=1.0e3"))
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    values = [event.value for event in events.Scalars(f"train/{term}")]
    assert len(values) == 2 and all(value > 0 for value in values)
    assert OPTIONAL_TERM_TAGS[term] <= set(events.Tags()["scalars"])
    for step in range(2):  # total = content + style + tv + the term
        parts = sum(events.Scalars(f"train/{name}")[step].value for name in ("content", "style", "tv", term))
        assert events.Scalars("train/total")[step].value == pytest.approx(parts, rel=1e-4)
