"""Style models on disk: the transformer's weights as ``.safetensors`` plus JSON metadata (docs/design.md §Model files).

Loading a style model never unpickles. A Lightning ``.ckpt`` is read only with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fststyle.errors import UserError
from fststyle.files import atomic_write
from fststyle.images import IMAGE_SUFFIXES
from fststyle.transformer import TransformerConfig, TransformerNet

FORMAT = "fststyle.style-model/1"
METADATA_KEY = "fststyle"
STYLE_IMAGE_KEY = "style_image"
REEXPORT_HINT = "Re-export it with `python infer.py export=safetensors model=<run>.ckpt`."

#: fststyle's own metadata is under 1 KB (architecture, style, loss settings, steps); 1 MiB leaves room
#: for any later fields and refuses a header that would make the JSON parser hold a large document
MAX_METADATA_BYTES = 2**20
#: the metadata plus one ~100-byte header entry per tensor (a network at the TransformerConfig bounds has
#: about 550 tensors): 2 MiB is generous. safetensors itself accepts up to 100 MB.
MAX_HEADER_BYTES = 2 * MAX_METADATA_BYTES
#: longest side of a stored style image and of the image sizes in the metadata: a 4096 px training crop
#: already needs a 2 GiB float32 activation for the first 32-channel layer of one image
MAX_IMAGE_SIDE = 4096
#: style images one model may store or blend; conditional instance norm models (Dumoulin et al. 2017)
#: reach 32 styles
MAX_STYLES = 256
#: magic bytes of the picture formats fststyle reads (JPEG, PNG, GIF, TIFF little/big endian); WebP is
#: "RIFF" + size + "WEBP", checked apart
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*")
#: TransformerConfig's fields and their annotations (strings under ``from __future__ import annotations``)
TRANSFORMER_FIELDS = {field.name: str(field.type) for field in dataclasses.fields(TransformerConfig)}


class ModelFileError(UserError):
    """A file that is not a usable fststyle style model; the message names the file and the fix."""


def save_style_model(transformer: TransformerNet, path: str | Path, metadata: dict[str, Any],
                     style_image: torch.Tensor | None = None) -> Path:
    """Write ``transformer``, ``metadata`` (style name, loss config, steps, ...) and the style image
    1,3,H,W in [0,1] the model was trained on (stored as uint8, so the loss can be rebuilt) to ``path``."""
    path = Path(path)
    info = {"format": FORMAT, "transformer": transformer.config.to_dict(), **metadata}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in transformer.state_dict().items()}
    if style_image is not None:
        pixels = style_image.detach().cpu().reshape(-1, *style_image.shape[-2:])
        tensors[STYLE_IMAGE_KEY] = (pixels * 255).round().to(torch.uint8).contiguous()
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated metadata dict of a ``.safetensors`` style model, read from its header alone."""
    return _read_header(Path(path))[0]


def load_style_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the transformer of a ``.safetensors`` or Lightning ``.ckpt`` file in eval mode, with its metadata.

    The metadata is validated and the stored tensors' names and shapes are checked against the network it
    describes before anything is allocated: a file cannot make us build a network its weights do not fill."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"style model not found: {path}")
    if path.suffix == ".ckpt":
        config, state, info = _read_checkpoint(path)
    else:
        info, stored = _read_header(path)
        stored.pop(STYLE_IMAGE_KEY, None)
        config = _checked_config(path, info, stored)
        try:
            with safe_open(str(path), framework="pt") as handle:
                state = {name: handle.get_tensor(name) for name in stored}
        except (SafetensorError, OSError) as error:
            raise ModelFileError(f"{path}: truncated or corrupt weights ({error})") from error
    return _build(config, state).to(device).eval(), info


def read_style_image(path: str | Path) -> torch.Tensor | None:
    """The style image(s) K,3,H,W in [0,1] stored in a ``.safetensors`` style model, or None."""
    path = Path(path)
    _, stored = _read_header(path)
    if STYLE_IMAGE_KEY not in stored:
        return None
    with safe_open(str(path), framework="pt") as handle:
        pixels = handle.get_tensor(STYLE_IMAGE_KEY)
    return pixels.float().div(255).reshape(-1, 3, *pixels.shape[-2:])


