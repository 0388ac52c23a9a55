"""Held-out scores of a model of several styles against one-style models of the same styles, and a preview grid.

    PYTHONPATH=. python bench/multistyle.py checkpoints/multistyle.safetensors \
        --single starry_night the_scream --photos data/preview --grid multistyle_preview.jpg

Every style of the multi-style model and every one-style model is scored on the same held-out photos (default
``data/preview``, none of them seen in training) by the same numbers: the training loss stored in the model's
metadata (its VGG, layers and weights), with the style image stored in the file. The table gives, per style,
the mean content and style loss over the photos, the multi-style model's ratio to the one-style model of the
same style (the issue's goal: style within 1.2x at no worse content), and the artefact figures of
``fststyle.artefacts``: hatching (the high-frequency mesh the CPU-trained one-style models paint over skies and
walls; lower is smoother) and blobs (the share of output pixels inside a solid near-black or near-white patch that
the photo does not have there: the droplets the first GPU-trained models paint, checkpoints/README.md). Several
one-style models of one style (e.g. a shipped and a retrained one) are each scored against the first of them. Nothing is asserted; the load averages are printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from bench.artefacts import held_out
from fststyle.compare.scoring import style_images
from fststyle.io.decode import load_image
from fststyle.io.encode import save_image
from fststyle.io.grids import labelled_grid
from fststyle.io.listing import image_files
from fststyle.style_model import StyleModel


@torch.no_grad()
def preview_grid(model: StyleModel, photos: list[torch.Tensor], names: list[str], blend: tuple[str, str],
                 cell_height: int) -> object:
    """Photos x (each style, an even blend of ``blend``) and a last row sweeping that blend on the first photo."""
    styles = model.style_names
    mix = {blend[0]: 0.5, blend[1]: 0.5}
    columns = [model.select(name).network for name in styles] + [model.select(mix).network]
    rows = [[photo, *(network(photo) for network in columns)] for photo in photos]
    sweep = [model.select({blend[0]: 1 - t, blend[1]: t}).network(photos[0]) if 0 < t < 1
             else model.select(blend[1] if t else blend[0]).network(photos[0]) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    rows.append(sweep)
    return labelled_grid(rows, col_labels=["photo", *styles, f"{blend[0]} + {blend[1]}"],
                         row_labels=[*names, f"{blend[0]} 1 -> 0 -> {blend[1]}"], cell_height=cell_height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a style model of several styles (name or .safetensors)")
    parser.add_argument("--single", nargs="*", default=[],
                        help="one-style models to compare with (names or files); the first of each style is the reference")
    parser.add_argument("--photos", nargs="+", default=["data/preview"], help="held-out photos or folders")
    parser.add_argument("--size", type=int, default=256, help="longer side of the photos in px")
    parser.add_argument("--grid", type=Path, help="also write the preview grid here")
    parser.add_argument("--blend", nargs=2, help="the two styles of the grid's blend column and sweep row")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    files = image_files(args.photos, "held-out photos")
    photos = [load_image(path, args.size) for path in files]
    model = StyleModel.load(args.model)
    print(f"{len(photos)} held-out photos ({', '.join(p.name for p in files)}), longer side {args.size} px; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    singles = [(name, StyleModel.load(name)) for name in args.single]
    print("| style | model | content | style | hatching | blobs | content ratio | style ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in model.style_names:
        rows = [(f"one-style {label}", held_out(single, photos, style_images(single))) for label, single in singles
                if single.style_names == [name]]
        rows.append(("multi-style", held_out(model.select(name), photos, style_images(model.select(name)))))
        reference = rows[0][1] if len(rows) > 1 else None
        for label, scores in rows:
            ratios = ("", "") if reference is None else (f"{scores['content'] / reference['content']:.2f}",
                                                         f"{scores['style'] / reference['style']:.2f}")
            print(f"| {name} | {label} | {scores['content']:.3g} | {scores['style']:.3g} | {scores['hatching']:.4f} | "
                  f"{scores['blobs']:.2%} | {ratios[0]} | {ratios[1]} |")
    if args.grid is not None:
        blend = tuple(args.blend or model.style_names[:2])
        grid = preview_grid(model, photos, [p.stem for p in files], blend, cell_height=min(args.size, 192))
        save_image(grid, args.grid)
        print(f"grid: {args.grid}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
