"""The mobile exports' variants against PyTorch: file size, difference from PyTorch's fp32 output and the change of
the model's own style and content loss on held-out photos, and per-image latency through each runtime on this CPU.

    PYTHONPATH=. python bench/mobile.py                          # starry_night; LiteRT and ExecuTorch, all variants
    PYTHONPATH=. python bench/mobile.py --model multistyle --style-weights 0.5 0.5 0
    PYTHONPATH=. python bench/mobile.py --static-int8            # also the rejected calibrated int8 (docs/mobile.md)

Photos (default data/preview and ../shared/data/content, none seen in training) are resized to cover 512x384 and
centre-cropped to it: one size, so one LiteRT signature serves them all. The difference is in 8-bit levels
against the network's fp32 forward in PyTorch; content and style are the model's training loss (fststyle.compare
scoring: its VGG, layers and weights, the style image stored in the file), as ratios to PyTorch's. Latency: one
image at 512^2 and 1024^2, best and median of ``--repeats`` interleaved rounds after a warm-up, beside PyTorch's
default path (``Stylizer``) and its plain eager forward, in the same run. Core ML predicts only on macOS: its
variants get a file size only. The load averages before and after are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.infer import timed_interleaved
from fststyle.compare.scoring import scoring_loss, style_images
from fststyle.io.decode import load_image
from fststyle.io.listing import image_files
from fststyle.style_model import StyleModel
from fststyle.stylize.mobile import (
    QUANTIZATIONS,
    MobileForward,
    export_coreml,
    export_executorch,
    export_litert,
    exported_program,
    litert_weights_quantized,
)
from fststyle.stylize.stylizer import Stylizer

SHARED_CONTENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "content"
#: the photos' size for the quality figures, WIDTHxHEIGHT (COCO's 4:3 landscape)
QUALITY_SIZE = (512, 384)
LATENCY_SIDES = (512, 1024)
#: photos the rejected static int8 variants are calibrated on: the bundled training sample, never the held-out ones
CALIBRATION = "data/coco_sample/train2017"
CALIBRATION_PHOTOS = 8


def covering_crop(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """1,3,H,W -> 1,3,height,width: resized (antialiased) to cover the size, then centre-cropped."""
    scale = max(width / image.shape[-1], height / image.shape[-2])
    size = (max(height, round(image.shape[-2] * scale)), max(width, round(image.shape[-1] * scale)))
    resized = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return resized[..., top:top + height, left:left + width].contiguous()


def litert_runner(path: Path, style_weights: torch.Tensor | None) -> Callable[[torch.Tensor], np.ndarray]:
    """images 1,3,H,W -> the .tflite's output through the LiteRT interpreter (signature ``WxH``)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=torch.get_num_threads())
    runners = {key: interpreter.get_signature_runner(key) for key in interpreter.get_signature_list()}

    def run(images: torch.Tensor) -> np.ndarray:
        runner = runners[f"{images.shape[-1]}x{images.shape[-2]}"]
        details = runner.get_input_details()["images"]
        pixels = images.numpy()
        if details["dtype"] != np.float32:  # a fully integer model takes quantised pixels
            scale, zero = details["quantization"]
            pixels = np.clip(np.round(pixels / scale + zero), -128, 127).astype(details["dtype"])
        inputs = {"images": pixels} | ({} if style_weights is None else {"style_weights": style_weights.numpy()})
        (output,) = runner(**inputs).values()
        output_details = runner.get_output_details()["output_0"]
        if output_details["dtype"] != np.float32:
            scale, zero = output_details["quantization"]
            output = (output.astype(np.float32) - zero) * scale
        return output
    return run