def _refuse_images(path: Path) -> None:
    """Raise ModelFileError when ``path`` is a picture (by suffix or magic bytes) rather than a style model."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    if path.suffix.lower() in IMAGE_SUFFIXES or head.startswith(IMAGE_MAGIC) or (head[:4], head[8:]) == (b"RIFF", b"WEBP"):
        raise ModelFileError(f"{path}: this is an image, not a style model: model= takes a .safetensors style model "
                             "(e.g. checkpoints/starry_night.safetensors); pass the photo as input=")


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[bool, tuple[int, ...]]]]:
    """(validated metadata, {tensor name: (is floating point, shape)}) of a ``.safetensors`` file, from its
    header alone: no tensor data is read. The stored style image is checked here too."""
    if not path.is_file():
        raise ModelFileError(f"style model not found: {path}")
    _refuse_images(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
    header_bytes = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
    if header_bytes is None or header_bytes > MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: not a .safetensors style model (its header is missing or claims "
                             f"{header_bytes} bytes, more than {MAX_HEADER_BYTES}). " + REEXPORT_HINT)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            stored = {name: _slice_info(handle.get_slice(name)) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{path}: not a readable .safetensors file ({error}). " + REEXPORT_HINT) from error
    if raw is None:
        raise ModelFileError(f"{path}: a .safetensors file without fststyle metadata; "
                             "export style models with fststyle (train.py writes one at the end of training).")
    if len(raw) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{path}: its fststyle metadata is {len(raw)} bytes, more than {MAX_METADATA_BYTES}; "
                             "not a model fststyle wrote. " + REEXPORT_HINT)
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: its fststyle metadata is not valid JSON ({error}). " + REEXPORT_HINT) from None
    _check_metadata(path, info)
    if STYLE_IMAGE_KEY in stored:
        _check_style_image(path, *stored[STYLE_IMAGE_KEY])
    return info, stored


def _slice_info(view: Any) -> tuple[bool, tuple[int, ...]]:
    """(is floating point, shape) of a safetensors slice, read from the header (dtype names as in the format)."""
    return view.get_dtype() in ("F16", "BF16", "F32", "F64"), tuple(view.get_shape())


def _check_metadata(path: Path, info: Any) -> None:
    """Raise ModelFileError unless ``info`` has the types and bounds of the metadata fststyle writes and reads."""
    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: bad style-model metadata: {what}. " + REEXPORT_HINT)

    if not isinstance(info, dict):
        raise bad(f"a JSON {type(info).__name__} instead of an object")
    if info.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unsupported style-model format {info.get('format')!r} (expected {FORMAT})")
    transformer = info.get("transformer")
    if not isinstance(transformer, dict):
        raise bad("no 'transformer' object (the network's architecture)")
    for key, value in transformer.items():
        if key not in TRANSFORMER_FIELDS:
            raise bad(f"unknown transformer setting {key!r}")
        if not _has_type(value, TRANSFORMER_FIELDS[key]):
            raise bad(f"transformer.{key} is {value!r}, not {TRANSFORMER_FIELDS[key]}")
    for key in ("style", "loss"):
        if not isinstance(info.get(key) or {}, dict):
            raise bad(f"'{key}' is {type(info[key]).__name__}, not an object")
    style = info.get("style") or {}
    for key, value in (("image_size", info.get("image_size")), ("style.size", style.get("size"))):
        if value is not None and (not _is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE):
            raise bad(f"{key} is {value!r}, not a side in 1..{MAX_IMAGE_SIDE} px")
    if info.get("steps") is not None and (not _is_int(info["steps"]) or info["steps"] < 0):
        raise bad(f"steps is {info['steps']!r}")
    blend = style.get("blend")
    if blend is not None and (not isinstance(blend, list) or len(blend) > MAX_STYLES
                              or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in blend)):
        raise bad(f"style.blend is {blend!r}, not a list of numbers")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a TransformerConfig annotation (an int is a float; a bool is no number)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _is_int(value) if annotation == "int" else isinstance(value, str)


def _check_style_image(path: Path, floating: bool, shape: tuple[int, ...]) -> None:
    """The stored style image must be uint8 K*3,H,W with K <= MAX_STYLES and sides <= MAX_IMAGE_SIDE."""
    if floating or len(shape) != 3 or shape[0] % 3 or not 3 <= shape[0] <= 3 * MAX_STYLES \
            or not all(1 <= side <= MAX_IMAGE_SIDE for side in shape[1:]):
        raise ModelFileError(f"{path}: its stored style image has shape {list(shape)} (expected 8-bit 3,H,W with "
                             f"sides up to {MAX_IMAGE_SIDE} px). " + REEXPORT_HINT)


def _checked_config(path: Path, info: dict[str, Any],
                    stored: dict[str, tuple[bool, tuple[int, ...]]]) -> TransformerConfig:
    """The metadata's TransformerConfig, after checking that ``stored`` (name -> (is floating, shape)) holds
    exactly the tensors that network has: their names and shapes come from a build on the meta device,
    which allocates no storage, so nothing is allocated for a network the file cannot fill."""
    try:
        config = TransformerConfig(**info["transformer"])
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
            "carrying code is never run. Only checkpoints written by fststyle's train.py load."
        ) from error
    except Exception as error:  # EOFError, RuntimeError (zip) for truncated or foreign files
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ModelFileError(f"{path}: not a readable checkpoint ({type(error).__name__}: {first_line}). "
                             "Only checkpoints written by fststyle's train.py load.") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelFileError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    prefix = "transformer."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
             if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}
    hparams = checkpoint.get("hyper_parameters", {})
    if not state or not isinstance(hparams, dict) or not isinstance(hparams.get("transformer"), dict):
        raise ModelFileError(f"{path}: a Lightning checkpoint without an fststyle transformer")
    step = checkpoint.get("global_step", 0)
    info = style_metadata(hparams, steps=step if _is_int(step) else 0)
    _check_metadata(path, info)
    config = _checked_config(path, info, {k: (v.dtype.is_floating_point, tuple(v.shape)) for k, v in state.items()})
    return config, state, info


def style_metadata(hparams: dict[str, Any], steps: int) -> dict[str, Any]:
    """The metadata stored with an exported model, from the training module's hyper-parameters."""
    return {
        "format": FORMAT,
        "transformer": dict(hparams["transformer"]),
        "style": hparams.get("style", {}),
        "loss": hparams.get("loss", {}),
        "image_size": hparams.get("image_size"),
        "steps": steps,
    }


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Write the style model of a training ``.ckpt`` as ``.safetensors`` (next to it when ``output`` is None)."""
    checkpoint = Path(checkpoint)
    config, state, info = _read_checkpoint(checkpoint)
    model = _build(config, state)
    output = Path(output) if output is not None else checkpoint.with_suffix(".safetensors")
    return save_style_model(model, output, {k: v for k, v in info.items() if k not in ("format", "transformer")})
