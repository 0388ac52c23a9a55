"""Fine-tuning: new styles added to a trained network, whose convolutions and own styles stay frozen.

Only the new styles' instance-norm scale and shift train (conditional instance norm, Dumoulin et al. 2017), so
the trained model's styles give bit-identical outputs afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from fststyle.errors import UserError
from fststyle.nets.transformer import InstanceNorm2d, TransformerNet
from fststyle.style_model import StyleModel


@dataclass(frozen=True)
class FinetuneSettings:
    """The trained model a run adds styles to (``finetune_from``) and its styles, each with the steps it
    trained for, in the network's order (they come first, frozen)."""

    source: str
    styles: tuple[tuple[str, int], ...]

    @classmethod
    def from_hparams(cls, finetune: dict[str, Any] | None) -> FinetuneSettings | None:
        """From a checkpoint's ``finetune`` hyper-parameter, ``{"from", "styles": [{"name", "steps"}...]}``."""
        if not finetune:
            return None
        return cls(str(finetune["from"]), tuple((entry["name"], int(entry["steps"])) for entry in finetune["styles"]))

    def to_hparams(self) -> dict[str, Any]:
        """The plain ``finetune`` hyper-parameter (``from_hparams`` reads it back)."""
        return {"from": self.source, "styles": [{"name": name, "steps": steps} for name, steps in self.styles]}

    @property
    def style_names(self) -> list[str]:
        """The frozen styles' names, in the network's order."""
        return [name for name, _ in self.styles]


def finetune_base(path: str) -> tuple[StyleModel, FinetuneSettings]:
    """The trained model ``finetune_from`` names and its settings; refused unless its norms are instance norms."""
    base = StyleModel.load(path)
    norm = base.network.config.norm
    if norm != "instance":
        raise UserError(f"finetune_from={base.path} has {norm} norms; new styles need instance "
                        "norms (their scale and shift are the style): train the styles together from scratch")
    steps = ([entry["steps"] for entry in base.metadata["styles"]] if "styles" in base.metadata
             else [base.metadata.get("steps") or 0])
    return base, FinetuneSettings(str(base.path), tuple(zip(base.style_names, steps, strict=True)))


def start_from_base(network: TransformerNet, base: StyleModel) -> None:
    """Load ``base``'s weights into ``network``, which holds its styles and new ones after them (each new style's
    scale and shift start at the mean of the base's, ``TransformerNet.with_new_styles``)."""
    grown = base.network.with_new_styles(network.config.styles - base.network.config.styles)
    network.load_state_dict(grown.state_dict())


def model_style_images(base: StyleModel, trained: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """The style images 1,3,H,W the fine-tuned model stores, in its style order: the base's, then ``trained``;
    None when the base stores none, or a blend's several images for its one style (one image per style, or none)."""
    one_each = base.style_images is not None and len(base.style_images) == base.network.config.styles
    if base.style_images is not None and not one_each:
        rank_zero_warn(f"finetune_from={base.path} stores {len(base.style_images)} style images for its "
                       f"{base.network.config.styles} style(s) (a blend): the fine-tuned model stores none")
    return [*base.style_images, *trained] if one_each else None


def freeze_all_but_new_styles(network: TransformerNet, frozen_styles: int) -> None:
    """No gradient for the convolutions, and none for the first ``frozen_styles`` rows of the S,C norm scale and
    shift (a zero gradient leaves Adam's step exactly zero, so those rows stay bit-identical)."""
    keep = torch.arange(network.config.styles) >= frozen_styles
    for module in network.modules():
        for parameter in module.parameters(recurse=False):
            if isinstance(module, InstanceNorm2d):
                parameter.register_hook(lambda grad: grad * keep.to(grad.device, grad.dtype)[:, None])
            else:
                parameter.requires_grad_(False)
