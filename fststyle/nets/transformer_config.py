"""The architecture settings of the transformer network (fststyle.nets.transformer), apart from the network so that
reading a model file's header (fststyle models, the style-model checks) imports no torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: instance (Ulyanov et al. 2016); batch (Johnson et al. 2016); demodulated: no statistic of the data, each
#: convolution's weights divided by their norm per output channel (Karras et al. 2020, StyleGAN2, eq. 3), a
#: normalisation that a local spike in the maps cannot dominate (the blob ablation, docs/artefacts.md)
NORMS = ("instance", "batch", "demodulated")
UPSAMPLINGS = ("nearest", "transposed")
#: Bounds on what a config (also one read from an untrusted model file) may ask for. The field's networks
#: stay far below them: Johnson et al. 2016 use 5 residual blocks of 128 channels, the ResNet generator of
#: CycleGAN (Zhu et al. 2017) 9 blocks of 256. 64 blocks of 1024 channels (4 * MAX_BASE_WIDTH) is already
#: a 1.2e9-parameter (4.8 GB) network; a larger ask is a broken or hostile file, not a style model.
MAX_RESIDUAL_BLOCKS = 64
MAX_BASE_WIDTH = 256
#: styles one network may hold; Dumoulin et al. 2017 train 32 (and report one network of 32 styles as
#: cheap as one of 1); each style costs 2 x (sum of norm channels) floats
MAX_STYLES = 256


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture arguments; stored in exported style models so they can be rebuilt exactly."""

    base_channels: int = 32  # Johnson: 32 -> 64 -> 128; a width multiplier scales all three
    width: float = 1.0
    residual_blocks: int = 5
    norm: str = "instance"
    upsample: str = "nearest"
    styles: int = 1  # > 1: conditional instance norm, one scale and shift per style (Dumoulin et al. 2017)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {self.upsample!r}")
        if not math.isfinite(self.width) or self.width <= 0 or self.base_channels < 1:
            raise ValueError(f"width must be a finite number > 0 and base_channels >= 1, got width={self.width}, "
                             f"base_channels={self.base_channels}")
        if not 0 <= self.residual_blocks <= MAX_RESIDUAL_BLOCKS:
            raise ValueError(f"residual_blocks must be in 0..{MAX_RESIDUAL_BLOCKS}, got {self.residual_blocks}")
        if self.base_channels * self.width > MAX_BASE_WIDTH:
            raise ValueError(f"base_channels * width must be at most {MAX_BASE_WIDTH} (the first level's channels), "
                             f"got {self.base_channels} * {self.width}")
        if not 1 <= self.styles <= MAX_STYLES:
            raise ValueError(f"styles must be in 1..{MAX_STYLES}, got {self.styles}")
        if self.norm == "demodulated" and self.upsample != "nearest":
            raise ValueError("norm=demodulated needs upsample=nearest (its convolutions are the demodulated ones), "
                             f"got {self.upsample!r}")
        if self.styles > 1 and self.norm != "instance":
            raise ValueError(f"styles={self.styles} needs norm=instance (conditional instance norm), got {self.norm!r}")

    def channels(self) -> tuple[int, int, int]:
        """Channel widths of the three resolution levels (full, 1/2, 1/4)."""
        c = max(4, round(self.base_channels * self.width))
        return c, 2 * c, 4 * c

    def to_dict(self) -> dict:
        return asdict(self)
