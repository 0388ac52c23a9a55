"""The models a server may run: the ones named at start-up and the shipped ones, each loaded once.

The browser chooses among their names only; it never names a path on the server.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fststyle.bundled import find_model, shipped_models
from fststyle.errors import UserError
from fststyle.style_model import StyleModel
from fststyle.stylize.stylizer import Stylizer

#: blends of a multi-style network kept built (each is its own one-style network of about 7 MB)
CACHED_STYLIZERS = 8
#: a blend's weights are rounded to this many decimals, so a slider's jitter does not build a new network
BLEND_DECIMALS = 3


class ModelRegistry:
    """Loaded ``StyleModel``s by name, and their ``Stylizer``s (one per style or blend, built on first use)."""

    def __init__(self, named: Sequence[str | Path], *, device: torch.device, tile: int | None,
                 include_shipped: bool = True) -> None:
        self.device, self.tile = device, tile
        self.models: dict[str, StyleModel] = {}
        for entry in named:
            path = find_model(entry)
            name = path.stem if path.stem not in self.models else f"{path.parent.name}/{path.stem}"
            self.models[name] = StyleModel.load(path)
        if include_shipped:
            for name, path in shipped_models().items():
                self.models.setdefault(name, StyleModel.load(path))
        if not self.models:
            raise UserError("no models to serve: name one with -m my_style.safetensors, or keep the shipped ones")
        self._stylizers: OrderedDict[tuple, Stylizer] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> list[dict[str, Any]]:
        """What the page lists: each model's name, its style names, training size and steps."""
        return [{"name": name, "styles": model.style_names, "image_size": model.metadata.get("image_size"),
                 "steps": model.metadata.get("steps")} for name, model in self.models.items()]

    def model(self, name: str) -> StyleModel:
        """The loaded model called ``name``, or a UserError listing the ones there are."""
        if name not in self.models:
            raise UserError(f"unknown model {name!r}; this server has {', '.join(self.models)}")
        return self.models[name]

    def stylizer(self, name: str, style: str | Mapping[str, float] | None = None) -> Stylizer:
        """The ``Stylizer`` of model ``name`` for ``style`` (one of its style names, or ``{name: weight}``)."""
        model = self.model(name)
        key = (name, blend_key(style))
        with self._lock:
            if key in self._stylizers:
                self._stylizers.move_to_end(key)
                return self._stylizers[key]
        choice = dict(key[1]) if isinstance(key[1], tuple) else key[1]
        stylizer = Stylizer.from_model(model, device=self.device, style=choice, tile=self.tile)
        with self._lock:
            self._stylizers[key] = stylizer
            while len(self._stylizers) > CACHED_STYLIZERS:
                self._stylizers.popitem(last=False)
        return stylizer


def blend_key(style: str | Mapping[str, float] | None) -> str | tuple[tuple[str, float], ...] | None:
    """A hashable form of a style choice: the name, or the blend's (name, rounded weight) pairs, sorted."""
    if style is None or isinstance(style, str):
        return style
    if not isinstance(style, Mapping):
        raise UserError(f"style must be a style name or a {{name: weight}} blend, got {style!r}")
    try:
        return tuple(sorted((str(key), round(float(value), BLEND_DECIMALS)) for key, value in style.items()))
    except (TypeError, ValueError) as error:
        raise UserError(f"a blend's weights must be numbers, got {dict(style)!r}") from error
