"""Portable exports of a style model: ONNX (dynamic N, H, W) and TorchScript (any size), the mobile formats
(Core ML, LiteRT, ExecuTorch: fststyle.stylize.mobile), plus the ``.ckpt`` -> ``.safetensors`` conversion, all
behind ``export_model`` (``fststyle export MODEL -o OUT.onnx``: the output's suffix, or ``format=``, chooses).
The exporters take a loaded ``StyleModel`` or a model file's path.

Both export ``TransformerNet`` itself: its forward has no data-dependent branch and its padding is a function
of the input size; its inference-only fast paths (``fast_inference``, recorded statistics) are off in a loaded
model and skipped under TorchScript. A network of one style takes one input, ``images``; a network of S styles
(conditional instance norm) also takes ``style_weights`` 1,S or N,S, so the exported file chooses or blends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fststyle.bundled import bundled_path, find_model
from fststyle.errors import UserError, require_extra
from fststyle.io.files import atomic_write, check_writable, refuse_overwriting_inputs
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import ModelFileError, StyleModel
from fststyle.stylize.mobile import (
    DEFAULT_MAX_SIZE,
    DEFAULT_SIZES,
    MOBILE_SUFFIXES,
    check_mobile_request,
    export_mobile,
)

#: ONNX opset for the dynamo exporter (opset 18 has Pad with reflect mode and Resize; onnxruntime >= 1.14 runs it)
ONNX_OPSET = 18
#: smallest H, W of the exported ONNX graph: at >= 8 px the multiple-of-4 padding is always a valid reflection
#: (TransformerNet.MIN_SIZE); smaller images need TransformerNet's replicate fallback, which the graph omits
ONNX_MIN_SIZE = TransformerNet.MIN_SIZE
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors", **MOBILE_SUFFIXES}
#: what torch's dynamo ONNX exporter imports (the ``onnx`` extra also installs onnxruntime, to run the file)
ONNX_EXPORTER_PACKAGES = ("onnx", "onnxscript")


class _RowPerImage(nn.Module):
    """A network of several styles whose ``style_weights`` may hold one row for the whole batch (1,S) or one per
    image (N,S): the rows are indexed per image, so the ONNX graph needs no broadcast between two dynamic batch
    sizes. images N,3,H,W, style_weights 1,S or N,S -> N,3,H,W."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        # the row count as a tensor: the exporter has no ONNX form for a remainder by a symbolic int
        row_count = torch.ones_like(style_weights[:, 0], dtype=torch.int64).sum()
        rows = torch.arange(images.shape[0], device=images.device) % row_count
        return self.network(images, style_weights.index_select(0, rows))


def export_onnx(model: StyleModel | str | Path, out: str | Path) -> Path:
    """Write the style model (or the one at that path) as ONNX with dynamic batch, height and width (H, W >= 8);
    a model of S styles also takes ``style_weights`` 1,S or N,S."""
    _require_onnx_exporter()
    net = _network(model).eval()
    # batch 2 and odd sizes so the exporter cannot specialise any of them to a constant
    example = torch.rand(2, 3, 67, 61)
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=ONNX_MIN_SIZE),
            3: torch.export.Dim("width", min=ONNX_MIN_SIZE)}
    styles = net.config.styles
    if styles > 1:  # 3 rows: a batch size of its own, neither 1 nor the images' 2
        module, inputs = _RowPerImage(net).eval(), (example, torch.rand(3, styles))
        names, shapes = ["images", "style_weights"], {"images": dims,
                                                      "style_weights": {0: torch.export.Dim("style_rows", min=1)}}
    else:
        module, inputs, names, shapes = net, (example,), ["images"], {"images": dims}
    out = Path(out)
    with atomic_write(out) as tmp:
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=ONNX_OPSET, input_names=names,
                                    output_names=["stylised"], dynamic_shapes=shapes, verbose=False)
        program.save(str(tmp))
    return out


