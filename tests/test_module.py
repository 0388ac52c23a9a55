"""StyleTransferModule with a real Lightning Trainer on the bundled sample (tiny images, random VGG)."""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import OnExceptionCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fststyle.io.decode import load_image
from fststyle.nets.vgg import VGGFeatures
from fststyle.style_model import StyleModel
from fststyle.training.data import StyleDataModule
from fststyle.training.module import NonFiniteLossError, StyleTransferModule
from fststyle.training.run import build_module, train

HALVE_LR_EVERY_2_STEPS = ["optimizer.schedule=step", "optimizer.step_size=2", "optimizer.gamma=0.5"]


@pytest.fixture(scope="module")
def tiny_run(tiny_config, tmp_path_factory: pytest.TempPathFactory):
    """One 4-step training run (checkpoints and previews every 2 steps; LR halved every 2 steps)."""
    return train(tiny_config(tmp_path_factory.mktemp("run"), "trainer.max_steps=4", *HALVE_LR_EVERY_2_STEPS))


def test_a_fresh_run_logs_no_lightning_noise_and_a_rerun_says_it_resumes(tiny_config, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Lightning's two ckpt_path warnings, its cloud-logger tip and its note on checkpoints saved without
    ``weights_only`` are noise we cause; resuming is said aloud."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        train(tiny_config(tmp_path, "trainer.max_steps=2"))
    said = [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]
    assert not [line for line in said if "ckpt_path" in line or "litlogger" in line or "weights_only" in line], said
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(tiny_config(tmp_path, "trainer.max_steps=4"))
    assert any(record.getMessage().startswith(f"Resuming from {tmp_path / 'checkpoints' / 'last.ckpt'}")
               for record in caplog.records), caplog.text


def test_transformer_gets_gradients_and_vgg_none(tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path))
    images = torch.rand(2, 3, 32, 32)
    output = module(images)
    assert output.shape == images.shape and 0 <= output.min() and output.max() <= 1
    terms = module.loss(output, images)
    assert {"content.relu2_2", "style.relu1_2", "style.relu4_3", "content", "style", "tv", "total"} <= set(terms)
    terms["total"].backward()
    grads = [p.grad for p in module.transformer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None and not p.requires_grad for p in module.loss.vgg.parameters())


def test_hyperparameters_are_plain_containers(tiny_config, tmp_path: Path) -> None:
    hparams = dict(build_module(tiny_config(tmp_path)).hparams)

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert {"transformer", "loss", "style", "image_size", "optimizer"} <= set(hparams)
    assert plain(hparams), hparams
    assert hparams["style"]["name"] == "the_scream" and hparams["optimizer"]["lr"] == 1e-3


def test_blended_styles_name_the_model(repo, tiny_config, tmp_path: Path) -> None:
    styles = [repo / "data/styles/the_scream.jpg", repo / "data/styles/udnie.jpg"]
    module = build_module(tiny_config(tmp_path, f"style=[{styles[0]},{styles[1]}]", "style_blend=[3,1]"))
    assert module.hparams.style["name"] == "the_scream+udnie" and module.hparams.style["blend"] == [3, 1]
    assert len(module.style_images) == 2 and max(module.style_images[1].shape[-2:]) == 32


def test_missing_style_image_names_the_file(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="style image not found: .*nowhere.jpg"):
        build_module(tiny_config(tmp_path, "style=nowhere.jpg"))


def test_vgg_stays_frozen_and_in_eval_after_fit(tiny_run) -> None:
    vgg = tiny_run.module.loss.vgg
    assert not vgg.training
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    fresh = VGGFeatures("vgg16", weights="random", layers=["relu4_3"])
    assert all(torch.equal(a, b) for a, b in zip(vgg.state_dict().values(), fresh.state_dict().values(), strict=True))
    assert tiny_run.module.transformer.training  # the trained network itself was in train mode


def test_checkpoint_has_no_vgg_and_loads_weights_only(tiny_run) -> None:
    last = tiny_run.run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**2)
    assert checkpoint["state_dict"] and not [k for k in checkpoint["state_dict"] if k.startswith("loss.")]
    # strict loading works: the module puts its own VGG weights back before the state dict loads
    restored = StyleTransferModule.load_from_checkpoint(last, map_location="cpu")
    for name, value in tiny_run.module.transformer.state_dict().items():
        assert torch.equal(restored.transformer.state_dict()[name], value), name


