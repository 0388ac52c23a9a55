"""Style models on disk: the transformer's weights as ``.safetensors`` plus JSON metadata (DESIGN.md §6).

Loading a style model never unpickles. A Lightning ``.ckpt`` is read only with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fststyle.errors import UserError
from fststyle.files import atomic_write
from fststyle.transformer import TransformerConfig, TransformerNet

FORMAT = "fststyle.style-model/1"
METADATA_KEY = "fststyle"


class ModelFileError(UserError):
    """A file that is not a usable fststyle style model; the message names the file and the fix."""


STYLE_IMAGE_KEY = "style_image"


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
    """The metadata dict of a ``.safetensors`` style model, without loading its weights."""
    path = Path(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{path}: not a readable .safetensors file ({error}). "
                             "Re-export it with `python infer.py export=safetensors model=<run>.ckpt`.") from error
    if raw is None:
        raise ModelFileError(f"{path}: a .safetensors file without fststyle metadata; "
                             "export style models with fststyle (train.py writes one at the end of training).")
    info = json.loads(raw)
    if info.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unsupported style-model format {info.get('format')!r} (expected {FORMAT})")
    return info


def load_style_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the transformer of a ``.safetensors`` or Lightning ``.ckpt`` file in eval mode, with its metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"style model not found: {path}")
    if path.suffix == ".ckpt":
        state, info = _read_checkpoint(path)
    else:
        info = read_metadata(path)
        try:
            state = load_file(str(path))
            state.pop(STYLE_IMAGE_KEY, None)
        except (SafetensorError, OSError) as error:
            raise ModelFileError(f"{path}: truncated or corrupt weights ({error})") from error
    try:
        config = TransformerConfig(**info["transformer"])
        model = TransformerNet(config)
        model.load_state_dict(state)
    except (TypeError, KeyError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path}: weights do not match the fststyle transformer ({error})") from error
    return model.to(device).eval(), info


def read_style_image(path: str | Path) -> torch.Tensor | None:
    """The style image 1,3,H,W in [0,1] stored in a ``.safetensors`` style model, or None."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        if STYLE_IMAGE_KEY not in handle.keys():
            return None
        return handle.get_tensor(STYLE_IMAGE_KEY).float().div(255).unsqueeze(0)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Transformer weights and style-model metadata from a training checkpoint, loaded without unpickling code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for code-carrying pickles, EOFError/RuntimeError for truncation
        raise ModelFileError(
            f"{path}: refused or unreadable as a weights-only checkpoint ({type(error).__name__}: {error}). "
            "Only checkpoints written by fststyle's train.py load; a pickle carrying code is never run."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelFileError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    prefix = "transformer."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    hparams = checkpoint.get("hyper_parameters", {})
    if not state or "transformer" not in hparams:
        raise ModelFileError(f"{path}: a Lightning checkpoint without an fststyle transformer")
    info = style_metadata(hparams, steps=int(checkpoint.get("global_step", 0)))
    return state, info


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
    state, info = _read_checkpoint(checkpoint)
    model = TransformerNet(TransformerConfig(**info["transformer"]))
    model.load_state_dict(state)
    output = Path(output) if output is not None else checkpoint.with_suffix(".safetensors")
    return save_style_model(model, output, {k: v for k, v in info.items() if k not in ("format", "transformer")})
