"""A style model file's header, read and checked without torch: the safetensors JSON header, the fststyle
metadata in it (architecture, style, training record) and its bounds (docs/design.md §Model files). Listing
models (``fststyle models``) reads only this; fststyle.style_model reads the weights after these checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from fststyle.errors import UserError
from fststyle.nets.transformer_config import MAX_STYLES, TransformerConfig

FORMAT = "fststyle.style-model/1"
METADATA_KEY = "fststyle"
REEXPORT_HINT = "Re-export it with `fststyle export <run>/checkpoints/last.ckpt format=safetensors`."
#: fststyle's own metadata is under 1 KB (architecture, style, loss settings, steps); 1 MiB leaves room
#: for any later fields and refuses a header that would make the JSON parser hold a large document
MAX_METADATA_BYTES = 2**20
#: the metadata plus one ~100-byte header entry per tensor (a network at the TransformerConfig bounds has
#: about 550 tensors): 2 MiB is generous. safetensors itself accepts up to 100 MB.
MAX_HEADER_BYTES = 2 * MAX_METADATA_BYTES
#: longest side of a stored style image and of the image sizes in the metadata: a 4096 px training crop
#: already needs a 2 GiB float32 activation for the first 32-channel layer of one image
MAX_IMAGE_SIDE = 4096
#: longest style name a model file may hold (names are the style images' file stems)
MAX_STYLE_NAME = 200
#: TransformerConfig's fields and their annotations (strings under ``from __future__ import annotations``)
TRANSFORMER_FIELDS = {field.name: str(field.type) for field in dataclasses.fields(TransformerConfig)}


def read_model_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(transformer settings, metadata) of the ``.safetensors`` style model ``path``, from its header alone
    (size-checked; no tensor read; safetensors' reader without a framework that needs torch), checked as
    parse_header checks them."""
    with open(path, "rb") as handle:
        check_header_size(path, handle.read(8))
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{path}: not a readable .safetensors file ({error}). " + REEXPORT_HINT) from error
    return parse_header(path, raw)


def check_header_size(path: Path, head: bytes) -> int:
    """The safetensors header's length from the file's first 8 bytes ``head``; ModelFileError when they are
    missing or claim more than MAX_HEADER_BYTES."""
    header_bytes = int.from_bytes(head[:8], "little") if len(head) >= 8 else None
    if header_bytes is None or header_bytes > MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: not a .safetensors style model (its header is missing or claims "
                             f"{header_bytes} bytes, more than {MAX_HEADER_BYTES}). " + REEXPORT_HINT)
    return header_bytes


def style_names(styles: int, metadata: dict[str, Any], path: Path | None) -> list[str]:
    """The names of the ``styles`` styles a network holds, in the order of its style weights, from its (checked)
    metadata; a one-style model without a recorded name takes its file's stem."""
    if styles > 1:
        return [entry["name"] for entry in metadata["styles"]]
    style = metadata.get("style") or {}
    return [str(style.get("name") or (path.stem if path is not None else "style"))]


class ModelFileError(UserError):
    """A file that is not a usable fststyle style model; the message names the file and the fix."""