def test_a_checkpoint_of_the_module_before_it_took_built_objects_still_loads(tiny_run, tmp_path: Path) -> None:
    """Checkpoints written when the module built its own network and loss from plain dicts (until 2026-12) hold
    a partial transformer mapping and the optimiser defaults of that time: they load, resume and export alike."""
    checkpoint = torch.load(tiny_run.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    checkpoint["hyper_parameters"] = {  # as fststyle's StyleTransferModule.__init__ saved them then
        "transformer": {"width": 0.25, "residual_blocks": 5, "norm": "instance", "upsample": "nearest", "styles": 1},
        "loss": hparams["loss"], "style": {k: hparams["style"][k] for k in ("name", "paths", "blend", "size")},
        "image_size": 32, "optimizer": {"lr": 1e-3, "schedule": "step", "adaptive_clip": 0.0,
                                        "bound_gradient_floor": 0.05, "min_lr": 0.0, "step_size": 2, "gamma": 0.5},
        "channels_last": False, "compile": False, "compile_mode": "default", "finetune": None}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    restored = StyleTransferModule.load_from_checkpoint(old, map_location="cpu")
    for name, value in tiny_run.module.transformer.state_dict().items():
        assert torch.equal(restored.transformer.state_dict()[name], value), name
    assert restored.settings.optimizer.step_size == 2 and restored.hparams.style["name"] == "the_scream"
    model = StyleModel.load(old)
    images = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model.network(images), tiny_run.module.transformer.eval()(images))


def test_tensorboard_holds_preview_and_loss_terms(tiny_run) -> None:
    events = EventAccumulator(str(tiny_run.run_dir))
    events.Reload()
    assert "preview" in events.Tags()["images"]
    assert {image.step for image in events.Images("preview")} == {0, 2, 4}
    scalars = set(events.Tags()["scalars"])
    expected = {"train/total", "train/content", "train/style", "train/content.relu2_2", "train/style.relu1_2",
                "train/style.relu4_3", "train/tv", "val/total", "val/style.relu3_3", "lr-Adam",
                "train/saturated", "val/saturated"}
    assert expected <= scalars, expected - scalars
    assert all(0 <= event.value <= 1 for tag in ("train/saturated", "val/saturated") for event in events.Scalars(tag))
    assert "train/stability" not in scalars  # the stability term is off by default (loss.stability_weight=0)
    assert sorted(p.name for p in (tiny_run.run_dir / "previews").iterdir()) == [
        "step_000000.png", "step_000002.png", "step_000004.png"]


def test_exported_model_matches_module_bit_for_bit(tiny_run) -> None:
    assert tiny_run.model_path == tiny_run.run_dir / "the_scream.safetensors"
    model = StyleModel.load(tiny_run.model_path)
    loaded, info = model.network, model.metadata
    module = tiny_run.module.transformer.eval()
    images = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(images), module(images))
    assert info["steps"] == 4 and info["style"]["name"] == "the_scream"
    assert info["loss"]["network"]["weights"] == "random"


@pytest.mark.parametrize("where", ["checkpoints/last.ckpt", "", "checkpoints"])
def test_resume_continues_step_and_optimizer_state(tiny_config, tiny_run, tmp_path: Path, where: str) -> None:
    """ckpt_path= names last.ckpt, the run directory, or its checkpoints/ folder (both: their last.ckpt)."""
    resume = tiny_run.run_dir / where
    resumed = train(tiny_config(tmp_path, "trainer.max_steps=6", f"ckpt_path={resume}", *HALVE_LR_EVERY_2_STEPS))
    assert resumed.global_step == 6
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    adam = checkpoint["optimizer_states"][0]["state"]
    assert all(int(state["step"]) == 6 for state in adam.values())  # 4 restored + 2 new Adam steps
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**3)


