"""One loss stack for both engines: pure functions and the modules built from them."""

from fststyle.losses.functional import feature_mse, gram_matrix, total_variation
from fststyle.losses.perceptual import (
    STYLE_LOSSES,
    GramStyleLoss,
    PerceptualLoss,
    StyleLoss,
    blend_weights,
)

__all__ = [
    "STYLE_LOSSES",
    "GramStyleLoss",
    "PerceptualLoss",
    "StyleLoss",
    "blend_weights",
    "feature_mse",
    "gram_matrix",
    "total_variation",
]
