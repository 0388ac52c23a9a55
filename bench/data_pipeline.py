"""How many training crops per second the data pipeline makes, decoding alone, against plain Pillow.

    PYTHONPATH=. python bench/data_pipeline.py                                  # the bundled 40 COCO images
    PYTHONPATH=. python bench/data_pipeline.py --root ../shared/data/coco128/train2017 --size 256 --workers 0 2

Each row runs the images once (after one untimed pass, so the file cache is warm) and prints crops/s, the
ratio to the plain Pillow baseline measured in the same run, and the training steps/s at batch 4 that rate
could feed (the speed issue's goal is 150 steps/s, 600 crops/s). Rows:

- ``pillow (plain)``: ``Image.open``, shorter side resized (bicubic), a random crop, to a float tensor;
- ``dataset``: ``ImageFolderImages``, what training reads through: torchvision's libjpeg-turbo decode
  (``io.decode.read_rgb_uint8``, ICC-converted), antialiased resize, random crop;
- ``dataset, cache warm``: the same with ``data.cache_dir``, the resized images decoded once into ``.npy``
  files (Johnson's HDF5 preprocessing in a file per image);
- ``loader, N workers``: a ``DataLoader`` of batch 4 over the dataset (uncached) with N worker processes.

Nothing is asserted; the load averages are printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fststyle.io.listing import list_images
from fststyle.training.data import ImageFolderImages, collate_skipping_bad


def pillow_crop(path: Path, size: int, generator: np.random.Generator) -> torch.Tensor:
    """The plain baseline: decode with Pillow, shorter side -> ``size``, a random ``size`` crop, float 3,S,S."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
    left = int(generator.integers(0, image.width - size + 1))
    top = int(generator.integers(0, image.height - size + 1))
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)


def rate(function: Callable[[], int]) -> float:
    """Crops per second of ``function`` (which returns how many crops it made), after one untimed call."""
    function()
    started = time.perf_counter()
    made = function()
    return made / (time.perf_counter() - started)


def pipeline_rates(root: str | Path, size: int, workers: list[int]) -> dict[str, float]:
    """Crops/s of each row of this script's table, over the photos under ``root``."""
    paths = list_images(root)
    generator = np.random.default_rng(0)

    def pillow() -> int:
        for path in paths:
            pillow_crop(path, size, generator)
        return len(paths)

    def through(dataset: ImageFolderImages) -> Callable[[], int]:
        def run() -> int:
            for index in range(len(dataset)):
                dataset[index]
            return len(dataset)
        return run

    def loader(count: int) -> Callable[[], int]:
        batches = DataLoader(ImageFolderImages(root, size), batch_size=4, shuffle=True, num_workers=count,
                             collate_fn=collate_skipping_bad, persistent_workers=count > 0)

        def run() -> int:
            return sum(len(batch[0]) for batch in batches)
        return run

    with tempfile.TemporaryDirectory() as cache:
        rows = {"pillow (plain)": rate(pillow),
                "dataset": rate(through(ImageFolderImages(root, size))),
                "dataset, cache warm": rate(through(ImageFolderImages(root, size, cache_dir=cache)))}
        rows |= {f"loader, {count} workers": rate(loader(count)) for count in workers}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/coco_sample/train2017", help="a folder of training photos")
    parser.add_argument("--size", type=int, default=256, help="crop size (data.image_size)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader worker counts to time")
    args = parser.parse_args()
    print(f"{len(list_images(args.root))} images under {args.root}, {args.size} px crops, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    rows = pipeline_rates(args.root, args.size, args.workers)
    baseline = rows["pillow (plain)"]
    print(f"{'pipeline':>22} {'crops/s':>9} {'x plain':>8} {'steps/s at batch 4':>19}")
    for name, crops in rows.items():
        print(f"{name:>22} {crops:9.1f} {crops / baseline:8.2f} {crops / 4:19.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