def _network(model: StyleModel | str | Path) -> TransformerNet:
    """The network of ``model``, loaded on the CPU when it is a path."""
    return (model if isinstance(model, StyleModel) else StyleModel.load(model)).network


def _require_onnx_exporter() -> None:
    """Raise a UserError naming the install command when the ONNX exporter's packages cannot be imported."""
    require_extra("format=onnx", ONNX_EXPORTER_PACKAGES, "onnx")


def export_torchscript(model: StyleModel | str | Path, out: str | Path) -> Path:
    """Write the style model (or the one at that path) as a scripted TorchScript module that runs any H, W;
    a model of S styles takes ``(images, style_weights)`` with style_weights 1,S or N,S."""
    net = _network(model)
    scripted = torch.jit.script(net.eval())
    out = Path(out)
    with atomic_write(out) as tmp:
        scripted.save(str(tmp))
    return out


def export_format(out: str | Path | None) -> str:
    """The format ``out``'s suffix chooses (onnx when there is no output); a UserError for an unknown suffix."""
    if out is None:
        return "onnx"
    suffix = Path(out).suffix.lower()
    for kind, known in EXPORT_SUFFIXES.items():
        if known == suffix:
            return kind
    raise UserError(f"output={out}: {suffix or 'no suffix'} names no export format; end it in one of "
                    f"{', '.join(EXPORT_SUFFIXES.values())}, or set format= ({'|'.join(EXPORT_SUFFIXES)})")


def export_model(model_path: str | Path, kind: str | None = None, out: str | Path | None = None,
                 quantize: str | None = None, sizes: Sequence[str] = DEFAULT_SIZES,
                 max_size: int = DEFAULT_MAX_SIZE) -> Path:
    """``kind`` in onnx | torchscript | safetensors (the last from a training ``.ckpt``) | coreml | litert |
    executorch, or None for the one ``out``'s suffix names, of the model file or shipped model named
    ``model_path``; ``out`` defaults to the model path with the format's suffix (for a shipped model: its name,
    in the working directory). ``quantize`` (fp16 | int8), ``sizes`` and ``max_size``: the mobile formats'
    (fststyle.stylize.mobile)."""
    kind = export_format(out) if kind is None else kind
    if kind not in EXPORT_SUFFIXES:
        raise UserError(f"format={kind!r} is not a format; use one of {sorted(EXPORT_SUFFIXES)}")
    if quantize is not None and kind not in MOBILE_SUFFIXES:
        raise UserError(f"quantize={quantize} applies to the mobile formats ({', '.join(MOBILE_SUFFIXES.values())}), "
                        f"not to {kind}")
    model_path = find_model(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"style model not found: {model_path}; pass a shipped model's name (fststyle models) "
                             "or a .safetensors / .ckpt file")
    suffix = EXPORT_SUFFIXES[kind]
    shipped = Path(model_path).parent == bundled_path("checkpoints")
    default = Path(model_path.stem + suffix) if shipped else model_path.with_suffix(suffix)
    out = Path(out) if out is not None else default
    refuse_overwriting_inputs([model_path], [out])
    if out.suffix != suffix:
        raise UserError(f"format={kind} writes a {suffix} file, but output={out} ends in {out.suffix!r}; "
                        f"e.g. output={out.with_suffix(suffix)}")
    check_writable(out, folder=kind == "coreml")  # an .mlpackage is a folder
    if kind == "safetensors" and model_path.suffix != ".ckpt":
        raise UserError(f"format=safetensors converts a training .ckpt; {model_path} is already a style model")
    if kind == "onnx":
        _require_onnx_exporter()
    if kind in MOBILE_SUFFIXES:
        check_mobile_request(kind, quantize, sizes, max_size)
    model = StyleModel.load(model_path)
    if kind == "onnx":
        return export_onnx(model, out)
    if kind == "torchscript":
        return export_torchscript(model, out)
    if kind in MOBILE_SUFFIXES:
        return export_mobile(model, kind, out, quantize, sizes, max_size)
    return model.save(out)
