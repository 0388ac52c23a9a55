"""The stability term (Gupta et al. 2017): training only, logged, off by default, and it makes outputs steadier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fststyle.losses import PerceptualLoss
from fststyle.training.run import build_module


def test_weight_zero_is_the_plain_perceptual_loss(tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path, "loss.stability_weight=0", "loss.stability_noise=0.5"))
    images = torch.rand(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="self.log"):
        total = module.training_step((images, 0), 0)
    assert "stability" not in module._last_terms
    assert torch.equal(total, module.loss(module(images), images)["total"])


def test_the_term_scores_nothing_without_the_networks_perturbed_output(random_vgg_loss) -> None:
    """The optimisation engines and the comparison have no network to perturb: the total is the plain loss's."""
    plain = random_vgg_loss()
    torch.manual_seed(0)
    reference = PerceptualLoss.from_config(plain)
    torch.manual_seed(0)
    with_stability = PerceptualLoss.from_config({**plain, "stability_weight": 5.0, "stability_noise": 0.1})
    images, output = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    reference.set_style(images)
    with_stability.set_style(images)
    assert reference(output, images)["total"] == with_stability(output, images)["total"]
    assert "stability" in with_stability.terms and "stability" not in with_stability(output, images)


def test_negative_settings_are_refused_naming_the_key(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loss.stability_weight"):
        build_module(tiny_config(tmp_path, "loss.stability_weight=-1"))
    with pytest.raises(ValueError, match="loss.stability_shift"):
        build_module(tiny_config(tmp_path, "loss.stability_shift=-1"))
    with pytest.raises(ValueError, match="perturbs nothing"):
        build_module(tiny_config(tmp_path, "loss.stability_weight=1", "loss.stability_noise=0",
                                  "loss.stability_shift=0"))


class Halve(nn.Module):
    """A transformer that moves with its input exactly: images N,3,H,W -> images / 2."""

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        return images / 2


class Flip(Halve):
    """A transformer that does not move with its input: images N,3,H,W -> images mirrored left to right."""

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        return images.flip(-1)


def test_shifted_outputs_are_compared_where_they_show_the_same_scene(tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path, "loss.stability_weight=1", "loss.stability_noise=0",
                                      "loss.stability_shift=3"))
    images = torch.rand(2, 3, 40, 48)
    module.transformer = Halve()
    for _ in range(20):  # 20 random moves: each (dy, dx) lines up exactly, so the term is 0
        assert module.training_terms(images)[0]["stability"] == 0
    module.transformer = Flip()  # equal outputs only for the move (0, 0), 1 draw in 49
    assert any(module.training_terms(images)[0]["stability"] > 0 for _ in range(20))


def test_a_shift_too_large_for_the_images_is_one_line(tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path, "loss.stability_weight=1", "loss.stability_shift=12"))
    with pytest.raises(ValueError, match=r"stability_shift=12 .* 16 px .* 32x32"):
        module.training_terms(torch.rand(1, 3, 32, 32))


def _noise_sensitivity(module, images: torch.Tensor, noise: torch.Tensor) -> float:
    """Mean |output(images + noise) - output(images)|."""
    with torch.no_grad():
        return float((module((images + noise).clamp(0, 1)) - module(images)).abs().mean())


def test_training_with_the_term_makes_outputs_steadier_under_input_noise(tiny_config, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    batches = [torch.rand(2, 3, 32, 32, generator=generator) for _ in range(4)]
    held_out = torch.rand(4, 3, 32, 32, generator=generator)
    noise = torch.randn(held_out.shape, generator=generator) * 0.05
    sensitivity = {}
    for weight in (0.0, 1.0e9):
        torch.manual_seed(0)
        module = build_module(tiny_config(tmp_path, f"loss.stability_weight={weight}", "loss.stability_noise=0.05",
                                           "optimizer.lr=1e-2"))
        optimizer = module.configure_optimizers()["optimizer"]
        with pytest.warns(UserWarning, match="self.log"):
            for index, batch in enumerate(batches):
                optimizer.zero_grad()
                module.training_step((batch, 0), index).backward()
                optimizer.step()
        sensitivity[weight] = _noise_sensitivity(module, held_out, noise)
    # the ratio was 0.25 and 0.59 with seeds 1 and 2 in place of 0 and 1 (4 steps, lr 1e-2)
    assert sensitivity[1.0e9] < 0.8 * sensitivity[0.0], sensitivity
