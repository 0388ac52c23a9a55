"""Benchmark instant stylisation: the one network's fast inference form (what ``Stylizer`` runs:
``TransformerNet.fast_inference``) against the same network's plain eager fp32 forward.

    PYTHONPATH=. python bench/infer.py                      # CPU timing table (256^2 .. 1920x1080), with the floor
    PYTHONPATH=. python bench/infer.py --sizes 1024x1024 --repeats 5
    PYTHONPATH=. python bench/infer.py --tiling             # tiled vs untiled difference, 1024x768, tile=512
    PYTHONPATH=. python bench/infer.py --compile            # also time torch.compile (and its compile time)
    PYTHONPATH=. python bench/infer.py --sizes 1024x1024 --batch 8 --precision bf16   # GPU throughput, images/s

Weights are random (the default Johnson architecture): timing does not depend on them. Baseline =
``TransformerNet.forward`` (fast inference off) in ``torch.no_grad`` on an NCHW fp32 batch of the same size;
the Stylizer runs in ``--precision`` (its ``precision=`` setting), with and without the sub-pixel form of its
upsampling layers. On the CPU a ``floor`` row gives the plain network's convolution FLOPs divided by the rate of a
128->128 3x3 convolution measured in the same run: what no form of the network can beat. All run in
this process on the same input, interleaved (one call of each per round); the best and the median of
``--repeats`` rounds are printed with the load averages before and after, since other processes may share
the cores. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from fststyle.devices import device_name
from fststyle.io.decode import load_image
from fststyle.nets.transformer import TransformerNet, UpsampleConv
from fststyle.style_model import StyleModel
from fststyle.stylize.stylizer import Stylizer, resolve_precision

SIZES = ["256x256", "512x512", "1024x1024", "1920x1080"]


def timed_interleaved(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(best, median) wall seconds of each function over ``repeats`` rounds, after one warm-up call each.

    One round calls every function once, in turn, so load from other processes on shared cores falls on
    all of them alike and the ratios stay comparable."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def timing_table(sizes: list[str], repeats: int, use_compile: bool, batch: int, precision: str) -> None:
    torch.manual_seed(0)
    network = TransformerNet().eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_precision(precision)

    def copy() -> TransformerNet:
        """A network with the baseline's weights (every variant gets its own: they change its form)."""
        twin = TransformerNet().eval()
        twin.load_state_dict(network.state_dict())
        return twin

    def stylizer(compile: bool) -> Stylizer:
        """A Stylizer (the ``precision`` dtype) on the baseline network's weights."""
        return Stylizer(copy(), device=device, dtype=dtype, compile=compile)

    plain = copy().to(device, dtype, memory_format=torch.channels_last)

    def plain_in_precision(images: torch.Tensor) -> torch.Tensor:
        """The plain forward (no fast-inference form) in ``precision``, NHWC: what the GPU gets without it."""
        with torch.no_grad():
            return plain(images.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    fast = stylizer(compile=False)
    without_subpixel = stylizer(compile=False)
    for module in without_subpixel.network.modules():
        if isinstance(module, UpsampleConv):
            module.subpixel = False
    variants = {f"plain {precision} NHWC": plain_in_precision, f"stylizer {precision}": fast.stylize,
                "  without subpixel": without_subpixel.stylize}
    if use_compile:
        variants[f"+compile {precision}"] = stylizer(compile=True).stylize
    network = network.to(device)

    def baseline(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(images)

    print(f"device: {device_name(device)}, torch {torch.__version__}, random weights, batch {batch}, "
          f"best/median of {repeats} interleaved rounds, load average {_load_average()}")
    print(f"{'size':>10} {'variant':>17} {'best ms':>9} {'median ms':>10} {'MP/s':>7} {'images/s':>9} {'speed-up':>8}")
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        images = torch.rand(batch, 3, height, width, device=device)
        megapixels = batch * width * height / 1e6
        if use_compile:
            start = time.perf_counter()
            synchronized(variants[f"+compile {precision}"])(images)
            print(f"{size:>10} {'(compile+first)':>17} {(time.perf_counter() - start) * 1e3:9.0f}")
        functions = {"eager fp32": baseline} | variants
        results = timed_interleaved({name: partial(synchronized(function), images)
                                     for name, function in functions.items()}, repeats)
        best_base = results["eager fp32"][0]
        for name, (best, median) in results.items():
            print(f"{size:>10} {name:>17} {best * 1e3:9.1f} {median * 1e3:10.1f} {megapixels / best:7.1f} "
                  f"{batch / best:9.1f} {best_base / best:8.2f}")
        if device.type == "cpu":
            flops = convolution_flops(copy(), images[:1]) * batch
            rate = conv_throughput(dtype)
            floor = flops / rate
            print(f"{size:>10} {'floor':>17} {floor * 1e3:9.1f} {'':>10} {'':>7} {batch / floor:9.1f} "
                  f"{best_base / floor:8.2f}   ({flops / 1e9:.0f} GFLOP of the plain network at "
                  f"{rate / 1e9:.0f} GFLOP/s, a 128->128 3x3 convolution's rate here; the stylizer is "
                  f"{results[f'stylizer {precision}'][0] / floor:.2f}x the floor)")
    print(f"load average after: {_load_average()}")


def convolution_flops(network: TransformerNet, images: torch.Tensor) -> float:
    """Floating-point operations (2 per multiply-add) of every convolution of the plain forward on ``images``."""
    total = 0.0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        total += 2.0 * output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]

    hooks = [module.register_forward_hook(count) for module in network.modules()
             if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    with torch.no_grad():
        network(images.float().cpu())
    for hook in hooks:
        hook.remove()
    return total


def conv_throughput(dtype: torch.dtype, side: int = 128, repeats: int = 5) -> float:
    """FLOP/s of the network's commonest layer, a 128->128 3x3 convolution on channels_last maps of
    ``side``x``side`` (best of ``repeats``): what the cores give the network's bulk, for its floor."""
    maps = torch.rand(1, 128, side + 2, side + 2, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(128, 128, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        F.conv2d(maps, weight)
        best = min(_timed_call(lambda: F.conv2d(maps, weight)) for _ in range(repeats))
    return 2.0 * 128 * 128 * 9 * side * side / best


def _timed_call(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def synchronized(function: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``function`` followed by a wait for the GPU's queued work, so a wall-clock timer sees the work itself."""
    def call(images: torch.Tensor) -> torch.Tensor:
        out = function(images)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        return out
    return call


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages (``uptime``), or "n/a" where the OS has none."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def tiling_difference(photo: str, tile: int, overlap: int, model: str | None) -> None:
    """Tiled vs untiled output of one photo at 1024x768, in 8-bit levels, with and without shared statistics."""
    torch.manual_seed(0)
    if model:
        network = StyleModel.load(model).network
    else:
        network = TransformerNet().eval()  # random weights: see docs/stylize.md for what that means here
    print(f"network: {model or 'random weights, full width'}")
    image = F.interpolate(load_image(photo), size=(768, 1024), mode="bilinear", antialias=True).clamp(0, 1)
    whole = Stylizer(network).stylize(image)
    print(f"photo {photo} at 1024x768, tile={tile}, tile_overlap={overlap}; untiled output std "
          f"{whole.std().item() * 255:.1f} levels")
    variants = {"statistics of the full-res image": {"statistics_size": 1024},
                "shared, downscaled to the tile size": {"statistics_size": tile}, "per-tile statistics": {"shared_statistics": False}}
    for label, options in variants.items():
        tiled = Stylizer(network, tile=tile, tile_overlap=overlap, **options)
        difference = (tiled.stylize(image) - whole).abs() * 255
        print(f"  {label:>36}: mean |diff| {difference.mean().item():.2f} levels, max {difference.max().item():.1f}, "
              f"99th pct {difference.flatten().kthvalue(int(0.99 * difference.numel())).values.item():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time Stylizer(compile=True)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (all variants)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="the Stylizer's precision (the baseline stays fp32)")
    parser.add_argument("--tiling", action="store_true", help="measure tiled vs untiled instead of timing")
    parser.add_argument("--photo", default="data/preview/000000000030.jpg")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--model", default=None, help="a trained .safetensors style model for --tiling")
    args = parser.parse_args()
    if args.tiling:
        tiling_difference(args.photo, args.tile, args.overlap, args.model)
    else:
        timing_table(args.sizes, args.repeats, args.compile, args.batch, args.precision)


if __name__ == "__main__":
    main()
