import torch

from fststyle.color import match_luminance, preserve_colors, rgb_to_yiq, yiq_to_rgb


def test_yiq_round_trip():
    x = torch.rand(2, 3, 8, 9)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)


def test_preserve_colors_keeps_chroma_and_takes_luminance():
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    stylised = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    out = preserve_colors(stylised, photo)
    assert torch.allclose(rgb_to_yiq(out)[:, 1:], rgb_to_yiq(photo)[:, 1:], atol=1e-4)
    assert torch.allclose(rgb_to_yiq(out)[:, :1], rgb_to_yiq(stylised)[:, :1], atol=1e-4)


def test_match_luminance_moments():
    style = torch.rand(1, 3, 20, 20) * 0.3
    content = torch.rand(1, 3, 10, 12) * 0.6 + 0.2
    grey = match_luminance(style, content)
    y, yc = rgb_to_yiq(grey)[:, 0], rgb_to_yiq(content)[:, 0]
    assert grey.shape == style.shape
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert abs(float(y.mean() - yc.mean())) < 1e-3 and abs(float(y.std() - yc.std())) < 1e-2
