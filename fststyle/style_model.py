"""The style-model record and its file format: the transformer's weights as ``.safetensors`` plus JSON metadata
and the style image(s) (docs/design.md §Model files).

Loading a style model never unpickles. A Lightning ``.ckpt`` is read only with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from fststyle.bundled import find_model
from fststyle.errors import UserError
from fststyle.io.files import atomic_write
from fststyle.io.listing import IMAGE_SUFFIXES
from fststyle.model_header import (
    FORMAT,
    MAX_IMAGE_SIDE,
    METADATA_KEY,
    REEXPORT_HINT,
    ModelFileError,
    check_header_size,
    check_metadata,
    check_styles,
    check_transformer,
    is_int,
    parse_header,
    style_names,
)
from fststyle.nets.blend import blend_weights
from fststyle.nets.transformer import TransformerConfig, TransformerNet
from fststyle.nets.transformer_config import MAX_STYLES

#: one style image (or several of one size, a blend's): uint8 K*3,H,W; a model of several styles stores
#: style i's image as ``style_image.<i>`` (3,H,W)
STYLE_IMAGE_KEY = "style_image"

#: magic bytes of the picture formats fststyle reads (JPEG, PNG, GIF, TIFF little/big endian); WebP is
#: "RIFF" + size + "WEBP", checked apart
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*")


@dataclasses.dataclass
class StyleModel:
    """A style model: its network, its metadata (style, loss, image_size, steps; ``styles`` for a network of
    several) and the style images, each 1,3,H,W in [0,1], it was trained on (style i's image is the i-th of a
    network of several styles), loaded once and passed to whatever stylises, scores or exports it.

    ``path`` is where it was loaded from (for messages), None for one built in memory."""

    network: TransformerNet
    metadata: dict[str, Any]
    style_images: list[torch.Tensor] | None = None
    path: Path | None = None

    @property
    def style_names(self) -> list[str]:
        """The names of the styles the network holds, in the order of its style weights."""
        return style_names(self.network.config.styles, self.metadata, self.path)

    def select(self, style: str | Mapping[str, float] | None = None) -> StyleModel:
        """The one-style model of ``style``: the name of a style this model holds, or ``{name: weight}`` to blend
        their scale and shift (weights normalised to sum 1). None suits a model of one style; a model of several
        then raises a UserError that lists them. The result costs what a one-style network costs."""
        names = self.style_names
        if style is None or isinstance(style, str):
            if style is None and len(names) > 1:
                raise UserError(f"{self._label()} holds {len(names)} styles: {', '.join(names)}; choose one with "
                                f"style={names[0]}, or blend them with 'style={{{names[0]}: 0.5, {names[1]}: 0.5}}'")
            weights = {names[0] if style is None else style: 1.0}
        elif isinstance(style, Mapping):
            weights = dict(style)
        else:
            raise UserError(f"style={style!r}: give a style name or a {{name: weight}} mapping")
        unknown = [name for name in weights if name not in names]
        if unknown:
            raise UserError(f"{self._label()} has no style {unknown[0]!r}; its styles: {', '.join(names)}")
        try:
            normalised = blend_weights(len(weights), [float(w) for w in weights.values()])
        except (TypeError, ValueError) as error:
            raise UserError(f"style={dict(weights)}: {error}") from None
        chosen = {name: weight for name, weight in zip(weights, normalised, strict=True) if weight > 0}
        if len(names) == 1:
            return self
        vector = torch.zeros(len(names))
        for name, weight in chosen.items():
            vector[names.index(name)] = weight
        network = self.network.with_style(vector).eval()
        indices = [names.index(name) for name in chosen]
        paths = (self.metadata.get("style") or {}).get("paths") or []
        style = {**{k: v for k, v in (self.metadata.get("style") or {}).items() if k != "names"},
                 "name": "+".join(chosen), "blend": list(chosen.values()) if len(chosen) > 1 else None,
                 "paths": [paths[i] for i in indices] if len(paths) == len(names) else []}
        metadata = {**{k: v for k, v in self.metadata.items() if k != "styles"}, "style": style,
                    "steps": min(self.metadata["styles"][i]["steps"] for i in indices)}
        images = None if self.style_images is None else [self.style_images[i] for i in indices]
        return StyleModel(network, metadata, images, self.path)

    def _label(self) -> str:
        return f"style model {self.path}" if self.path is not None else "this style model"

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> StyleModel:
        """A ``.safetensors`` style model, a Lightning ``.ckpt`` (weights-only; no style image) or the name of a
        shipped model (``starry_night``), network in eval mode on ``device``.

        The header size, the metadata and the stored tensors' names and shapes are checked against the network
        it describes before anything is allocated: a file cannot make us build a network its weights do not fill."""
        path = find_model(path)
        if not path.is_file():
            raise ModelFileError(f"style model not found: {path}; pass a .safetensors file or the name of a shipped "
                                 "model (fststyle models lists them)")
        if path.suffix == ".ckpt":
            config, state, metadata = _read_checkpoint(path)
            pixels = None
        else:
            config, state, metadata, pixels = _read_safetensors(path)
        style_images = None if pixels is None else [image.float().div(255)[None] for image in pixels]
        return cls(_build(config, state).to(device).eval(), metadata, style_images, path)

    def save(self, path: str | Path) -> Path:
        """Write the network's weights, the metadata (with the format and the network's architecture) and the
        style images (as uint8, so the loss can be rebuilt) to ``path`` atomically."""
        path = Path(path)
        header = {"format": FORMAT, "transformer": self.network.config.to_dict(), **self.metadata}
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.network.state_dict().items()}
        if self.style_images is not None and len(self.style_images):  # a list, or a K,3,H,W tensor of one style
            pixels = [(image.detach().cpu().reshape(-1, *image.shape[-2:]) * 255).round().to(torch.uint8).contiguous()
                      for image in self.style_images]
            if self.network.config.styles == 1 and len({image.shape for image in pixels}) == 1:
                tensors[STYLE_IMAGE_KEY] = torch.cat(pixels)  # one style's image(s) of one size
            else:  # one image per style, or a blend of images of different sizes
                tensors.update({f"{STYLE_IMAGE_KEY}.{i}": image for i, image in enumerate(pixels)})
        with atomic_write(path) as tmp:  # bytes written into our file: safetensors' save_file makes a 0600 file
            tmp.write_bytes(safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(header)}))
        return path


def training_metadata(hparams: dict[str, Any], steps: int, hardware: str | None = None,
                      artefacts: dict[str, Any] | None = None) -> dict[str, Any]:
    """A style model's metadata from the training module's hyper-parameters after ``steps`` steps on
    ``hardware`` (what ``fststyle models`` shows, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3) x 8``), with its
    held-out ``artefacts`` figures (``{"step", "blobs", "hatching"}``, fststyle.artefacts) when measured. A
    network of several styles also lists them, in the order of its style weights, with the steps each was
    trained for (a fine-tune's base styles keep theirs)."""
    metadata = {"style": hparams.get("style", {}), "loss": hparams.get("loss", {}),
                "image_size": hparams.get("image_size"), "steps": steps, "hardware": hardware}
    if artefacts is not None:
        metadata["artefacts"] = artefacts
    styles = [*((hparams.get("finetune") or {}).get("styles") or []),
              *({"name": name, "steps": steps} for name in (hparams.get("style") or {}).get("names") or [])]
    if len(styles) > 1:
        metadata["styles"] = styles
    return metadata


def _refuse_images(path: Path, head: bytes) -> None:
    """Raise ModelFileError when ``path`` is a picture (by suffix or its first 12 bytes ``head``) rather than
    a style model."""
    if path.suffix.lower() in IMAGE_SUFFIXES or head.startswith(IMAGE_MAGIC) or (head[:4], head[8:]) == (b"RIFF", b"WEBP"):
        raise ModelFileError(f"{path}: this is an image, not a style model: model= takes a .safetensors style model "
                             "(e.g. checkpoints/starry_night.safetensors); pass the photo as input=")


def _read_safetensors(path: Path) -> tuple[TransformerConfig, dict[str, torch.Tensor], dict[str, Any],
                                           list[torch.Tensor] | None]:
    """(architecture, weights, metadata, stored style images uint8 3,H,W or None) of a ``.safetensors`` style
    model. The header is size-checked and validated, and the tensors it lists checked against the network,
    before any tensor data is read."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    _refuse_images(path, head)
    check_header_size(path, head)
    problem = "not a readable .safetensors file"
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            stored = {name: _slice_info(handle.get_slice(name)) for name in handle.keys()}
            transformer, metadata = parse_header(path, raw)
            image_keys = _style_image_keys(path, stored)
            for key in image_keys:
                _check_style_image(path, *stored.pop(key))
            config = _checked_config(path, transformer, stored)
            check_styles(path, config, metadata, len(image_keys))
            problem = "truncated or corrupt weights"
            pixels = [handle.get_tensor(key) for key in image_keys] or None
            if pixels is not None:
                pixels = [image for tensor in pixels for image in tensor.reshape(-1, 3, *tensor.shape[-2:])]
            state = {name: handle.get_tensor(name) for name in stored}
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{path}: {problem} ({error}). " + REEXPORT_HINT) from error
    return config, state, metadata, pixels


def _slice_info(view: Any) -> tuple[bool, tuple[int, ...]]:
    """(is floating point, shape) of a safetensors slice, read from the header (dtype names as in the format)."""
    return view.get_dtype() in ("F16", "BF16", "F32", "F64"), tuple(view.get_shape())


def _style_image_keys(path: Path, stored: dict[str, tuple[bool, tuple[int, ...]]]) -> list[str]:
    """The stored style images' keys in style order: ``style_image``, or ``style_image.0``, ``style_image.1``..."""
    if STYLE_IMAGE_KEY in stored:
        return [STYLE_IMAGE_KEY]
    count = sum(1 for key in stored if key.startswith(STYLE_IMAGE_KEY + "."))
    keys = [f"{STYLE_IMAGE_KEY}.{i}" for i in range(count)]
    if count > MAX_STYLES or any(key not in stored for key in keys):
        raise ModelFileError(f"{path}: its stored style images are not numbered 0..{count - 1}. " + REEXPORT_HINT)
    return keys


def _check_style_image(path: Path, floating: bool, shape: tuple[int, ...]) -> None:
    """The stored style image must be uint8 K*3,H,W with K <= MAX_STYLES and sides <= MAX_IMAGE_SIDE."""
    if floating or len(shape) != 3 or shape[0] % 3 or not 3 <= shape[0] <= 3 * MAX_STYLES \
            or not all(1 <= side <= MAX_IMAGE_SIDE for side in shape[1:]):
        raise ModelFileError(f"{path}: its stored style image has shape {list(shape)} (expected 8-bit 3,H,W with "
                             f"sides up to {MAX_IMAGE_SIDE} px). " + REEXPORT_HINT)


def _checked_config(path: Path, transformer: dict[str, Any],
                    stored: dict[str, tuple[bool, tuple[int, ...]]]) -> TransformerConfig:
    """The TransformerConfig of the settings ``transformer`` (types already checked), after checking that ``stored`` (name -> (is floating, shape)) holds
    exactly the tensors that network has: their names and shapes come from a build on the meta device,
    which allocates no storage, so nothing is allocated for a network the file cannot fill."""
    try:
        config = TransformerConfig(**transformer)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: bad transformer settings in its metadata ({error}). " + REEXPORT_HINT) from None
    with torch.device("meta"):
        expected = TransformerNet(config).state_dict()
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [f"{name} {list(stored[name][1])} instead of {list(tensor.shape)}" for name, tensor in expected.items()
             if name in stored and (stored[name][1] != tuple(tensor.shape)
                                    or (tensor.is_floating_point() and not stored[name][0]))]
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} of another shape or type (e.g. {wrong[0]})" if wrong else "") if part)
        raise ModelFileError(f"{path}: weights do not match the fststyle transformer its metadata describes "
                             f"({config}): {details}. " + REEXPORT_HINT)
    return config


