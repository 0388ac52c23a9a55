"""Exports for phones and the edge: Core ML (``.mlpackage``), LiteRT (``.tflite``) and ExecuTorch (``.pte``),
each through its own converter, an optional extra (``pip install "fststyle[coreml]"``, ``[litert]``,
``[executorch]``). docs/mobile.md says what each was checked with.

All three run ``TransformerNet.transform`` at batch 1: the network without its padding to a multiple of 4, so
an image's height and width must be multiples of 4 (camera frames and phone photos are). The converters take
no padding whose amount depends on a dynamic size: with it, torch.export cannot prove the padding's mode for
all sizes, and litert-torch 0.10 cannot lower it (docs/mobile.md, "Why multiples of 4").

Sizes: Core ML takes any height and width from 8 to ``max_size`` (``RangeDim``); ExecuTorch the same (a
dynamic shape, whose memory is planned for ``max_size`` squared); LiteRT holds one signature per size in
``sizes`` (shared weights), since litert-torch 0.10 cannot lower the network's reflection padding at a dynamic
size. A network of S styles also takes ``style_weights`` 1,S (one-hot: a style; convex: a blend).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from fststyle.errors import UserError, require_extra
from fststyle.io.files import atomic_write, atomic_write_folder
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import StyleModel

#: format -> the suffix that chooses it
MOBILE_SUFFIXES = {"coreml": ".mlpackage", "litert": ".tflite", "executorch": ".pte"}
#: format -> (the extra that installs its converter, the modules the export imports)
CONVERTERS = {"coreml": ("coreml", ("coremltools",)),
              "litert": ("litert", ("litert_torch", "ai_edge_quantizer")),
              "executorch": ("executorch", ("executorch",))}
#: the smaller variants each format offers (docs/mobile.md: ExecuTorch's XNNPACK fp16 output was 51 levels off)
QUANTIZATIONS = {"coreml": ("fp16", "int8"), "litert": ("fp16", "int8"), "executorch": ("int8",)}
#: largest height and width of the Core ML and ExecuTorch exports: a 1280x720 camera frame in either
#: orientation; ExecuTorch plans its memory for a max_size x max_size image
DEFAULT_MAX_SIZE = 1280
#: the LiteRT signatures, WIDTHxHEIGHT as camera resolutions are written: squares for photos, and VGA and
#: 720p camera frames in landscape and portrait
DEFAULT_SIZES = ("512x512", "1024x1024", "640x480", "480x640", "1280x720", "720x1280")
#: the size Core ML reports as the input's default (the middle of what a phone app feeds it)
COREML_DEFAULT_SIDE = 512
#: the oldest OS whose Core ML runs the exported program: flexible image sizes in and out (iOS 16) and int8
#: weights dequantised on load (``constexpr_affine_dequantize``, iOS 16)
COREML_TARGET = "iOS16"
STRIDE = TransformerNet.STRIDE
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class MobileForward(nn.Module):
    """The network as the mobile exports run it: images 1,3,H,W (H, W multiples of 4, values in [0, 1] times
    ``pixel_scale``) and, for S styles, style_weights 1,S -> 1,3,H,W in the same range."""

    def __init__(self, network: TransformerNet, pixel_scale: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.pixel_scale = pixel_scale
        self.eval()  # inference only, the network included

    def forward(self, images: torch.Tensor, style_weights: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        if self.pixel_scale == 1.0:
            return self.network.transform(images, style_weights)
        return self.network.transform(images / self.pixel_scale, style_weights) * self.pixel_scale


def parse_sizes(sizes: Sequence[str]) -> list[tuple[int, int]]:
    """``["1280x720", ...]`` (WIDTHxHEIGHT) -> [(1280, 720), ...]; a UserError names a malformed or unusable size."""
    parsed = []
    for size in sizes:
        match = _SIZE.match(str(size).strip())
        width, height = (int(match[1]), int(match[2])) if match else (0, 0)
        if not match or width % STRIDE or height % STRIDE or min(width, height) < TransformerNet.MIN_SIZE:
            raise UserError(f"sizes: {size!r} is not WIDTHxHEIGHT with both multiples of {STRIDE} and at least "
                            f"{TransformerNet.MIN_SIZE}, e.g. sizes='[1280x720,720x1280]'")
        parsed.append((width, height))
    if not parsed:
        raise UserError("sizes= is empty; a LiteRT export needs at least one WIDTHxHEIGHT, e.g. sizes='[512x512]'")
    return parsed


def check_mobile_request(kind: str, quantize: str | None, sizes: Sequence[str], max_size: int) -> None:
    """Raise a UserError for a variant the format lacks, a bad size, or a converter that is not installed,
    before any model is loaded."""
    if quantize is not None and quantize not in QUANTIZATIONS[kind]:
        offered = "|".join(QUANTIZATIONS[kind])
        raise UserError(f"quantize={quantize} is not offered for {kind}; use quantize={offered} or leave it out "
                        "(fp32); docs/mobile.md says why")
    if kind == "litert":
        parse_sizes(sizes)
    elif not (isinstance(max_size, int) and max_size >= TransformerNet.MIN_SIZE and max_size % STRIDE == 0):
        raise UserError(f"max_size={max_size} must be a multiple of {STRIDE} and at least {TransformerNet.MIN_SIZE}")
    require_converter(kind)


def require_converter(kind: str) -> None:
    """Raise a UserError naming the install command when ``kind``'s converter cannot be imported."""
    extra, modules = CONVERTERS[kind]
    require_extra(f"a {MOBILE_SUFFIXES[kind]} export", modules, extra)


