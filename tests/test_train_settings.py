"""The training settings dataclasses: each group checked once with a one-line UserError, and their plain form
(a checkpoint's hyper-parameters) read back."""

from __future__ import annotations

import pytest

from fststyle.errors import UserError
from fststyle.training.finetune import FinetuneSettings
from fststyle.training.settings import OptimizerSettings, StyleSettings, TrainingSettings


@pytest.mark.parametrize(("settings", "message"), [
    ({"schedule": "linear"}, "optimizer.schedule must be one of none, cosine, step, got 'linear'"),
    ({"schedule": "step"}, "optimizer.schedule=step needs optimizer.step_size >= 1"),
    ({"adaptive_clip": 0.5}, "optimizer.adaptive_clip must be 0 \\(off\\) or at least 1"),
    ({"adaptive_clip": -1}, "optimizer.adaptive_clip must be 0 \\(off\\) or at least 1"),
    ({"bound_gradient_floor": 0.6}, "optimizer.bound_gradient_floor must be from 0 \\(off\\) to 0.5"),
    ({"momentum": 0.9}, "optimizer.momentum is not a setting; optimizer takes lr, schedule"),
])
def test_optimizer_settings_refuse_in_one_line(settings, message) -> None:
    with pytest.raises(UserError, match=message) as error:
        OptimizerSettings.from_config(settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("names", "message"), [
    (("a",), "style_names= has 1 names for 2 style images"),
    (("a", "a"), "two style images share the style name 'a'"),
    (("a", "b/c"), "style_names= 'b/c' is not a style name"),
])
def test_style_settings_check_the_names(names, message) -> None:
    with pytest.raises(UserError, match=message):
        StyleSettings("a+b", ("a.jpg", "b.jpg"), names=names)


def test_settings_round_trip_through_plain_hyperparameters(repo) -> None:
    cfg = {"style": [str(repo / "data/styles/udnie.jpg")], "style_mode": "multi", "style_names": "painting",
           "style_size": 64, "transformer": {"width": 0.5}, "loss": {"style_layers": {"relu1_2": 1.0}},
           "data": {"image_size": 128}, "optimizer": {"lr": 2e-3, "schedule": "cosine"},
           "networks": {"channels_last": True}}
    finetune = FinetuneSettings("base.safetensors", (("starry_night", 40000),))
    settings = TrainingSettings.from_config(cfg, finetune)
    assert settings.transformer.styles == 2 and settings.frozen_styles == 1
    assert settings.network_style_names == ["starry_night", "painting"] and settings.style.name == "starry_night+painting"
    hparams = settings.to_hparams()
    assert hparams["finetune"] == {"from": "base.safetensors", "styles": [{"name": "starry_night", "steps": 40000}]}
    assert hparams["style"]["names"] == ["painting"] and hparams["optimizer"]["lr"] == 2e-3
    assert TrainingSettings.from_hparams(hparams) == settings