def _build(config: TransformerConfig, state: dict[str, torch.Tensor]) -> TransformerNet:
    """The network of ``config`` with ``state`` loaded (names and shapes already checked by _checked_config)."""
    model = TransformerNet(config)
    model.load_state_dict(state)
    return model


def _read_checkpoint(path: Path) -> tuple[TransformerConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The architecture, transformer weights and validated style-model metadata of a training checkpoint,
    loaded without unpickling code; the hyper-parameters are checked against the weights' names and shapes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol before it refuses a file
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text suggests weights_only=False: advice we must not relay
        raise ModelFileError(
            f"{path}: refused: it holds Python objects that a weights-only load does not accept, and a pickle "
            "carrying code is never run. Only checkpoints written by fststyle train load."
        ) from error
    except Exception as error:  # EOFError, RuntimeError (zip) for truncated or foreign files
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ModelFileError(f"{path}: not a readable checkpoint ({type(error).__name__}: {first_line}). "
                             "Only checkpoints written by fststyle train load.") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelFileError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    prefix = "transformer."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
             if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}
    hparams = checkpoint.get("hyper_parameters", {})
    if not state or not isinstance(hparams, dict) or not isinstance(hparams.get("transformer"), dict):
        raise ModelFileError(f"{path}: a Lightning checkpoint without an fststyle transformer")
    step = checkpoint.get("global_step", 0)
    metadata = training_metadata(hparams, steps=step if is_int(step) else 0)
    check_transformer(path, hparams["transformer"])
    check_metadata(path, metadata)
    config = _checked_config(path, hparams["transformer"],
                             {k: (v.dtype.is_floating_point, tuple(v.shape)) for k, v in state.items()})
    check_styles(path, config, metadata, 0)
    return config, state, metadata