def _example_inputs(network: TransformerNet, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Inputs of MobileForward at one size: images 1,3,H,W and, for S styles, even style weights 1,S."""
    images = torch.rand(1, 3, height, width)
    styles = network.config.styles
    return (images,) if styles == 1 else (images, torch.full((1, styles), 1.0 / styles))


def exported_program(module: nn.Module, network: TransformerNet, max_size: int) -> torch.export.ExportedProgram:
    """``module`` (MobileForward, or a graph of it, in eval mode) through torch.export with a dynamic height and
    width: multiples of 4 from 8 to ``max_size``."""
    # 68 x 60: multiples of 4 that differ, so the exporter specialises neither side to the other or to a constant
    inputs = _example_inputs(network, 68, 60)
    quarters = {2: STRIDE * torch.export.Dim("height_quarters", min=TransformerNet.MIN_SIZE // STRIDE,
                                             max=max_size // STRIDE),
                3: STRIDE * torch.export.Dim("width_quarters", min=TransformerNet.MIN_SIZE // STRIDE,
                                             max=max_size // STRIDE)}
    shapes = (quarters,) if len(inputs) == 1 else (quarters, None)
    return torch.export.export(module, inputs, dynamic_shapes=shapes)


def export_coreml(network: TransformerNet, out: Path, quantize: str | None = None,
                  max_size: int = DEFAULT_MAX_SIZE) -> Path:
    """Write ``network`` as a Core ML ML program (.mlpackage): image ``images`` (RGB, any H, W multiple of 4 up
    to ``max_size``) [+ ``style_weights`` 1,S] -> image ``stylised``. fp32 computes in float32; fp16 in
    float16; int8 stores int8 weights (per output channel) and computes in float16."""
    import coremltools as ct
    from torch._decomp import get_decompositions

    # pixel values 0-255 in and out, as Core ML's image type gives and takes them
    program = exported_program(MobileForward(network, pixel_scale=255.0), network, max_size)
    # coremltools 9 has no addcmul (the conditional norm's scale and shift); its decomposition is a mul and an add
    program = program.run_decompositions(get_decompositions([torch.ops.aten.addcmul]))
    sides = [ct.RangeDim(TransformerNet.MIN_SIZE, max_size, default=COREML_DEFAULT_SIDE) for _ in range(2)]
    inputs: list[Any] = [ct.ImageType(name="images", shape=ct.Shape((1, 3, *sides)), color_layout=ct.colorlayout.RGB)]
    if network.config.styles > 1:
        inputs.append(ct.TensorType(name="style_weights", shape=(1, network.config.styles)))
    precision = ct.precision.FLOAT32 if quantize is None else ct.precision.FLOAT16
    model = ct.convert(program, inputs=inputs, outputs=[ct.ImageType(name="stylised", color_layout=ct.colorlayout.RGB)],
                       convert_to="mlprogram", compute_precision=precision,
                       minimum_deployment_target=getattr(ct.target, COREML_TARGET))
    if quantize == "int8":
        weights = ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                             granularity="per_channel")
        model = ct.optimize.coreml.linear_quantize_weights(
            model, ct.optimize.coreml.OptimizationConfig(global_config=weights))
    with atomic_write_folder(out) as folder:
        model.save(str(folder))
    return out


def export_litert(network: TransformerNet, out: Path, quantize: str | None = None,
                  sizes: Sequence[str] = DEFAULT_SIZES) -> Path:
    """Write ``network`` as a LiteRT flatbuffer (.tflite) with one signature per WIDTHxHEIGHT in ``sizes``, each
    ``images`` 1,3,H,W in [0, 1] [+ ``style_weights`` 1,S] -> ``output_0`` 1,3,H,W. fp16 stores float16 weights
    and int8 int8 weights (per output channel), both dequantised to float32 for the computation."""
    import litert_torch

    module = MobileForward(network)
    converter: Any = litert_torch
    for width, height in parse_sizes(sizes):
        names = ("images", "style_weights")
        converter = converter.signature(f"{width}x{height}", module,
                                        sample_kwargs=dict(zip(names, _example_inputs(network, height, width), strict=False)))
    edge_model = converter.convert()
    with atomic_write(out) as tmp:
        edge_model.export(str(tmp))
        if quantize is not None:
            tmp.write_bytes(litert_weights_quantized(tmp, quantize))
    return out


def litert_weights_quantized(path: Path, quantize: str) -> bytes:
    """The .tflite at ``path`` with float16 (``fp16``) or int8 (``int8``, per output channel, symmetric) weights
    in every layer ai-edge-quantizer supports (the convolutions); activations stay float32."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    recipe = recipe_manager.RecipeManager()
    algorithm = AlgorithmName.FLOAT_CASTING if quantize == "fp16" else AlgorithmName.MIN_MAX_UNIFORM_QUANT
    recipe.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                  num_bits=16 if quantize == "fp16" else 8, algorithm_key=algorithm)
    result = quantizer.Quantizer(path.read_bytes(), recipe.get_quantization_recipe()).quantize(
        enable_progress_report=False)
    return bytes(result.quantized_model)


