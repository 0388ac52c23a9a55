from pathlib import Path

import numpy as np
import pytest
import torch

from fststyle.bundled import bundled_path, shipped_models
from fststyle.io.decode import load_image
from fststyle.nets.transformer import (
    SATURATION_MARGIN,
    DemodulatedConv2d,
    OutputConv,
    TransformerConfig,
    TransformerNet,
    UpsampleConv,
    saturated_share,
)
from fststyle.style_model import StyleModel


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (7, 13), (64, 48), (33, 97)])
def test_output_has_exactly_the_input_size(size):
    net = TransformerNet(width=0.25, residual_blocks=1)
    out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(("norm", "upsample"), [("instance", "nearest"), ("instance", "transposed"),
                                                ("batch", "nearest"), ("batch", "transposed"),
                                                ("demodulated", "nearest")])
def test_every_option_trains(norm, upsample):
    net = TransformerNet(TransformerConfig(width=0.25, residual_blocks=2, norm=norm, upsample=upsample))
    x = torch.rand(2, 3, 20, 28)
    out = net(x)
    assert out.shape == x.shape
    out.mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_full_size_network_matches_johnson_table():
    net = TransformerNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[:3]] == [32, 64, 128]
    assert [c.kernel_size for c in (convs[0], convs[-1])] == [(9, 9), (9, 9)]
    assert len(net.residuals) == 5
    # 1.68 M parameters for the instance-norm Johnson network
    assert 1.6e6 < sum(p.numel() for p in net.parameters()) < 1.8e6


def test_width_multiplier_scales_channels():
    assert TransformerConfig(width=0.5).channels() == (16, 32, 64)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(norm="layer")
    with pytest.raises(ValueError, match="upsample"):
        TransformerConfig(upsample="bilinear")
    with pytest.raises(ValueError, match="norm=demodulated needs upsample=nearest"):
        TransformerConfig(norm="demodulated", upsample="transposed")
    with pytest.raises(ValueError, match="needs norm=instance"):
        TransformerConfig(norm="demodulated", styles=2)


@pytest.mark.parametrize(("norm", "reaches_far_pixels"), [("instance", True), ("demodulated", False)])
def test_a_local_spike_moves_far_pixels_only_through_instance_norm(norm, reaches_far_pixels):
    """The StyleGAN2 analysis (Karras et al. 2020, section 2.1): a strong spike in one corner changes instance
    norm's statistics, so the output everywhere; a demodulated network has no statistic of the data, so the
    pixels beyond the receptive field of the spike stay exactly as they were."""
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig(width=0.25, residual_blocks=1, norm=norm)).eval()
    photo = torch.rand(1, 3, 160, 160)
    spiked = photo.clone()
    spiked[..., :8, :8] = 50.0
    with torch.no_grad():
        far = (net(spiked) - net(photo))[..., 96:, 96:].abs().max()  # 88+ px away; the spike reaches 15 px past itself
    assert (float(far) > 1e-3) is reaches_far_pixels


def test_demodulated_convolutions_ignore_the_scale_of_their_weights():
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig(width=0.25, residual_blocks=1, norm="demodulated")).eval()
    photo = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        before = net(photo)
        for conv in net.modules():
            if isinstance(conv, DemodulatedConv2d):
                conv.weight.mul_(7.0)
        torch.testing.assert_close(net(photo), before, atol=1e-6, rtol=0)


def test_saturated_share_counts_pure_black_and_white_pixels_only():
    outputs = torch.full((2, 3, 2, 4), 0.5)  # 16 pixels
    outputs[0, :, 0, 0] = 0.0  # black
    outputs[0, :, 0, 1] = SATURATION_MARGIN / 2  # black to within the margin
    outputs[1, :, 1, 3] = 1.0  # white
    outputs[0, 0, 1, 1] = 0.0  # one channel pinned: a vivid colour, not a blob
    outputs[1, :, 0, 0] = 2 * SATURATION_MARGIN  # dark, but the bound's gradient still reaches it
    assert float(saturated_share(outputs)) == pytest.approx(3 / 16)


