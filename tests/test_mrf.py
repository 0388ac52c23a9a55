"""MRF style loss (Li & Wand 2016): patch extraction, nearest-patch matching, augmentation, the loss itself."""

import math

import pytest
import torch

from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.losses import (
    STYLE_LOSSES,
    MRFStyleLoss,
    PerceptualLoss,
    augmented_styles,
    extract_patches,
    nearest_patches,
    normalise_patches,
)
from fststyle.losses.mrf import augmented_sizes
from fststyle.nets.vgg import VGGFeatures

LAYERS = {"relu3_1": 1.0, "relu4_1": 1.0}


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return VGGFeatures("vgg19", weights="caffe", layers=["relu4_2"])


@pytest.fixture(scope="module")
def style(bundled_data) -> torch.Tensor:
    return load_image(bundled_data / "styles" / "starry_night.jpg", 96)


@pytest.fixture(scope="module")
def photo(bundled_data) -> torch.Tensor:
    return load_image(sorted((bundled_data / "preview").glob("*.jpg"))[0], 96)


def test_extract_patches_matches_slicing():
    features = torch.randn(1, 4, 6, 7)
    patches = extract_patches(features, 3, stride=2)
    assert patches.shape == (2 * 3, 4, 3, 3)  # rows 0,2 x columns 0,2,4
    assert torch.equal(patches[0], features[0, :, 0:3, 0:3])
    assert torch.equal(patches[4], features[0, :, 2:5, 2:5])
    with pytest.raises(ValueError, match="smaller than the 3x3"):
        extract_patches(torch.randn(1, 4, 2, 9), 3)


def test_nearest_patch_is_the_brute_force_best_normalised_correlation():
    torch.manual_seed(0)
    bank = torch.randn(50, 8, 3, 3)
    features = torch.randn(2, 8, 7, 9)
    found = nearest_patches(features, normalise_patches(bank), stride=1)
    queries = extract_patches(features, 3).flatten(1)  # (2*P), D, image-major
    scores = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank.flatten(1), dim=1).T
    assert torch.equal(found.flatten(), scores.argmax(dim=1))


def test_chunked_and_unchunked_matching_agree(vgg, style, photo):
    features = vgg(photo, ["relu3_1"])["relu3_1"]
    bank = normalise_patches(extract_patches(vgg(style, ["relu3_1"])["relu3_1"], 3, 2))
    whole = nearest_patches(features, bank, stride=1, chunk_size=None)
    for chunk in (1, 37, bank.shape[0] - 1):
        assert torch.equal(nearest_patches(features, bank, stride=1, chunk_size=chunk), whole)


def test_the_style_matches_itself_exactly(vgg, style):
    mrf = MRFStyleLoss(LAYERS, stride=1, style_stride=1, chunk_size=100)
    loss = PerceptualLoss(vgg, [mrf])
    loss.set_style(style)
    features = vgg(style, ["relu3_1"])["relu3_1"]
    index = nearest_patches(features, mrf.unit_bank_relu3_1, stride=1, chunk_size=100)
    patches = extract_patches(features, 3)
    assert torch.allclose(mrf.bank_relu3_1[index[0]], patches)  # exact copies (ties are identical patches)
    assert float(loss(style)["style"]) < 1e-8
    photo_loss = float(loss(torch.rand_like(style))["style"])
    assert photo_loss > 1.0, "a different image must score far from zero"


def test_gradient_flows_to_the_image_but_not_through_matching(vgg, style, photo):
    loss = PerceptualLoss(vgg, [MRFStyleLoss(LAYERS, stride=2, style_stride=2)])
    loss.set_style(style)
    image = photo.clone().contiguous().requires_grad_(True)
    loss(image)["style"].backward()
    assert image.grad is not None and image.grad.abs().sum() > 0 and torch.isfinite(image.grad).all()


