"""Lightning training module: a built Johnson transformer trained against a built ``PerceptualLoss``.

The module is handed its network, its loss with the style targets set (or one targeted copy of the style terms
per style, for a network of several) and its ``TrainingSettings``; ``from_settings`` builds them. The settings'
plain form is the checkpoint's hyper-parameters, so a checkpoint loads with ``torch.load(weights_only=True)``,
``load_from_checkpoint`` rebuilds the module from it, and ``fststyle.stylize.export`` can turn it into a style model. The
frozen VGG is not stored in checkpoints: it is rebuilt from the loss config, and its current weights are put back
before the state dict loads.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from fststyle.artefacts import blob_share, hatching
from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.losses import PerceptualLoss, PerturbedOutput
from fststyle.nets.transformer import TransformerNet, saturated_share
from fststyle.training.clipping import RunningNormClip
from fststyle.training.finetune import freeze_all_but_new_styles
from fststyle.training.settings import TrainingSettings

LOSS_PREFIX = "loss."


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; raised before the optimiser step so no weights are poisoned."""


def style_targets(loss: PerceptualLoss, style_images: list[torch.Tensor], settings: TrainingSettings) -> nn.ModuleList:
    """Set ``loss``'s style targets from the style images 1,3,H,W (blended as ``settings.style.blend`` says) and
    return no per-style terms; for a network of several styles, leave ``loss`` untargeted and return one targeted
    copy of its style terms per trained style, in order."""
    if settings.transformer.styles == 1:
        loss.set_style(style_images, None if settings.style.blend is None else list(settings.style.blend))
        return nn.ModuleList()
    if loss.style is None:
        raise UserError("several styles in one network need style layers (loss.style_layers)")
    return nn.ModuleList(loss.targeted_style_terms([image]) for image in style_images)


