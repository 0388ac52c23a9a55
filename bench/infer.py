"""Benchmark instant stylisation: the one network's fast inference form (what ``Stylizer`` runs:
``TransformerNet.fast_inference``) against the same network's plain eager fp32 forward.

    PYTHONPATH=. python bench/infer.py                      # CPU timing table (256^2 .. 1920x1080)
    PYTHONPATH=. python bench/infer.py --sizes 1024x1024 --repeats 5
    PYTHONPATH=. python bench/infer.py --tiling             # tiled vs untiled difference, 1024x768, tile=512
    PYTHONPATH=. python bench/infer.py --compile            # also time torch.compile (and its compile time)

Weights are random (the default Johnson architecture): timing does not depend on them. Baseline =
``TransformerNet.forward`` (fast inference off) in ``torch.no_grad`` on an NCHW fp32 tensor. Both run in
this process on the same input, interleaved (one call of each per round); the best and the median of
``--repeats`` rounds are printed with the load averages before and after, since other processes may share
the cores. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from fststyle.images import load_image
from fststyle.style_model import StyleModel
from fststyle.stylize import Stylizer
from fststyle.transformer import TransformerNet

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


def timing_table(sizes: list[str], repeats: int, use_compile: bool) -> None:
    torch.manual_seed(0)
    network = TransformerNet().eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stylizer = Stylizer(TransformerNet().eval(), device=torch.device(device))
    stylizer.network.load_state_dict(network.state_dict())
    network = network.to(device)
    variants = {"stylizer": stylizer.stylize}
    if use_compile:
        compiled = Stylizer(TransformerNet().eval(), device=torch.device(device), compile=True)
        compiled.network.load_state_dict(network.state_dict())
        variants["stylizer+compile"] = compiled.stylize

    def baseline(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(images)

    print(f"device: {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, random weights, best/median of {repeats} interleaved rounds, "
          f"load average {_load_average()}")
    print(f"{'size':>10} {'variant':>17} {'best ms':>9} {'median ms':>10} {'MP/s':>6} {'speed-up':>8}")
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        images = torch.rand(1, 3, height, width, device=device)
        megapixels = width * height / 1e6
        if use_compile:
            start = time.perf_counter()
            variants["stylizer+compile"](images)
            print(f"{size:>10} {'(compile+first)':>17} {(time.perf_counter() - start) * 1e3:9.0f}")
        functions = {"eager fp32": baseline} | variants
        results = timed_interleaved({name: partial(function, images) for name, function in functions.items()},
                                    repeats)
        best_base = results["eager fp32"][0]
        for name, (best, median) in results.items():
            print(f"{size:>10} {name:>17} {best * 1e3:9.0f} {median * 1e3:10.0f} {megapixels / best:6.2f} "
                  f"{best_base / best:8.2f}")
    print(f"load average after: {_load_average()}")


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
    parser.add_argument("--tiling", action="store_true", help="measure tiled vs untiled instead of timing")
    parser.add_argument("--photo", default="data/preview/000000000030.jpg")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--model", default=None, help="a trained .safetensors style model for --tiling")
    args = parser.parse_args()
    if args.tiling:
        tiling_difference(args.photo, args.tile, args.overlap, args.model)
    else:
        timing_table(args.sizes, args.repeats, args.compile)


if __name__ == "__main__":
    main()