def parse_header(path: Path, raw: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(transformer settings, metadata) of the fststyle JSON ``raw`` in the header of ``path``, their types and
    bounds checked; the "format" and "transformer" keys save writes are not part of the metadata."""
    if raw is None:
        raise ModelFileError(f"{path}: a .safetensors file without fststyle metadata; "
                             "export style models with fststyle (fststyle train writes one at the end of training).")
    if len(raw) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{path}: its fststyle metadata is {len(raw)} bytes, more than {MAX_METADATA_BYTES}; "
                             "not a model fststyle wrote. " + REEXPORT_HINT)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: its fststyle metadata is not valid JSON ({error}). " + REEXPORT_HINT) from None
    if not isinstance(header, dict):
        raise bad_metadata(path, f"a JSON {type(header).__name__} instead of an object")
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unsupported style-model format {header.get('format')!r} (expected {FORMAT})")
    metadata = {k: v for k, v in header.items() if k not in ("format", "transformer")}
    check_transformer(path, header.get("transformer"))
    check_metadata(path, metadata)
    return header["transformer"], metadata


def bad_metadata(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: bad style-model metadata: {what}. " + REEXPORT_HINT)


def check_transformer(path: Path, transformer: Any) -> None:
    """Raise ModelFileError unless ``transformer`` maps TransformerConfig fields to values of their types."""
    if not isinstance(transformer, dict):
        raise bad_metadata(path, "no 'transformer' object (the network's architecture)")
    for key, value in transformer.items():
        if key not in TRANSFORMER_FIELDS:
            raise bad_metadata(path, f"unknown transformer setting {key!r}")
        if not has_type(value, TRANSFORMER_FIELDS[key]):
            raise bad_metadata(path, f"transformer.{key} is {value!r}, not {TRANSFORMER_FIELDS[key]}")


def check_metadata(path: Path, info: dict[str, Any]) -> None:
    """Raise ModelFileError unless ``info`` has the types and bounds of the metadata fststyle writes and reads."""
    def bad(what: str) -> ModelFileError:
        return bad_metadata(path, what)

    for key in ("style", "loss"):
        if not isinstance(info.get(key) or {}, dict):
            raise bad(f"'{key}' is {type(info[key]).__name__}, not an object")
    style = info.get("style") or {}
    for key, value in (("image_size", info.get("image_size")), ("style.size", style.get("size"))):
        if value is not None and (not is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE):
            raise bad(f"{key} is {value!r}, not a side in 1..{MAX_IMAGE_SIDE} px")
    if info.get("steps") is not None and (not is_int(info["steps"]) or info["steps"] < 0):
        raise bad(f"steps is {info['steps']!r}")
    if info.get("hardware") is not None and not isinstance(info["hardware"], str):
        raise bad(f"hardware is {type(info['hardware']).__name__}, not a string")
    artefacts = info.get("artefacts")
    if artefacts is not None and not is_artefact_record(artefacts, nested=True):
        raise bad(f"artefacts is {artefacts!r}, not {{'step': int, 'blobs': number, 'hatching': number}}")
    blend = style.get("blend")
    if blend is not None and (not isinstance(blend, list) or len(blend) > MAX_STYLES
                              or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in blend)):
        raise bad(f"style.blend is {blend!r}, not a list of numbers")


def is_artefact_record(record: Any, nested: bool) -> bool:
    """Whether ``record`` is an artefacts entry: numbers (or null) for blobs and hatching, a step, and (``nested``)
    one such entry per style under ``styles``."""
    if not isinstance(record, dict) or len(record) > MAX_STYLES + 4:
        return False
    for key, value in record.items():
        if key == "styles" and nested:
            if not isinstance(value, dict) or not all(isinstance(name, str) and is_artefact_record(entry, False)
                                                      for name, entry in value.items()):
                return False
        elif key == "step" and nested:
            if not is_int(value):
                return False
        elif key not in ("blobs", "hatching") or not (value is None or has_type(value, "float")):
            return False
    return True


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def has_type(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a TransformerConfig annotation (an int is a float; a bool is no number)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_int(value) if annotation == "int" else isinstance(value, str)


def check_styles(path: Path, config: TransformerConfig, metadata: dict[str, Any], images: int) -> None:
    """A network of several styles needs ``styles``: one ``{"name", "steps"}`` entry per style, distinct names,
    and, when images are stored, one per style."""
    styles = metadata.get("styles")
    if config.styles == 1:
        if styles is not None:
            raise bad_metadata(path, "'styles' is listed for a network of one style")
        return
    if not isinstance(styles, list) or len(styles) != config.styles:
        raise bad_metadata(path, f"the network holds {config.styles} styles, but 'styles' is {styles!r}")
    for entry in styles:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and 0 < len(entry["name"]) <= MAX_STYLE_NAME and is_int(entry.get("steps")) and entry["steps"] >= 0):
            raise bad_metadata(path, f"styles entry {entry!r} is not {{'name': str, 'steps': int}}")
    if len({entry["name"] for entry in styles}) != len(styles):
        raise bad_metadata(path, "two styles share a name")
    if images not in (0, config.styles):
        raise bad_metadata(path, f"{images} style images stored for {config.styles} styles")
