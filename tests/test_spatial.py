"""Spatial control (Gatys et al. 2017): per-region Gram matrices normalised by region size."""

import pytest
import torch

from fststyle.io.decode import load_image
from fststyle.losses import (
    ContentLoss,
    GramStyleLoss,
    PerceptualLoss,
    SpatialGramStyleLoss,
    gram_matrix,
    masked_gram_matrix,
    resize_mask,
)
from fststyle.nets.vgg import VGGFeatures
from fststyle.optimize.engine import optimize_image
from fststyle.optimize.settings import OptimizeSettings

LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}


def halves(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.zeros(1, 1, height, width)
    left[..., : width // 2] = 1
    return left, 1 - left


def test_full_mask_gives_the_plain_gram_matrix():
    features = torch.randn(2, 5, 6, 7)
    assert torch.allclose(masked_gram_matrix(features, torch.ones(1, 1, 6, 7)), gram_matrix(features), atol=1e-6)


def test_region_gram_is_normalised_by_region_size():
    torch.manual_seed(0)
    tile = torch.randn(1, 4, 4, 4)
    image = tile.repeat(1, 1, 4, 8)  # 16 x 32, a periodic texture
    small, large = torch.zeros(1, 1, 16, 32), torch.zeros(1, 1, 16, 32)
    small[..., :4, :4] = 1  # one tile
    large[..., :, :16] = 1  # 16 tiles
    assert torch.allclose(masked_gram_matrix(image, small), masked_gram_matrix(image, large), atol=1e-5)
    assert torch.allclose(masked_gram_matrix(image, small), gram_matrix(tile), atol=1e-5)


def test_masks_are_area_resized_to_each_layer():
    left, _ = halves(64, 64)
    assert torch.allclose(resize_mask(left, (8, 8)).sum(), torch.tensor(32.0))
    with pytest.raises(ValueError, match="N,1,H,W"):
        resize_mask(torch.ones(64, 64), (8, 8))


def test_single_full_mask_equals_the_gram_loss():
    vgg = VGGFeatures("vgg19", weights="random", layers=["relu3_1"])
    torch.manual_seed(0)
    style, output = torch.rand(1, 3, 48, 40), torch.rand(1, 3, 32, 32)
    plain = PerceptualLoss(vgg, [GramStyleLoss(LAYERS)])
    spatial = PerceptualLoss(vgg, [SpatialGramStyleLoss(LAYERS)])
    plain.set_style(style)
    spatial.set_style(style, content_masks=[torch.ones(1, 1, 5, 5)])
    assert torch.allclose(plain(output)["style"], spatial(output)["style"], rtol=1e-5)
    # masks come with the images (content_masks=), never from a loss config: style_loss=spatial_gram is no choice
    with pytest.raises(ValueError, match=r"unknown style_loss 'spatial_gram'; choose one of \['gram', 'mrf'\]"):
        PerceptualLoss.from_config({"network": {"weights": "random"}, "style_layers": LAYERS,
                                    "style_loss": "spatial_gram"})


def test_mask_count_must_match_the_styles():
    vgg = VGGFeatures("vgg19", weights="random", layers=["relu3_1"])
    loss = PerceptualLoss(vgg, [SpatialGramStyleLoss(LAYERS)])
    with pytest.raises(ValueError, match="one mask per style"):
        loss.set_style([torch.rand(1, 3, 32, 32)] * 2, content_masks=[torch.ones(1, 1, 8, 8)])
    with pytest.raises(ValueError, match="content_masks"):
        loss.set_style(torch.rand(1, 3, 32, 32))


def test_each_region_moves_toward_its_own_style(bundled_data):
    """Left half bound to Starry Night, right half to The Scream: each half's Gram statistics end nearer
    its own style than they started, and nearer its own style than the other one."""
    vgg = VGGFeatures("vgg19", weights="caffe", pooling="avg", layers=["relu4_2"])
    loss = PerceptualLoss(vgg, [ContentLoss({"relu4_2": 1.0}, 5.0),
                                GramStyleLoss({"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}, weight=100.0)])
    content = load_image(sorted((bundled_data / "preview").glob("*.jpg"))[0], 64)
    styles = [load_image(bundled_data / "styles" / f"{name}.jpg", 64) for name in ("starry_night", "the_scream")]
    masks = halves(*content.shape[-2:])
    result = optimize_image(content, styles, loss, OptimizeSettings(steps=15, image_size=64), content_masks=masks,
                            progress=False)

    def distance(image, region, style):
        feats, target = vgg(image, ["relu2_1"])["relu2_1"], vgg(style, ["relu2_1"])["relu2_1"]
        return float((masked_gram_matrix(feats, masks[region]) - gram_matrix(target)).square().mean())

    for region, (own, other) in enumerate([(0, 1), (1, 0)]):
        after = distance(result.image, region, styles[own])
        assert after < 0.5 * distance(content, region, styles[own])
        assert after < distance(result.image, region, styles[other])
