"""Benchmark instant stylisation: the project's inference path against a plain eager fp32 baseline.

    PYTHONPATH=. python bench/infer.py                      # CPU timing table (256^2 .. 1920x1080)
    PYTHONPATH=. python bench/infer.py --sizes 1024x1024 --repeats 5
    PYTHONPATH=. python bench/infer.py --tiling             # tiled vs untiled difference, 1024x768, tile=512
    PYTHONPATH=. python bench/infer.py --compile            # also time torch.compile (and its compile time)

Weights are random (the default Johnson architecture): timing does not depend on them. Baseline =
``TransformerNet.forward`` in ``torch.no_grad`` on an NCHW fp32 tensor. Both run in this process, one
after the other, on the same input; the best and the median of ``--repeats`` runs are printed, since
other processes may share the cores. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from fststyle.export import load_style_model
from fststyle.images import load_image
from fststyle.stylize import Stylizer
from fststyle.transformer import TransformerNet

SIZES = ["256x256", "512x512", "1024x1024", "1920x1080"]


def timed(function, repeats: int) -> tuple[float, float]:
    """(best, median) wall seconds of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


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
          f"threads {torch.get_num_threads()}, random weights, best/median of {repeats}")
    print(f"{'size':>10} {'variant':>17} {'best ms':>9} {'median ms':>10} {'MP/s':>6} {'speed-up':>8}")
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        images = torch.rand(1, 3, height, width, device=device)
        best_base, median_base = timed(lambda images=images: baseline(images), repeats)
        megapixels = width * height / 1e6
        print(f"{size:>10} {'eager fp32':>17} {best_base * 1e3:9.0f} {median_base * 1e3:10.0f} "
              f"{megapixels / best_base:6.2f} {1:8.2f}")
        for name, function in variants.items():
            if name == "stylizer+compile":
                start = time.perf_counter()
                function(images)
                print(f"{size:>10} {'(compile+first)':>17} {(time.perf_counter() - start) * 1e3:9.0f}")
            best, median = timed(lambda images=images, function=function: function(images), repeats)
            print(f"{size:>10} {name:>17} {best * 1e3:9.0f} {median * 1e3:10.0f} {megapixels / best:6.2f} "
                  f"{best_base / best:8.2f}")


def tiling_difference(photo: str, tile: int, overlap: int, model: str | None) -> None:
    """Tiled vs untiled output of one photo at 1024x768, in 8-bit levels, with and without shared statistics."""
    torch.manual_seed(0)
    if model:
        network = load_style_model(model)[0]
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
