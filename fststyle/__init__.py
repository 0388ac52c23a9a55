"""fststyle: fast neural style transfer training, instant stylisation, and the optimisation reference engines.

    import fststyle
    stylizer = fststyle.Stylizer.load("starry_night")            # a shipped model by name, or a file
    fststyle.save_image(stylizer(fststyle.load_image("photo.jpg")), "out.jpg")

The names below load on first use, so ``import fststyle`` stays light; none of them imports Lightning
(training lives in fststyle.training.run and runs through ``fststyle train``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Stylizer": "fststyle.stylize.stylizer",
    "stylize_paths": "fststyle.stylize.runner",
    "TransformerNet": "fststyle.nets.transformer",
    "PerceptualLoss": "fststyle.losses",
    "VGGFeatures": "fststyle.nets.vgg",
    "optimize_image": "fststyle.optimize.engine",
    "optimize_files": "fststyle.optimize.job",
    "compare_paths": "fststyle.compare.job",
    "load_image": "fststyle.io.decode",
    "save_image": "fststyle.io.encode",
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