class PoisonWeightsAt(pl.Callback):
    """Sets the transformer's output bias to NaN before the batch of ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            pl_module.transformer.decoder[-1][1].bias.data.fill_(float("nan"))


def test_non_finite_loss_stops_naming_the_step(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    trainer = pl.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, default_root_dir=tmp_path, callbacks=[PoisonWeightsAt(3)])
    module = build_module(cfg)
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        trainer.fit(module, datamodule=StyleDataModule.from_config(cfg["data"]))
    assert trainer.global_step == 3  # no optimiser step ran on the non-finite loss


def test_last_checkpoint_is_lightnings_on_exception_checkpoint(tiny_run) -> None:
    """last.ckpt on a signal comes from Lightning's OnExceptionCheckpoint, and survives fit's teardown."""
    savers = [c for c in tiny_run.module.trainer.callbacks if isinstance(c, OnExceptionCheckpoint)]
    assert [saver.ckpt_path for saver in savers] == [str(tiny_run.run_dir / "checkpoints" / "last.ckpt")]
    assert Path(savers[0].ckpt_path).is_file()


def test_non_finite_loss_keeps_the_last_good_checkpoint(tiny_config, tmp_path: Path) -> None:
    """A NaN at step 3 stops train(); last.ckpt stays the finite one of step 2 (not overwritten on the error)."""
    cfg = tiny_config(tmp_path, "trainer.max_steps=5", "+callbacks.poison._target_=tests.test_module.PoisonWeightsAt",
                      "+callbacks.poison.step=3")
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def png_bytes(pixels: np.ndarray) -> bytes:
    """H,W,3 uint8 pixels as a PNG file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


#: the only parameters a uniform image's output depends on: the last norm's shift and the output convolution
AFTER_LAST_NORM = {"decoder.1.conv.2.bias", "decoder.2.1.weight", "decoder.2.1.bias"}


def test_uniform_image_gradients_are_exact_and_finite(repo, tiny_config, tmp_path: Path) -> None:
    """A uniform image makes every map of the network constant; instance norm's backward multiplies by
    1/sqrt(eps) = 316 at each of its 15 layers, which overflowed to NaN (or left 1e29-sized garbage) in the
    first convolution's gradient. Its true gradient there is zero, and a photo beside it must keep its own."""
    module = build_module(tiny_config(tmp_path))
    photo = load_image(repo / "data/preview/000000000030.jpg", (32, 32))
    uniform = torch.cat([torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 0.6)])

    def gradients(images: torch.Tensor) -> dict[str, torch.Tensor]:
        module.zero_grad()
        module.loss(module(images), images)["total"].backward()
        return {name: p.grad.clone() for name, p in module.transformer.named_parameters()}

    alone = gradients(uniform)
    assert all(torch.isfinite(g).all() for g in alone.values())
    assert {name for name, g in alone.items() if g.any()} <= AFTER_LAST_NORM
    # the loss is a mean over the batch, so with one photo among three its gradient is a third of its own; in
    # float64, as float32 sums differ with the batch size by up to 1e-3 of this gradient through 15 norms
    module.double()
    photo, uniform = photo.double(), uniform.double()
    with_photo, photo_only = gradients(torch.cat([photo, uniform])), gradients(photo)
    upstream = sorted(set(photo_only) - AFTER_LAST_NORM)
    mixed = torch.cat([with_photo[name].flatten() * 3 for name in upstream])
    expected = torch.cat([photo_only[name].flatten() for name in upstream])
    assert torch.linalg.vector_norm(mixed - expected) <= 1e-4 * torch.linalg.vector_norm(expected)


def test_training_on_a_folder_with_a_black_image_stays_finite(repo, tiny_config, coco_folder, tmp_path: Path) -> None:
    """Three photos and an all-black 400x400 PNG (a blank frame): every loss, weight and Adam moment stays finite."""
    photos = {p.name: p.read_bytes() for p in sorted((repo / "data/preview").iterdir())[:3]}
    root = coco_folder(tmp_path / "coco", {**photos, "black.png": png_bytes(np.zeros((400, 400, 3), np.uint8))})
    result = train(tiny_config(tmp_path / "run", f"data.root={root}", "trainer.max_steps=4",
                               "trainer.val_check_interval=4"))
    assert result.global_step == 4  # 2 epochs of 2 batches: the black image was in 2 of them
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    totals = [event.value for event in events.Scalars("train/total")]
    assert len(totals) == 4 and all(math.isfinite(value) for value in totals)
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    adam = checkpoint["optimizer_states"][0]["state"]
    assert all(torch.isfinite(moment).all() for state in adam.values() for moment in state.values())
