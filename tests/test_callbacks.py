"""GatysGapCallback in a real short Lightning run: the scalars are read back from the TensorBoard event file."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fststyle.bundled import bundled_path
from fststyle.io.decode import load_image
from fststyle.training.callbacks import GatysGapCallback
from fststyle.training.data import StyleDataModule
from fststyle.training.module import StyleTransferModule

#: a small real training loss on the offline Caffe VGG-19
LOSS = {"network": {"arch": "vgg19", "weights": "caffe"}, "content_layers": {"relu2_2": 1.0},
        "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0}, "content_weight": 1.0, "style_weight": 1e4,
        "tv_weight": 1e-4}
SIZE = 32
PREVIEWS = sorted((bundled_path("data/preview")).glob("*.jpg"))[:2]


def tiny_module() -> StyleTransferModule:
    torch.manual_seed(0)
    style = {"name": "starry_night", "paths": [str(bundled_path("data/styles/starry_night.jpg"))], "blend": None,
             "size": SIZE}
    return StyleTransferModule.from_hparams({"transformer": {"width": 0.25, "residual_blocks": 1}, "loss": LOSS,
                                             "style": style, "image_size": SIZE})


def test_gap_is_logged_to_tensorboard_during_fit_and_training_targets_are_untouched(tmp_path):
    module = tiny_module()
    targets = {name: value.clone() for name, value in module.loss.style.named_buffers()}
    target_tensors = dict(module.loss.style.named_buffers())
    data = StyleDataModule(bundled_path("data/coco_sample"), image_size=SIZE, batch_size=2, num_workers=0,
                           pin_memory=False, persistent_workers=False, max_images=8)
    callback = GatysGapCallback(photos=PREVIEWS, every_n_steps=2, image_size=SIZE, settings={"steps": 3},
                                progress=False)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=logger, callbacks=[callback],
                         limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    (reference,) = events.Scalars("gatys_reference/total")
    gaps, ratios = events.Scalars("gatys_gap/total"), events.Scalars("gatys_ratio/total")
    assert reference.step == 0 and [g.step for g in gaps] == [2, 4] == [r.step for r in ratios]
    for term in ("content", "style", "tv", "content.relu2_2", "style.relu1_2", "style.relu2_2"):
        assert len(events.Scalars(f"gatys_gap/{term}")) == 2, term
    for gap, ratio in zip(gaps, ratios, strict=True):  # gap = fast - ref and ratio = fast / ref agree
        assert gap.value == pytest.approx(reference.value * (ratio.value - 1), rel=1e-4, abs=1e-6)
    # the reference is a real optimisation of the module's loss: better than the photo it started from
    with torch.no_grad():
        start = sum(float(module.loss(c, c)["total"]) for c in (load_image(p, SIZE) for p in PREVIEWS)) / 2
    assert reference.value < start
    # the last point is the gap of the trained network, and training kept its own style targets
    assert callback.gap(module)["gatys_gap/total"] == pytest.approx(gaps[-1].value, rel=1e-4)
    for name, value in module.loss.style.named_buffers():
        assert torch.equal(value, targets[name]), name
        assert value is target_tensors[name], f"{name} was replaced, not kept"


def test_train_config_adds_the_callback_with_plus_callbacks(compose):
    cfg = compose("train", "+callbacks=gatys_gap", "callbacks.gatys_gap.every_n_steps=7")
    callback = instantiate(cfg.callbacks.gatys_gap)
    assert isinstance(callback, GatysGapCallback) and callback.every_n_steps == 7
    assert callback.settings.steps == 500 and Path(callback.photos) == bundled_path("data/preview")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        GatysGapCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="unknown optimisation settings"):
        GatysGapCallback(settings={"stpes": 3})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images in .*empty"):
        GatysGapCallback(photos=empty)
    with pytest.raises(ValueError, match="not found: .*nope.jpg"):
        GatysGapCallback(photos=[tmp_path / "nope.jpg"])
