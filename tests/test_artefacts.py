"""Blobs and hatching: the figures, the training remedies (adaptive clipping, the bound's gradient floor, scale
and flip augmentation) and the artefact guard in real training runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from fststyle.artefacts import blob_share, hatching
from fststyle.errors import UserError
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import ModelFileError, StyleModel
from fststyle.training.data import ImageFolderImages
from fststyle.training.guard import HEALTHY_CHECKPOINT
from fststyle.training.run import build_module, train


def grey(size: int = 32, value: float = 0.5) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


def test_blob_share_counts_solid_patches_the_photo_lacks() -> None:
    output = grey()
    output[..., 10:22, 10:22] = 0.0  # a 12x12 black square: 4x4 centres whose whole 9x9 patch is black
    assert float(blob_share(output, grey())[0]) == pytest.approx(16 / 32**2)
    assert float(blob_share(output, grey(value=0.02))[0]) == 0.0  # the photo is dark there too: no blob
    thin = grey()
    thin[..., :, 10:18] = 1.0  # an 8 px white stripe: thinner than a blob
    assert float(blob_share(thin, grey())[0]) == 0.0


def test_hatching_is_the_mesh_over_flat_photo_areas() -> None:
    mesh = grey() + 0.1 * (torch.arange(32)[None, :] % 2 - 0.5).expand(32, 32)
    figures = hatching(torch.cat([grey(), mesh]), torch.cat([grey(), grey()]))
    assert figures[0] == 0 and 0.18 < figures[1] <= 0.2  # |1 -2 1| x 0.1 steps, less at the edges
    photo = grey()
    photo[..., 16:] += 0.05 * torch.arange(1, 17)  # flat on the left, a steep ramp on the right
    textured = photo.clone()
    textured[..., 24:] = mesh[..., 24:]  # a mesh where the photo is not flat does not count
    assert float(hatching(textured, photo)[0]) == 0


def test_bound_gradient_floor_keeps_the_output_and_lets_saturated_pixels_learn() -> None:
    torch.manual_seed(0)
    net = TransformerNet(width=0.25)
    with torch.no_grad():
        net.decoder[-1][1].bias.fill_(-30.0)  # deep in the bound: black
    photo = torch.rand(1, 3, 16, 16)
    gradients = {}
    for floor in (0.0, 0.05):
        net.bound_gradient_floor = floor
        net.zero_grad()
        out = net(photo)
        assert float(out.max()) < 1e-6
        out.mean().backward()
        gradients[floor] = net.decoder[-1][1].bias.grad.clone()
    assert gradients[0.0].abs().max() == 0  # tanh passes nothing back
    assert torch.allclose(gradients[0.05], torch.full((3,), 0.05 / 3))  # d mean / d bias = floor / 3 channels
    net.eval()
    assert torch.equal(net(photo), torch.jit.script(net)(photo))


def test_adaptive_clip_holds_a_spike_to_a_multiple_of_the_running_norm(tiny_config, tmp_path: Path) -> None:
    module = build_module(tiny_config(tmp_path, "optimizer.adaptive_clip=2"))
    parameters = list(module.transformer.parameters())

    def step(scale: float) -> float:
        for parameter in parameters:
            parameter.grad = torch.full_like(parameter, scale)
        module.gradient_clip(parameters)
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])))

    typical = step(1.0)
    assert step(1.0) == pytest.approx(typical)  # under the limit: untouched
    assert step(100.0) == pytest.approx(2 * typical, rel=1e-4)  # a spike: clipped to 2x the running mean
    assert float(module.gradient_clip.mean) < 1.02 * typical  # and the spike barely moves the mean
    with pytest.raises(UserError, match="adaptive_clip"):
        build_module(tiny_config(tmp_path, "optimizer.adaptive_clip=0.5"))


def test_adaptive_clip_runs_in_lightnings_clipping_hook(tiny_config, tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "trainer.max_steps=2", "optimizer.adaptive_clip=2"))
    assert float(result.module.gradient_clip.mean) > 0  # every optimiser step went through it


def test_scale_jitter_and_flip(tmp_path: Path) -> None:
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :8] = 255  # a white band on the left
    Image.fromarray(pixels).save(tmp_path / "band.png")
    plain = ImageFolderImages(tmp_path, image_size=32)[0]
    flipped = ImageFolderImages(tmp_path, image_size=32, flip=True)
    torch.manual_seed(0)
    crops = [flipped[0] for _ in range(20)]
    assert any(torch.equal(c, plain) for c in crops) and any(torch.equal(c, plain.flip(-1)) for c in crops)
    zoomed = ImageFolderImages(tmp_path, image_size=32, scale_jitter=2.0)
    torch.manual_seed(0)
    crops = [zoomed[0] for _ in range(10)]
    assert all(c.shape == (3, 32, 32) for c in crops) and not all(torch.equal(c, plain) for c in crops)
    with pytest.raises(UserError, match="scale_jitter"):
        ImageFolderImages(tmp_path, image_size=32, scale_jitter=3.0)


class PaintBlobsFrom(pl.Callback):
    """From global step ``step`` on, pins the network's output to black (what a collapsed run paints)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.transformer.decoder[-1][1].bias.fill_(-50.0)