def test_registered_for_loss_configs_and_blend_rules(style, photo):
    assert STYLE_LOSSES["mrf"] is MRFStyleLoss
    config = {"network": {"arch": "vgg19", "weights": "caffe"}, "content_layers": {"relu4_2": 1.0},
              "style_layers": {"relu3_1": 1.0}, "style_loss": "mrf", "mrf": {"stride": 2, "style_stride": 3}}
    loss = PerceptualLoss.from_config(config)
    assert isinstance(loss.style, MRFStyleLoss) and loss.style.style_stride == 3
    loss.set_style([style, photo], [1, 0])  # weight 0 drops a style: the bank is the first image's alone
    alone = PerceptualLoss.from_config(config)
    alone.set_style(style)
    assert torch.equal(loss.style.bank_relu3_1, alone.style.bank_relu3_1)
    loss.set_style([style, photo])  # equal weights pool both banks
    assert loss.style.bank_relu3_1.shape[0] > alone.style.bank_relu3_1.shape[0]
    with pytest.raises(ValueError, match="equal blend weights"):
        loss.set_style([style, photo], [0.7, 0.3])


def test_rotated_and_scaled_copies():
    image = torch.rand(1, 3, 40, 60)
    copies = augmented_styles(image, rotations=1, scales=1)
    assert len(copies) == 9
    assert torch.equal(copies[4], image)  # the middle copy is the original
    assert copies[3].shape[-2:] == (38, 57)  # 1.05^-1
    rotated = copies[1]
    assert rotated.shape[-1] < 60 and rotated.shape[-2] < 40
    # the crop leaves no empty (zero) corners from the rotation
    assert rotated[..., 0, 0].abs().sum() > 0 and rotated[..., -1, -1].abs().sum() > 0
    assert math.isclose(MRFStyleLoss(LAYERS).rotation_step, math.pi / 24)


def test_augmentation_enlarges_the_bank(vgg, style):
    plain = MRFStyleLoss({"relu3_1": 1.0}, style_stride=2)
    augmented = MRFStyleLoss({"relu3_1": 1.0}, style_stride=2, rotations=1)
    for mrf in (plain, augmented):
        PerceptualLoss(vgg, [mrf]).set_style(style)
    assert augmented.bank_relu3_1.shape[0] > 2 * plain.bank_relu3_1.shape[0]


def test_feature_sizes_and_copy_sizes_are_computed_without_running_anything():
    random_vgg = VGGFeatures("vgg19", weights="random", layers=["relu4_1"])
    for height, width in [(21, 32), (37, 61), (8, 8)]:
        features = random_vgg(torch.rand(1, 3, height, width), ["relu1_1", "relu3_1", "relu4_1"])
        for layer, tensor in features.items():
            assert random_vgg.feature_size(layer, height, width) == tuple(tensor.shape[-2:]), (layer, height, width)
    image = torch.rand(1, 3, 40, 61)
    copies = augmented_styles(image, rotations=2, scales=1)
    assert augmented_sizes(40, 61, rotations=2, scales=1) == [tuple(c.shape[-2:]) for c in copies]


def test_too_small_feature_maps_are_user_errors_that_name_the_layer():
    random_vgg = VGGFeatures("vgg19", weights="random", layers=["relu4_1"])
    loss = PerceptualLoss(random_vgg, [MRFStyleLoss(LAYERS)])
    with pytest.raises(UserError, match=r"relu4_1 of the style image is 4x2, smaller than the 3x3 MRF patch.*"
                                        r"use a larger image_size or style_scale"):
        loss.set_style(torch.rand(1, 3, 21, 32))  # 21 px high: relu4_1 is 2 high
    loss.set_style(torch.rand(1, 3, 32, 32))
    with pytest.raises(UserError, match=r"relu4_1 of the output is 4x2, smaller than the 3x3 MRF patch: the image "
                                        r"is too small for the MRF loss; use a larger image_size"):
        loss(torch.rand(1, 3, 21, 32))
    assert loss.style.size_problem(random_vgg, (21, 32), [(32, 32)]) == \
        "relu4_1 of the 32x21 px output is 4x2, smaller than the 3x3 MRF patch"
    assert loss.style.size_problem(random_vgg, (32, 32), [(32, 32)]) is None