class StyleTransferModule(pl.LightningModule):
    """Trains ``transformer`` (N,3,H,W -> N,3,H,W in [0,1]) to minimise ``loss`` for one style, a blend, or
    several styles at once in one network of conditional instance norms (Dumoulin et al. 2017).

    Args:
        transformer: the network, ``settings.transformer``'s architecture (a fine-tune's already frozen but for
            its new styles, ``fststyle.training.finetune``).
        loss: the loss ``settings.loss`` describes, its style targets set for a network of one style; its terms
            that perturb the network's input (``stability_weight`` > 0) get the network's outputs for the
            perturbed copies in training.
        style_images: the style images 1,3,H,W the targets were computed from (the Gatys gap callback's).
        style_terms: for a network of several styles, one targeted copy of the loss's style terms per trained
            style (``style_targets``); each image of a batch is paired with one of them, in turn. Empty otherwise.
        settings: the run's settings, saved as the checkpoint's hyper-parameters.
    """

    def __init__(self, transformer: TransformerNet, loss: PerceptualLoss, style_images: list[torch.Tensor],
                 style_terms: nn.ModuleList, settings: TrainingSettings) -> None:
        super().__init__()
        self.save_hyperparameters(settings.to_hparams())
        self.settings = settings
        self.transformer = transformer
        self.transformer.bound_gradient_floor = float(settings.optimizer.bound_gradient_floor)
        #: ``optimizer.adaptive_clip``: clips each step's gradients to a multiple of their running mean norm
        self.gradient_clip = (RunningNormClip(settings.optimizer.adaptive_clip) if settings.optimizer.adaptive_clip
                              else None)
        self.loss = loss
        #: style images 1,3,H,W in [0,1] on the CPU, kept for the exported model
        self.style_images = style_images
        #: the style images the exported model stores, in the network's style order (a fine-tune puts its base
        #: model's in front; None when that model stores none)
        self.model_style_images: list[torch.Tensor] | None = list(style_images)
        self.style_terms = style_terms
        #: styles of the fine-tuned model, frozen; the trained ones follow them in the network
        self.frozen_styles = settings.frozen_styles
        self.channels_last = settings.networks.channels_last
        if self.channels_last:
            self.transformer.to(memory_format=torch.channels_last)
            self.loss.vgg.to(memory_format=torch.channels_last)
        if settings.networks.compile:
            self.transformer.compile(mode=settings.networks.compile_mode)
            self.loss.vgg.compile(mode=settings.networks.compile_mode)
        #: images the data loader could not read, on this process, since this run started
        self.skipped_images = 0
        #: set on any process (training/run.py's SIGTERM/SIGINT handler does) to stop every process together after
        #: the current step: the step's one all-reduce carries it, then ``on_train_batch_end`` raises
        #: SIGTERMException on all of them
        self.stop_requested = False
        self._stop_agreed = False
        #: the weighted total loss of the latest optimiser step, averaged over its batches and processes; a host
        #: float read with the step's one device sync, so the progress bar needs none of its own
        self.last_loss: float | None = None
        # this optimiser step's [non-finite batches, sum of totals, batches] on this process (device, no sync)
        self._step_stats: torch.Tensor | None = None
        self._last_terms: dict[str, torch.Tensor] = {}
        #: the sum of ``skipped_images`` over all processes, set when training ends
        self.skipped_images_total = 0

    @classmethod
    def from_settings(cls, settings: TrainingSettings) -> StyleTransferModule:
        """The module over the network, loss and style targets ``settings`` describe (style images read from their
        paths, targets computed once, on the CPU; a fine-tune's network frozen but for its new styles, with fresh
        weights: ``fststyle.training.finetune.start_from_base`` loads the base model's)."""
        transformer = TransformerNet(settings.transformer)
        if settings.frozen_styles:
            freeze_all_but_new_styles(transformer, settings.frozen_styles)
        loss = PerceptualLoss.from_config(settings.loss)
        style_images = [load_image(path, size=settings.style.size) for path in settings.style.paths]
        return cls(transformer, loss, style_images, style_targets(loss, style_images, settings), settings)

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> StyleTransferModule:
        """The module a checkpoint's hyper-parameters describe (``TrainingSettings.to_hparams``), untrained."""
        return cls.from_settings(TrainingSettings.from_hparams(hparams))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | os.PathLike, map_location: Any = None,
                             strict: bool = True) -> StyleTransferModule:
        """The module a training checkpoint holds, this project's older ones too: rebuilt from its
        hyper-parameters, then its weights loaded (``strict``: every key). Read weights-only: a checkpoint never
        unpickles code. (Lightning's version calls ``cls(**hyper_parameters)``; this module takes built objects.)"""
        checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
        module = cls.from_hparams(checkpoint["hyper_parameters"])
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=strict)
        return module

    # ---- training ---------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Stylise N,3,H,W images in [0,1] -> N,3,H,W in [0,1]; ``style_weights`` N,S when the network holds
        several styles."""
        return self.transformer(self.to_memory_format(images), style_weights)

    @property
    def trained_style_names(self) -> list[str]:
        """The names of the styles this run trains, in the order of ``style_terms``."""
        return self.settings.style.trained_names

    def batch_styles(self, batch_size: int, batch_number: int) -> list[int] | None:
        """The trained style (an index into ``style_terms``) of each image of batch ``batch_number`` (counted
        across epochs, as a resumed run counts on), taken in turn over the images of all processes so every
        style gets an even share; None for a network of one style. (The batch index within an epoch would
        start every epoch at the first style: with 3 styles and epochs of 5 batches of 2, 4:3:3 images.)"""
        if not len(self.style_terms):
            return None
        first = (batch_number * self.trainer.world_size + self.trainer.global_rank) * batch_size
        return [(first + i) % len(self.style_terms) for i in range(batch_size)]

    def style_weights(self, styles: list[int]) -> torch.Tensor:
        """One-hot style weights N,S of trained styles ``styles`` (indices into ``style_terms``)."""
        indices = torch.tensor(styles, device=self.device) + self.frozen_styles
        return F.one_hot(indices, self.transformer.config.styles).float()

    def loss_terms(self, output: torch.Tensor, content: torch.Tensor, styles: list[int] | None = None,
                   perturbed: dict[str, PerturbedOutput] | None = None) -> dict[str, torch.Tensor]:
        """The weighted loss terms of outputs N,3,H,W for contents N,3,H,W, each scored against its style in
        ``styles`` (None: the one style), with ``perturbed``, the outputs for the perturbed copies the loss asked
        for (``training_terms``); with several styles, averaged over the images, plus ``<style>/<term>`` of each
        style in the batch for ``total`` and every term that is not a regulariser (content, style, ...)."""
        if styles is None:
            return self.loss(output, content, perturbed=perturbed)
        per_style = [name for name, term in self.loss.terms.items() if not term.regulariser] + ["total"]
        terms: dict[str, torch.Tensor] = {}
        for style in sorted(set(styles)):
            positions = [i for i, s in enumerate(styles) if s == style]
            share = len(positions) / len(styles)
            style_terms = self.loss(output[positions], content[positions], style=self.style_terms[style],
                                    perturbed={name: PerturbedOutput(p.output[positions], p.shift)
                                               for name, p in (perturbed or {}).items()})
            for name, value in style_terms.items():
                terms[name] = terms[name] + share * value if name in terms else share * value
            name = self.trained_style_names[style]
            terms.update({f"{name}/{term}": style_terms[term] for term in per_style})
        return terms

    def to_memory_format(self, images: torch.Tensor) -> torch.Tensor:
        """N,3,H,W in the module's memory format (NHWC when ``channels_last``)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def on_fit_start(self) -> None:
        """A new fit starts without a pending stop."""
        self.stop_requested = self._stop_agreed = False

    def training_step(self, batch: tuple[torch.Tensor, int], batch_idx: int) -> torch.Tensor:
        """One batch (images N,3,S,S, count of unreadable files) -> the weighted total loss (scalar).

        Every process takes the same collective path whatever its batch holds: no collective here (DDP's
        gradient all-reduce runs in backward, the step's flag all-reduce in ``on_before_optimizer_step``).
        """
        images, skipped = batch
        self.skipped_images += int(skipped)
        if images.shape[0] == 0:
            # Every file of this batch was unreadable: a zero loss that still joins DDP's gradient all-reduce,
            # and no batch in this step's statistics.
            return sum(p.sum() for p in self.transformer.parameters()) * 0.0
        images = self.to_memory_format(images)
        if self.settings.networks.compile and self.settings.networks.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are no longer read
        styles = (self.batch_styles(images.shape[0], self.trainer.fit_loop.total_batch_idx)
                  if len(self.style_terms) else None)  # one style: no trainer needed (tests step by hand)
        terms, outputs = self.training_terms(images, styles)
        total = terms["total"].detach().float()
        stats = torch.stack([(~torch.isfinite(total)).float(), total, torch.ones_like(total)])
        self._step_stats = stats if self._step_stats is None else self._step_stats + stats
        self._last_terms = {name: value.detach() for name, value in terms.items()}
        # Per-step values from this process only, and not on the progress bar: Lightning would read a progress
        # bar value back from the device every step (the bar shows ``last_loss`` instead).
        self.log_dict({f"train/{name}": value for name, value in terms.items()}
                      | {"train/saturated": saturated_share(outputs.detach())},
                      on_step=True, on_epoch=False, batch_size=images.shape[0])
        return terms["total"]

    def training_terms(self, images: torch.Tensor,
                       styles: list[int] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss terms of a training batch N,3,H,W (``loss_terms``) and the network's outputs N,3,H,W for it.
        The network also stylises each perturbed copy of the batch the loss asks for (``PerceptualLoss.perturb``:
        the stability term's), in the same call (N images more per copy), and the loss scores those outputs too."""
        copies = self.loss.perturb(images)
        batch = torch.cat([images, *(copy for copy, _ in copies.values())]) if copies else images
        weights = None if styles is None else self.style_weights(styles * (1 + len(copies)))
        outputs = self(batch, weights).chunk(1 + len(copies))
        perturbed = {name: PerturbedOutput(output, shift)
                     for (name, (_, shift)), output in zip(copies.items(), outputs[1:], strict=True)}
        return self.loss_terms(outputs[0], images, styles, perturbed), outputs[0]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The step's one collective and one device sync: stop on a non-finite loss or a stop request.

        One all-reduce of [non-finite batches, sum of totals, batches, stop requests] over the processes,
        read back once. A non-finite loss on any process raises NonFiniteLossError on every process, before
        the optimiser step, naming the step; a stop request makes every process stop after this step.
        """
        stats = self._step_stats if self._step_stats is not None else torch.zeros(3, device=self.device)
        self._step_stats = None
        flags = torch.cat([stats, torch.full((1,), float(self.stop_requested), device=stats.device)])
        if self.trainer.world_size > 1:
            flags = self.trainer.strategy.reduce(flags, reduce_op="sum")
        non_finite, loss_sum, batches, stop = flags.tolist()
        if non_finite:
            raise NonFiniteLossError(self._non_finite_message())
        self._last_terms = {}
        if batches:
            self.last_loss = loss_sum / batches
        self._stop_agreed = stop > 0

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Lightning's clipping (``trainer.gradient_clip_val``), then ``optimizer.adaptive_clip``."""
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self.gradient_clip is not None:
            self.gradient_clip(self.transformer.parameters())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop every process together after the step in which any of them asked to (SIGTERM, Ctrl-C)."""
        if self._stop_agreed:
            raise SIGTERMException

    def _non_finite_message(self) -> str:
        """The NonFiniteLossError message: the step, this process's loss terms, what to do."""
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in self._last_terms.items())
        where = f" (this process: {values})" if values else ""
        return (f"training loss is not finite at global step {self.global_step}{where}. The run stopped before "
                "the optimiser step, so the saved checkpoints hold finite weights. Lower optimizer.lr or the loss "
                "weights, or use trainer.precision=32-true, then resume from the last checkpoint (ckpt_path=...).")

    def on_train_end(self) -> None:
        """Sum the unreadable-image counts of all processes into ``skipped_images_total``."""
        count = torch.tensor(float(self.skipped_images), device=self.device)
        self.skipped_images_total = int(self.trainer.strategy.reduce(count, reduce_op="sum").item())

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam on the transformer only (the VGG is frozen), with an optional per-step schedule."""
        settings = self.settings.optimizer
        trainable = [parameter for parameter in self.transformer.parameters() if parameter.requires_grad]
        # fused: one kernel for the whole update on CUDA instead of several per parameter group
        optimizer = torch.optim.Adam(trainable, lr=settings.lr, fused=trainable[0].is_cuda)
        if settings.schedule == "none":
            return {"optimizer": optimizer}
        if settings.schedule == "cosine":
            total = self.trainer.max_steps
            if total is None or total <= 0:
                raise UserError("optimizer.schedule=cosine needs trainer.max_steps > 0 (the schedule's length)")
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                                   eta_min=settings.min_lr)
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size,
                                                        gamma=settings.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- validation ---------------------------------------------------------------------------------------
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Stylise the fixed preview photos N,3,S,S in every trained style -> N,K,3,S,S (K styles, for the
        ``PreviewGrids`` callback); log their loss terms, saturated share and artefact figures, blobs and hatching
        (fststyle.artefacts), averaged over processes, per style too when there are several."""
        batch = self.to_memory_format(batch)
        outputs, terms = [], {}
        styles = range(len(self.style_terms)) if len(self.style_terms) else [None]
        for style in styles:  # the plain val/<term> keys: the mean over the styles
            chosen = None if style is None else [style] * batch.shape[0]
            stylised = self(batch, None if chosen is None else self.style_weights(chosen))
            scores = self.loss_terms(stylised, batch, chosen) | {
                "saturated": saturated_share(stylised), "blobs": blob_share(stylised, batch).mean(),
                "hatching": hatching(stylised, batch).nanmean()}
            if style is not None:
                name = self.trained_style_names[style]
                scores |= {f"{name}/{figure}": scores[figure] for figure in ("saturated", "blobs", "hatching")}
            for name, value in scores.items():
                value = value if "/" in name else value / len(styles)
                terms[name] = terms[name] + value if name in terms else value
            outputs.append(stylised.detach().float())
        self.log_dict({f"val/{name}": value for name, value in terms.items()}, sync_dist=True,
                      batch_size=batch.shape[0])
        return torch.stack(outputs, dim=1)

    # ---- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave the frozen VGG out of the checkpoint (it is rebuilt from the loss config)."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith(LOSS_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose network holds another number of styles (one line, not a state-dict size
        mismatch); put this module's VGG weights back so the state dict loads strictly."""
        saved = TrainingSettings.from_hparams(checkpoint["hyper_parameters"])
        if saved.transformer.styles != self.transformer.config.styles:
            source = saved.finetune.source if saved.finetune is not None else None
            raise UserError(f"the checkpoint was trained on the styles {', '.join(saved.network_style_names)} "
                            f"(finetune_from={source}), this run's settings give "
                            f"{', '.join(self.settings.network_style_names)}: resume with the style=, "
                            "style_mode=, style_names= and finetune_from= it was trained with")
        checkpoint["state_dict"].update({k: v for k, v in self.state_dict().items() if k.startswith(LOSS_PREFIX)})

