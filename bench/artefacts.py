"""The artefacts table: training runs (or checkpoints, or style models) side by side, one row each, the first the
control, with what their validations logged and their held-out scores, and a grid to look at.

    PYTHONPATH=. python bench/artefacts.py control=runs/control clip=runs/clip:step_0002750 \
        --style data/styles/the_scream.jpg --grid artefacts.jpg

Each argument is ``label=PATH[:CHECKPOINT]``: a run directory (its ``last.ckpt``, or the checkpoint named after
the colon, from ``checkpoints/``), a ``.ckpt`` file or a ``.safetensors`` model. A row gives, from the run's
TensorBoard events (when there are any): the largest rise of ``val/style`` over its best so far (the collapse the
blobs follow) and the largest ``val/saturated``; and on the held-out photos (default ``data/preview`` and, when
present, ``../shared/data/content``): the blob and hatching figures of ``fststyle.artefacts``, the content and style
loss (the model's own training loss) and their ratios to the first row's. Nothing is asserted; the load averages
are printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fststyle.artefacts import blob_share, hatching
from fststyle.compare.scoring import scoring_loss, style_images
from fststyle.io.decode import load_image
from fststyle.io.encode import save_image
from fststyle.io.grids import labelled_grid
from fststyle.io.listing import image_files
from fststyle.style_model import StyleModel

SHARED_CONTENT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "content"


def model_file(spec: str) -> Path:
    """The checkpoint or model a ``PATH[:CHECKPOINT]`` argument names."""
    path, _, checkpoint = spec.partition(":")
    folder = Path(path)
    if not folder.is_dir():
        return folder
    return folder / "checkpoints" / (f"{checkpoint}.ckpt" if checkpoint else "last.ckpt")


def logged_figures(spec: str) -> dict[str, str]:
    """The largest val/style rise over its running best (with its step) and the largest val/saturated."""
    folder = Path(spec.partition(":")[0])
    if not folder.is_dir():
        return {"rise": "", "saturated": ""}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    rise, where, best = 1.0, None, float("inf")
    for event in events.Scalars("val/style") if "val/style" in tags else []:
        if best < float("inf") and event.value / best > rise:
            rise, where = event.value / best, event.step + 1
        best = min(best, event.value)
    saturated = max((e.value for e in events.Scalars("val/saturated")), default=0.0) if "val/saturated" in tags else 0
    return {"rise": f"{rise:.2f}x" + (f" (step {where})" if where else ""), "saturated": f"{saturated:.2%}"}


@torch.no_grad()
def held_out(model: StyleModel, photos: list[torch.Tensor], style: list[torch.Tensor]) -> dict[str, float]:
    """Mean content loss, style loss, hatching and blobs of the model's outputs for photos (each 1,3,H,W)."""
    loss = scoring_loss(model, torch.device("cpu"), style)
    sums = {"content": 0.0, "style": 0.0, "hatching": 0.0, "blobs": 0.0}
    for photo in photos:
        output = model.network(photo)
        terms = loss(output, photo)
        figures = {"content": terms["content"], "style": terms["style"],
                   "hatching": hatching(output, photo).nan_to_num(0.0), "blobs": blob_share(output, photo)}
        for name, value in figures.items():
            sums[name] += float(value.sum()) / len(photos)
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=PATH[:CHECKPOINT]; the first is the control")
    parser.add_argument("--style", nargs="*", help="the style image(s), for models that store none (.ckpt)")
    parser.add_argument("--photos", nargs="+", help="held-out photos or folders (default: data/preview and "
                                                    "../shared/data/content when present)")
    parser.add_argument("--size", type=int, default=256, help="longer side of the photos in px")
    parser.add_argument("--grid", type=Path, help="also write a grid: photos x runs")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    sources = args.photos or ["data/preview", *([SHARED_CONTENT] if SHARED_CONTENT.is_dir() else [])]
    files = image_files(sources, "held-out photos")
    photos = [load_image(path, args.size) for path in files]
    print(f"{len(photos)} held-out photos ({', '.join(p.name for p in files)}), longer side {args.size} px; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print("| run | steps | val/style rise | val/saturated max | blobs | hatching | content | style | "
          "content ratio | style ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    control, outputs = None, []
    for spec in args.runs:
        label, _, path = spec.partition("=")
        model = StyleModel.load(model_file(path))
        style = ([load_image(p, (model.metadata.get("style") or {}).get("size")) for p in args.style]
                 if args.style else style_images(model))
        scores = held_out(model, photos, style)
        control = control or scores
        logged = logged_figures(path)
        print(f"| {label} | {model.metadata.get('steps', '?')} | {logged['rise']} | {logged['saturated']} | "
              f"{scores['blobs']:.2%} | {scores['hatching']:.4f} | {scores['content']:.3g} | {scores['style']:.3g} | "
              f"{scores['content'] / control['content']:.2f} | {scores['style'] / control['style']:.2f} |")
        outputs.append((label, [model.network(photo) for photo in photos]))
    if args.grid is not None:
        rows = [[photo, *(images[i] for _, images in outputs)] for i, photo in enumerate(photos)]
        grid = labelled_grid(rows, col_labels=["photo", *(label for label, _ in outputs)],
                             row_labels=[p.stem for p in files], cell_height=min(args.size, 192))
        save_image(grid, args.grid)
        print(f"grid: {args.grid}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
