"""One loss stack for both engines: pure functions, one class per term, and ``PerceptualLoss`` (VGG + terms)."""

from fststyle.losses.functional import feature_mse, gram_matrix, total_variation
from fststyle.losses.histogram import HistogramLoss, match_histograms, sorted_mixture
from fststyle.losses.mrf import (
    MRFStyleLoss,
    augmented_styles,
    extract_patches,
    nearest_patches,
    normalise_patches,
)
from fststyle.losses.perceptual import STYLE_LOSSES, TERM_BUILDERS, PerceptualLoss, style_term, term_names
from fststyle.losses.spatial import SpatialGramStyleLoss, masked_gram_matrix, resize_mask
from fststyle.losses.stability import StabilityLoss
from fststyle.losses.terms import (
    ContentLoss,
    GramStyleLoss,
    LossTerm,
    PerturbationTerm,
    PerturbedOutput,
    Scored,
    StyleLoss,
    TotalVariationLoss,
)
from fststyle.nets.blend import blend_weights

__all__ = [
    "STYLE_LOSSES",
    "TERM_BUILDERS",
    "ContentLoss",
    "GramStyleLoss",
    "HistogramLoss",
    "LossTerm",
    "MRFStyleLoss",
    "PerceptualLoss",
    "PerturbationTerm",
    "PerturbedOutput",
    "Scored",
    "SpatialGramStyleLoss",
    "StabilityLoss",
    "StyleLoss",
    "TotalVariationLoss",
    "augmented_styles",
    "blend_weights",
    "extract_patches",
    "feature_mse",
    "gram_matrix",
    "masked_gram_matrix",
    "match_histograms",
    "nearest_patches",
    "normalise_patches",
    "resize_mask",
    "sorted_mixture",
    "style_term",
    "term_names",
    "total_variation",
]