def blob_run(tiny_config, run_dir: Path, *overrides: str) -> tuple[object, list[str]]:
    """A tiny run (checkpoints and validations every 2 steps) whose network paints blobs from step 4."""
    cfg = tiny_config(run_dir, "trainer.max_steps=8", "optimizer.lr=1e-6", "data.preview_size=64",
                      "+callbacks.blobs._target_=tests.test_artefacts.PaintBlobsFrom", "+callbacks.blobs.step=4",
                      *overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg)
    return result, [str(w.message) for w in caught if "artefact guard" in str(w.message)]


def test_guard_names_the_step_and_the_setting_and_training_goes_on(tiny_config, tmp_path: Path) -> None:
    result, alarms = blob_run(tiny_config, tmp_path)
    assert len(alarms) == 1  # one line, at the first alarm only
    assert "step 6:" in alarms[0] and "artefact_guard.stop=true" in alarms[0]
    assert f"{tmp_path / 'checkpoints' / HEALTHY_CHECKPOINT} (step 4)" in alarms[0]
    assert result.global_step == 8
    model = StyleModel.load(result.model_path)
    assert model.metadata["steps"] == 8 and model.metadata["artefacts"]["blobs"] > 0.5


def test_guard_stop_exports_the_last_healthy_weights(tiny_config, tmp_path: Path) -> None:
    result, alarms = blob_run(tiny_config, tmp_path, "artefact_guard.stop=true")
    assert result.global_step == 6 and "stopping" in alarms[0]
    model = StyleModel.load(result.model_path)
    healthy = torch.load(tmp_path / "checkpoints" / HEALTHY_CHECKPOINT, map_location="cpu", weights_only=True)
    assert healthy["global_step"] == 4
    assert torch.equal(model.network.decoder[-1][1].bias, healthy["state_dict"]["transformer.decoder.2.1.bias"])
    assert model.metadata["steps"] == 4
    assert model.metadata["artefacts"]["step"] == 4 and model.metadata["artefacts"]["blobs"] == 0.0


def test_model_files_check_their_artefact_record(tmp_path: Path) -> None:
    network = TransformerNet(width=0.25)
    good = {"step": 3, "blobs": 0.01, "hatching": None, "styles": {"a": {"blobs": 0.0, "hatching": 0.1}}}
    path = StyleModel(network, {"style": {"name": "a"}, "artefacts": good}).save(tmp_path / "good.safetensors")
    assert StyleModel.load(path).metadata["artefacts"] == good
    for bad in ({"blobs": "none"}, {"step": 1.5}, {"styles": {"a": {"step": 1}}}, {"colour": 1.0}, [0.1]):
        path = StyleModel(network, {"style": {"name": "a"}, "artefacts": bad}).save(tmp_path / "bad.safetensors")
        with pytest.raises(ModelFileError, match="artefacts"):
            StyleModel.load(path)
