"""Retrain the shipped one-style models with the fixed recipe, all styles at once on one GPU, as one command.

    python checkpoints/retrain.py --out results/          # on a CUDA machine: about 6-9 minutes
    python checkpoints/retrain.py --out /tmp/dry --device cpu --steps 4 -- transformer.width=0.25 ...

The recipe (checkpoints/README.md, "Retraining on a GPU"): full width, 256 px crops, batch 4 (Johnson et al.
2016), 10,000 steps per style, the Caffe VGG-19 loss the CPU models were trained with, bf16, torch.compile,
and the artefact fixes that are the defaults of conf/train.yaml (docs/artefacts.md). The training images are
the 124 COCO images of ``--data`` other than the held-out preview photos of data/preview.

Every style trains in its own ``train.py`` process, at the same time, on the same device (one GPU holds them
with room to spare, and together they keep it busier than one). ``trainer.max_time`` stops a run that would
overrun ``--minutes``. ``--out`` receives three files per style, all a caller has to bring back: the style
model ``<style>.safetensors``, its scalars ``<style>_scalars.csv`` (step, tag, value: every TensorBoard scalar)
and its last preview grid ``<style>_preview.png``; plus ``retrain.log``. The run folders (checkpoints,
events) stay in ``--work``. Exit status: 0 when every run finished, else 1 (each run's log says why).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the 124 training images of the shipped models: coco128 less the preview photos (checkpoints/README.md)
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco128" / "train2017"
STYLES = ("starry_night", "the_scream")
#: the GPU recipe of checkpoints/README.md, "A GPU run", at Johnson et al.'s batch 4, with the artefact fixes
#: of conf/train.yaml left at their defaults
RECIPE = ["loss=caffe_vgg19", "data.kind=folder", "data.image_size=256", "data.batch_size=4",
          "loss.content_weight=1e3", "loss.style_weight=2e3", "loss.tv_weight=6e8"]
DEVICE_SETTINGS = {"gpu": ["trainer=gpu", "networks.compile=true", "data.num_workers=5"],
                   "cpu": ["trainer=cpu", "data.num_workers=0", "data.persistent_workers=false"]}


def training_folder(source: Path, into: Path) -> Path:
    """A folder of links to the images of ``source`` less the preview photos of data/preview."""
    held_out = {path.name for path in (REPO / "data" / "preview").iterdir()}
    into.mkdir(parents=True, exist_ok=True)
    for image in sorted(source.iterdir()):
        if image.suffix.lower() in (".jpg", ".jpeg", ".png") and image.name not in held_out:
            (into / image.name).symlink_to(image.resolve())
    if not any(into.iterdir()):
        raise SystemExit(f"error: no training images in {source}; pass --data with a folder of photos")
    return into


def write_scalars(run_dir: Path, out: Path) -> None:
    """Every scalar of the run's TensorBoard events as CSV rows (step, tag, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "tag", "value"])
        for tag in sorted(events.Tags()["scalars"]):
            writer.writerows((event.step, tag, event.value) for event in events.Scalars(tag))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the models, scalars and previews go")
    parser.add_argument("--work", type=Path, help="where the run folders go (default: a temporary folder)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of COCO training images")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), help="style names of data/styles")
    parser.add_argument("--steps", type=int, default=10_000, help="training steps per style")
    parser.add_argument("--minutes", type=float, default=8.5, help="stop every run after this long")
    parser.add_argument("--device", choices=sorted(DEVICE_SETTINGS), default="gpu")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="fststyle-retrain-"))
    images = training_folder(args.data, work / "images")
    seconds = int(args.minutes * 60)
    limit = f"+trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    runs = {}
    with open(args.out / "retrain.log", "w") as log:
        started = time.monotonic()
        for style in args.styles:
            run_dir = work / style
            command = [sys.executable, str(REPO / "train.py"), *RECIPE, *DEVICE_SETTINGS[args.device],
                       f"data.root={images}", f"style={REPO / 'data' / 'styles' / f'{style}.jpg'}",
                       f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={max(1, args.steps // 10)}",
                       f"checkpoint_every_n_steps={max(1, args.steps // 5)}", limit, f"run_dir={run_dir}",
                       f"hydra.run.dir={run_dir}", f"export_path={args.out / f'{style}.safetensors'}",
                       *args.overrides]
            log.write(f"$ {' '.join(command)}\n")
            output = open(work / f"{style}.log", "w")  # noqa: SIM115 (closed when the run ends)
            runs[style] = (subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            env={**os.environ, "FSTSTYLE_OFFLINE": "1"}), output, run_dir)
        failed = []
        for style, (process, output, run_dir) in runs.items():
            status = process.wait()
            output.close()
            tail = (work / f"{style}.log").read_text().splitlines()[-6:]
            log.write(f"{style}: exit {status} after {time.monotonic() - started:.0f} s\n" + "\n".join(tail) + "\n")
            if status:
                failed.append(style)
                continue
            write_scalars(run_dir, args.out / f"{style}_scalars.csv")
            previews = sorted((run_dir / "previews").glob("step_*.png"))
            if previews:
                shutil.copyfile(previews[-1], args.out / f"{style}_preview.png")
    print((args.out / "retrain.log").read_text(), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