def export_executorch(network: TransformerNet, out: Path, quantize: str | None = None,
                      max_size: int = DEFAULT_MAX_SIZE) -> Path:
    """Write ``network`` as an ExecuTorch program (.pte) lowered to XNNPACK where it can be: input 0 images
    1,3,H,W in [0, 1] (H, W multiples of 4 up to ``max_size``) [+ input 1 style_weights 1,S] -> 1,3,H,W.
    int8 stores int8 weights (per output channel) and quantises each convolution's input per call (XNNPACK's
    dynamically quantised convolution; it has no weight-only one)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = exported_program(MobileForward(network), network, max_size)
    if quantize == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        dynamic_int8 = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(dynamic_int8))
        prepared(*_example_inputs(network, 68, 60))  # the observers see the weights once; activations: per call
        program = exported_program(convert_pt2e(prepared), network, max_size)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    with atomic_write(out) as tmp:
        tmp.write_bytes(lowered.buffer)
    return out


def export_mobile(model: StyleModel, kind: str, out: Path, quantize: str | None = None,
                  sizes: Sequence[str] = DEFAULT_SIZES, max_size: int = DEFAULT_MAX_SIZE) -> Path:
    """Write ``model``'s network in mobile format ``kind`` (coreml | litert | executorch) to ``out``; the request
    was checked by ``check_mobile_request`` (fststyle.stylize.export.export_model does)."""
    network = model.network.float().cpu()
    if kind == "coreml":
        return export_coreml(network, out, quantize, max_size)
    if kind == "litert":
        return export_litert(network, out, quantize, sizes)
    return export_executorch(network, out, quantize, max_size)
