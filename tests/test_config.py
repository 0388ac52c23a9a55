"""Every option of every config group composes, and the code that reads each node accepts its keys."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf

from fststyle.bundled import config_dir
from fststyle.errors import UserError
from fststyle.losses import PerceptualLoss
from fststyle.nets.transformer import TransformerConfig
from fststyle.optimize.settings import OptimizeSettings, settings_from_config
from fststyle.training.data import StyleDataModule
from fststyle.training.settings import NetworkSettings, OptimizerSettings

CONF = config_dir()


def options(group: str) -> list[str]:
    """The selectable options of a config group (its .yaml files; sub-folders hold shared bases)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def keyword_names(function) -> set[str]:
    return set(inspect.signature(function).parameters)


TRAIN_CHOICES = [
    *[[f"transformer={o}"] for o in options("transformer")],
    *[[f"loss={o}"] for o in options("loss")],
    *[[f"data={o}"] for o in options("data")],
    *[[f"+callbacks={o}"] for o in options("callbacks")],
    # every experiment on every trainer (experiment=johnson2016 trainer=gpu and trainer=ddp included)
    *[[f"trainer={t}"] for t in options("trainer")],
    *[[f"experiment={e}", f"trainer={t}"] for e, t in itertools.product(options("experiment"), options("trainer"))],
]


@pytest.mark.parametrize("overrides", TRAIN_CHOICES, ids=" ".join)
def test_train_options_compose_into_settings_the_code_accepts(compose, overrides: list[str]) -> None:
    cfg = OmegaConf.to_container(compose("train", *overrides, "data.root=.", "run_dir=."), resolve=True)
    assert set(cfg["trainer"]) <= keyword_names(pl.Trainer.__init__), "every trainer key is a Trainer argument"
    assert set(cfg["networks"]) == {"channels_last", "compile", "compile_mode"} <= keyword_names(NetworkSettings)
    OptimizerSettings.from_config(cfg["optimizer"])
    assert set(cfg["data"]) <= keyword_names(StyleDataModule.__init__)
    TransformerConfig(**cfg["transformer"])
    loss = PerceptualLoss.from_config({**cfg["loss"], "network": {**cfg["loss"]["network"], "weights": "random"}})
    assert set(loss.terms["content"].layers) == set(cfg["loss"]["content_layers"])


def test_the_gpu_presets_turn_channels_last_on_and_cpu_leaves_it_off(compose) -> None:
    assert compose("train", "trainer=gpu").networks.channels_last
    assert compose("train", "experiment=johnson2016", "trainer=ddp").networks.channels_last
    assert not compose("train", "trainer=cpu").networks.channels_last
    assert compose("train", "trainer=ddp").trainer.strategy == "ddp"


@pytest.mark.parametrize("config_name, overrides", [
    *[("optimize", [f"engine={o}"]) for o in options("engine")],
    ("compare", []), ("compare", ["gatys.steps=3", "mrf.loss.style_weight=2"]),
])
def test_optimize_and_compare_options_compose_into_settings_the_code_accepts(compose, config_name: str,
                                                                             overrides: list[str]) -> None:
    cfg = compose(config_name, *overrides)
    for engine in [cfg.gatys, cfg.mrf] if config_name == "compare" else [cfg.engine]:
        settings_from_config(engine)  # unknown keys are a UserError
        PerceptualLoss.from_config({**engine.loss, "network": {**engine.loss.network, "weights": "random"}})


def test_solver_defaults_live_in_one_place(compose) -> None:
    """conf/engine/base/solver.yaml (which gatys and mrf extend) and OptimizeSettings agree on every default."""
    base = OmegaConf.to_container(OmegaConf.load(CONF / "engine" / "base" / "solver.yaml"))
    defaults = {f.name: f.default for f in dataclasses.fields(OptimizeSettings)}
    assert base and all(defaults[key] == value for key, value in base.items()), (base, defaults)
    gatys, mrf = compose("optimize", "engine=gatys").engine, compose("optimize", "engine=mrf").engine
    assert {k: gatys[k] for k in base} == base  # the Gatys engine is the base's settings
    assert (mrf.steps, mrf.image_size, mrf.pyramid_levels) == (100, 384, 3)  # CNNMRF's own


def test_an_unknown_compile_mode_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(UserError, match="reduce-overhead"):
        NetworkSettings(compile=True, compile_mode="fast")