def test_a_network_pushed_into_its_bound_is_saturated_and_gets_no_gradient_there():
    net = TransformerNet(width=0.25, residual_blocks=1)
    photo = torch.rand(1, 3, 32, 32)
    assert float(saturated_share(net(photo))) < 0.01
    last_conv = next(module for module in net.modules() if isinstance(module, OutputConv))
    with torch.no_grad():
        last_conv.bias.fill_(-20.0)  # pre-tanh values near -20 everywhere
    out = net(photo)
    assert float(saturated_share(out)) == 1.0
    (out - 0.5).square().mean().backward()  # a loss that wants grey everywhere
    assert float(last_conv.bias.grad.abs().max()) < 1e-9


def test_shipped_models_paint_no_blobs():
    # The GPU models of checkpoints/README.md that were not shipped for their black and white blobs pinned
    # 1.34 % (starry_night), 3.96 % (the_scream) and 0.71 % (multistyle's udnie) of these pixels; the shipped
    # CPU models 0.00 %, 0.00 % and at most 0.32 % (udnie).
    photos = [load_image(path) for path in sorted(bundled_path("data/preview").glob("*.jpg"))]
    for name, path in shipped_models().items():
        model = StyleModel.load(path)
        for style in model.style_names:
            network = model.select(style).network
            with torch.inference_mode():
                share = sum(float(saturated_share(network(photo))) for photo in photos) / len(photos)
            assert share < 0.005, (name, style, share)


def test_shipped_style_model_loads_with_its_keys_and_gives_the_previous_output():
    # reference: checkpoints/starry_night.safetensors run by TransformerNet as of commit e159888 (before the
    # network, its fast inference form and its export copy became one), on the preview photo at 64x48
    network = StyleModel.load(bundled_path("checkpoints/starry_night.safetensors")).network
    photo = load_image(bundled_path("data/preview/000000000030.jpg"), size=(48, 64))
    reference = torch.from_numpy(np.load(Path(__file__).with_name("data") / "starry_night_photo30_48x64.npy"))
    with torch.inference_mode():
        torch.testing.assert_close(network(photo), reference, atol=1e-4, rtol=0)
        fast = network.fast_inference()(photo.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(fast, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_recorded_statistics_replace_each_inputs_own(upsample):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, residual_blocks=1, upsample=upsample).eval()
    whole, part = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        with net.recording() as statistics:
            recorded = net(whole)
        assert len(statistics) == len(net.instance_norms()) == 7  # 3 encoder, 2 residual, 2 upsampling
        torch.testing.assert_close(recorded, net(whole), atol=1e-5, rtol=0)  # recording does not change the output
        with net.reusing(statistics):
            assert net(whole).equal(recorded)  # the same statistics give the same output
            reused = net(part)
        own = net(part)
    assert (reused - own).abs().max() > 1e-3  # the part ran with the whole image's statistics, not its own


def test_fast_inference_form_is_not_used_by_training_gradients():
    net = TransformerNet(width=0.25, residual_blocks=1).fast_inference()
    net.train()
    out = net(torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last))
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("styles", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsampling_gives_the_upsample_and_convolution_output(styles, channels_last):
    """The fast form's 2x2 four-phase convolution on the small maps equals nearest 2x upsampling, reflection pad
    and the 3x3 convolution, from the same stored weights: odd sizes, a batch, blended styles, either layout."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.5, residual_blocks=2, styles=styles).eval()
    for norm in net.instance_norms():  # not the initial scale 1 and shift 0, so every channel matters
        torch.nn.init.normal_(norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    images = torch.rand(2, 3, 37, 50)
    weights = torch.tensor([[0.2, 0.5, 0.3]]) if styles > 1 else None
    with torch.inference_mode():
        reference = net(images, weights)
        net.fast_inference()
        assert [m.subpixel for m in net.modules() if isinstance(m, UpsampleConv)] == [True, True]
        fast = net(images.contiguous(memory_format=torch.channels_last) if channels_last else images, weights)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)


def test_subpixel_is_left_to_the_upsamplings_it_fits():
    transposed = TransformerNet(width=0.25, residual_blocks=1, upsample="transposed").fast_inference()
    demodulated = TransformerNet(width=0.25, residual_blocks=1, norm="demodulated").fast_inference()
    for net in (transposed, demodulated):
        assert not any(m.subpixel for m in net.modules() if isinstance(m, UpsampleConv))
