"""fststyle: fast neural style transfer training, instant stylisation, and the optimisation reference engines.

    import fststyle
    stylizer = fststyle.Stylizer.load("starry_night")            # a shipped model by name, or a file
    fststyle.save_image(stylizer(fststyle.load_image("photo.jpg")), "out.jpg")

The names below load on first use, so ``import fststyle`` stays light; none of them imports Lightning
(training lives in fststyle.training and runs through ``fststyle train``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Stylizer": "fststyle.stylize",
    "stylize_paths": "fststyle.runner",
    "TransformerNet": "fststyle.transformer",
    "PerceptualLoss": "fststyle.losses",
    "VGGFeatures": "fststyle.vgg",
    "optimize_image": "fststyle.optimize",
    "optimize_files": "fststyle.optimize",
    "compare_paths": "fststyle.compare",
    "load_image": "fststyle.images",
    "save_image": "fststyle.images",
    "StyleModel": "fststyle.style_model",
    "shipped_models": "fststyle.bundled",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fststyle' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
