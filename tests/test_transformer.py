import pytest
import torch

from fststyle.transformer import TransformerConfig, TransformerNet


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (7, 13), (64, 48), (33, 97)])
def test_output_has_exactly_the_input_size(size):
    net = TransformerNet(width=0.25, residual_blocks=1)
    out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
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
