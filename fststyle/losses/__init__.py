"""One loss stack for both engines: pure functions and the modules built from them."""

from fststyle.losses.functional import feature_mse, gram_matrix, total_variation
from fststyle.losses.mrf import (
    MRFStyleLoss,
    augmented_styles,
    extract_patches,
    nearest_patches,
    normalise_patches,
)
from fststyle.losses.perceptual import (
    LOSS_TERMS,
    STYLE_LOSSES,
    GramStyleLoss,
    PerceptualLoss,
    StyleLoss,
    blend_weights,
)
from fststyle.losses.spatial import SpatialGramStyleLoss, masked_gram_matrix, resize_mask

STYLE_LOSSES["mrf"] = MRFStyleLoss

__all__ = [
    "LOSS_TERMS",
    "STYLE_LOSSES",
    "GramStyleLoss",
    "MRFStyleLoss",
    "PerceptualLoss",
    "SpatialGramStyleLoss",
    "StyleLoss",
    "augmented_styles",
    "blend_weights",
    "extract_patches",
    "feature_mse",
    "gram_matrix",
    "masked_gram_matrix",
    "nearest_patches",
    "normalise_patches",
    "resize_mask",
    "total_variation",
]