def executorch_runner(path: Path, style_weights: torch.Tensor | None) -> Callable[[torch.Tensor], np.ndarray]:
    """images 1,3,H,W -> the .pte's output through the ExecuTorch runtime."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    extra = [] if style_weights is None else [style_weights]
    return lambda images: method.execute([images, *extra])[0].numpy()


def static_int8_litert(fp32: Path, out: Path, calibration: list[torch.Tensor], sizes: list[str],
                       style_weights: torch.Tensor | None) -> Path:
    """The rejected variant: int8 weights and activations (ai-edge-quantizer's static_wi8_ai8), every signature
    (WIDTHxHEIGHT in ``sizes``) calibrated on ``calibration`` (each 1,3,H,W) cropped to its size."""
    from ai_edge_quantizer import quantizer, recipe

    extra = {} if style_weights is None else {"style_weights": style_weights.numpy()}
    samples = {size: [{"images": covering_crop(image, *map(int, size.split("x"))).numpy()} | extra
                      for image in calibration] for size in sizes}
    static = quantizer.Quantizer(fp32.read_bytes(), recipe.static_wi8_ai8())
    result = static.quantize(static.calibrate(samples), enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))
    return out


def static_int8_executorch(model: StyleModel, out: Path, calibration: list[torch.Tensor],
                           style_weights: torch.Tensor | None, max_size: int) -> Path:
    """The rejected variant: XNNPACK's static int8 (weights per channel, activations per tensor) calibrated on
    ``calibration``."""
    import executorch.kernels.quantized  # noqa: F401  (registers the quantised operators' kernels)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    network = model.network.float()
    program = exported_program(MobileForward(network), network, max_size)
    static = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(static))
    for image in calibration:
        prepared(covering_crop(image, *QUALITY_SIZE), *([] if style_weights is None else [style_weights]))
    lowered = to_edge_transform_and_lower(exported_program(convert_pt2e(prepared), network, max_size),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    out.write_bytes(lowered.buffer)
    return out


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (an .mlpackage)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="starry_night", help="a shipped model's name or a .safetensors file")
    parser.add_argument("--style-weights", nargs="*", type=float, help="a model of several styles: one weight each")
    parser.add_argument("--photos", nargs="+", help="held-out photos or folders")
    parser.add_argument("--formats", nargs="+", default=["coreml", "litert", "executorch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--static-int8", action="store_true", help="also the rejected calibrated int8 variants")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = StyleModel.load(args.model)
    network = model.network.float().eval()
    style_weights = None if not args.style_weights else torch.tensor([args.style_weights])
    sources = args.photos or ["data/preview", *([SHARED_CONTENT] if SHARED_CONTENT.is_dir() else [])]
    files = image_files(sources, "held-out photos")
    photos = [covering_crop(load_image(path), *QUALITY_SIZE) for path in files]
    reference = [network(photo, style_weights) for photo in photos]
    scored = model if style_weights is None else model.select(dict(zip(model.style_names, args.style_weights,
                                                                       strict=True)))
    loss = scoring_loss(scored, torch.device("cpu"), style_images(scored))
    reference_terms = [loss(output, photo) for output, photo in zip(reference, photos, strict=True)]
    reference_content = float(sum(t["content"] for t in reference_terms))
    reference_style = float(sum(t["style"] for t in reference_terms))
    print(f"model {args.model}; {len(photos)} held-out photos ({', '.join(p.name for p in files)}) at "
          f"{QUALITY_SIZE[0]}x{QUALITY_SIZE[1]}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="fststyle-mobile-bench-"))
    max_size = max(LATENCY_SIDES)
    sizes = [f"{QUALITY_SIZE[0]}x{QUALITY_SIZE[1]}", *(f"{side}x{side}" for side in LATENCY_SIDES)]
    runners: dict[str, Callable[[torch.Tensor], np.ndarray]] = {}
    print("| format | variant | file size | mean diff (levels) | max diff (levels) | content / PyTorch | "
          "style / PyTorch |")
    print("|---|---|---|---|---|---|---|")

    def report(label: str, variant: str, path: Path, run: Callable[[torch.Tensor], np.ndarray] | None) -> None:
        if run is None:
            print(f"| {label} | {variant} | {size_of(path) / 1e6:.2f} MB | not run (Core ML predicts only on "
                  "macOS) | | | |")
            return
        outputs = [torch.from_numpy(np.asarray(run(photo), dtype=np.float32)) for photo in photos]
        levels = [(output - ref).abs() * 255 for output, ref in zip(outputs, reference, strict=True)]
        terms = [loss(output, photo) for output, photo in zip(outputs, photos, strict=True)]
        content = float(sum(t["content"] for t in terms)) / reference_content
        style = float(sum(t["style"] for t in terms)) / reference_style
        print(f"| {label} | {variant} | {size_of(path) / 1e6:.2f} MB | {float(torch.stack([lv.mean() for lv in levels]).mean()):.3f} | "
              f"{float(max(lv.max() for lv in levels)):.1f} | {content:.4f} | {style:.4f} |", flush=True)

    calibration = []
    if args.static_int8:
        calibration = [load_image(path) for path in sorted(Path(CALIBRATION).glob("*.jpg"))[:CALIBRATION_PHOTOS]]
    for kind in args.formats:
        variants = [None, *QUANTIZATIONS[kind]]
        if kind == "coreml":
            for quantize in variants:
                path = export_coreml(network, work / f"{quantize or 'fp32'}.mlpackage", quantize, max_size)
                report("Core ML", quantize or "fp32", path, None)
        elif kind == "litert":
            fp32 = export_litert(network, work / "fp32.tflite", None, sizes)
            for quantize in variants:
                path = fp32 if quantize is None else work / f"{quantize}.tflite"
                if quantize is not None:
                    path.write_bytes(litert_weights_quantized(fp32, quantize))
                runners[f"LiteRT {quantize or 'fp32'}"] = litert_runner(path, style_weights)
                report("LiteRT", quantize or "fp32", path, runners[f"LiteRT {quantize or 'fp32'}"])
            if args.static_int8:
                path = static_int8_litert(fp32, work / "static_int8.tflite", calibration, sizes, style_weights)
                report("LiteRT", "static int8 (rejected)", path, litert_runner(path, style_weights))
        elif kind == "executorch":
            for quantize in variants:
                path = export_executorch(network, work / f"{quantize or 'fp32'}.pte", quantize, max_size)
                runners[f"ExecuTorch {quantize or 'fp32'}"] = executorch_runner(path, style_weights)
                report("ExecuTorch", quantize or "fp32", path, runners[f"ExecuTorch {quantize or 'fp32'}"])
            if args.static_int8:
                path = static_int8_executorch(model, work / "static_int8.pte", calibration, style_weights, max_size)
                report("ExecuTorch", "static int8 (rejected)", path, executorch_runner(path, style_weights))

    stylizer = Stylizer.from_model(model.select(None if style_weights is None else
                                                dict(zip(model.style_names, args.style_weights, strict=True))),
                                   device="cpu")
    pytorch = {"PyTorch Stylizer (default)": stylizer.stylize,
               "PyTorch eager forward": lambda images: network(images, style_weights)}
    print(f"\nper-image latency, best / median of {args.repeats} interleaved rounds; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| size | runtime | best s | median s | best / Stylizer best |")
    print("|---|---|---|---|---|")
    for side in LATENCY_SIDES:
        images = torch.rand(1, 3, side, side)
        results = timed_interleaved({name: partial(run, images) for name, run in (pytorch | runners).items()},
                                    args.repeats)
        base = results["PyTorch Stylizer (default)"][0]
        for name, (best, median) in results.items():
            print(f"| {side}^2 | {name} | {best:.3f} | {median:.3f} | {best / base:.2f}x |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; files in {work}")


if __name__ == "__main__":
    main()
