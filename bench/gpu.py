"""The speed issue's GPU figures in one run (at most 8 minutes on one GPU), each against its plain eager fp32
baseline measured in the same run, with the device named. Writes a JSON file and prints a table.

    PYTHONPATH=. python bench/gpu.py --out gpu_bench.json                # on a GPU
    PYTHONPATH=. python bench/gpu.py --dry-run --out dry.json            # tiny sizes on the CPU (tests/test_bench.py)

Sections (each runs even when an earlier one failed; its error is recorded instead of its rows):

- ``inference``: batch 8 x 1024^2, random weights, full width. Baseline: ``TransformerNet.forward``, eager fp32
  NCHW under ``no_grad``. Rows: the ``Stylizer`` in bf16 eager, and with ``compile=true`` (the fast form compiled
  for this shape, replayed from a CUDA graph); compile time apart. Figure: images/s.
- ``gatys``: 500 L-BFGS iterations at 512 px on the first preview photo and starry_night (the gatys engine's loss).
  Baseline: ``torch.optim.LBFGS`` without a line search, eager fp32 (the same algorithm). Rows: the engine's
  ``DeviceLBFGS`` from one CUDA graph, fp32 and bf16-mixed. Figures: seconds and the loss reached.
- ``training``: batch 4 x 256^2, full width, ``experiment=johnson2016`` (random VGG-16 weights: timing only).
  Baseline: bench/train_step.py's plain step (fp32, NCHW, VGG trainable). Rows: the project's step (bf16,
  channels_last, fused Adam) eager, and compiled with CUDA graphs (``networks.compile_mode=reduce-overhead``).
  Figure: steps/s.
- ``data``: decode and crop, 256 px, ../shared/data/coco128 (or the bundled sample): bench/data_pipeline.py's rows.
  Figure: crops/s, and the steps/s at batch 4 they can feed.

Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fststyle.nets.transformer import TransformerConfig, TransformerNet  # noqa: E402
from fststyle.optimize.settings import OptimizeSettings  # noqa: E402
from fststyle.stylize.stylizer import Stylizer  # noqa: E402


def _bench_script(name: str) -> ModuleType:
    """Another script of bench/ as a module (by path: the repo's own infer.py shares a name with one)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data_pipeline, infer, lbfgs, train_step = (_bench_script(name) for name in
                                           ("data_pipeline", "infer", "lbfgs", "train_step"))

#: the figures' sizes on a GPU, and the dry run's on the CPU
FULL = {"inference": (8, 1024, 1.0, 10), "gatys": (512, 500), "training": ((), 30, 3), "data": 256}
DRY = {"inference": (1, 64, 0.25, 2), "gatys": (48, 4),
       "training": (("data.image_size=32", "data.batch_size=2", "transformer.width=0.25"), 2, 1), "data": 32}
COCO128 = REPO.parent / "shared" / "data" / "coco128" / "train2017"
SAMPLE = REPO / "data" / "coco_sample" / "train2017"


def inference(device: torch.device, compile: bool, sizes: tuple) -> list[dict]:
    batch, side, width, repeats = sizes
    torch.manual_seed(0)
    network = TransformerNet(TransformerConfig(width=width)).eval()

    def stylizer(compiled: bool) -> Stylizer:
        twin = TransformerNet(network.config).eval()
        twin.load_state_dict(network.state_dict())
        return Stylizer(twin, device=device, dtype=torch.bfloat16, compile=compiled)

    baseline = network.to(device)
    variants: dict[str, Callable] = {"eager fp32 NCHW (baseline)": torch.no_grad()(baseline),
                                     "Stylizer bf16": stylizer(False).stylize}
    images = torch.rand(batch, 3, side, side, device=device)
    rows = []
    if compile:
        compiled = stylizer(True).stylize
        started = time.perf_counter()
        infer.synchronized(compiled)(images)
        rows.append({"name": "compile=true: compile + first call", "seconds": time.perf_counter() - started})
        variants["Stylizer bf16 compile=true (CUDA graph)"] = compiled
    results = infer.timed_interleaved({name: partial(infer.synchronized(function), images)
                                       for name, function in variants.items()}, repeats)
    base = results["eager fp32 NCHW (baseline)"][0]
    for name, (best, median) in results.items():
        rows.append({"name": name, "best_ms": best * 1e3, "median_ms": median * 1e3, "images_per_s": batch / best,
                     "vs_baseline": base / best})
    return rows


def gatys(device: torch.device, compile: bool, sizes: tuple) -> list[dict]:
    side, iterations = sizes
    loss, content = lbfgs.gatys_problem("gatys", side, device.type)
    runs = {"torch.optim.LBFGS, eager fp32 (baseline)": lambda n: lbfgs.run_torch(loss, content, n, None)}
    for precision in ("32-true", "bf16-mixed"):
        settings = OptimizeSettings(steps=iterations, image_size=side, precision=precision)
        graph = ", CUDA graph" if device.type == "cuda" else ""
        runs[f"DeviceLBFGS {precision}{graph}"] = partial(lbfgs.run_device, loss, content, settings=settings)
    rows = []
    for name, run in runs.items():
        rows.append({"name": name, **lbfgs.timed_run(run, iterations, loss, device.type)})
    base = rows[0]
    for row in rows:
        row |= {"vs_baseline": base["seconds"] / row["seconds"], "loss_vs_baseline": row["loss"] / base["loss"]}
    return rows


def training(device: torch.device, compile: bool, sizes: tuple) -> list[dict]:
    overrides, steps, rounds = sizes
    cfg = train_step._config("johnson2016", device, overrides)
    batch, side = cfg["data"]["batch_size"], cfg["data"]["image_size"]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(batch, 3, side, side, generator=generator).to(device) for _ in range(steps)]
    variants = {"plain fp32 eager (baseline)": train_step.plain_step(cfg, device, frozen=False),
                f"project {cfg['trainer']['precision']}": train_step.project_step(cfg, device, compile=False)}
    if compile:
        variants["project + compile reduce-overhead (CUDA graphs)"] = train_step.project_step(
            cfg, device, compile=True, compile_mode="reduce-overhead")
    rows = []
    for name, step in variants.items():
        started = time.perf_counter()
        for images in batches[:3]:  # warm-up: compiling, capturing, cuDNN plans
            step(images)
        train_step._synchronize(device)
        warmup = time.perf_counter() - started
        seconds = min(train_step._time(step, batches, device) for _ in range(rounds))
        rows.append({"name": name, "steps_per_s": 1 / seconds, "warmup_s": warmup})
    for row in rows:
        row["vs_baseline"] = row["steps_per_s"] / rows[0]["steps_per_s"]
    return rows


def data(device: torch.device, compile: bool, size: int, root: Path) -> list[dict]:
    workers = [0, 4, 8] if (os.cpu_count() or 1) >= 8 else [0]
    rates = data_pipeline.pipeline_rates(root, size, workers)
    base = rates["pillow (plain)"]
    return [{"name": f"{name} ({root.parent.name})", "crops_per_s": value, "steps_per_s_at_batch_4": value / 4,
             "vs_baseline": value / base} for name, value in rates.items()]


SECTIONS = {"inference": inference, "gatys": gatys, "training": training, "data": data}


def describe(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": f"{device.type}: {name}", "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0]}


def write_json(path: Path, report: dict) -> None:
    """The report so far, replaced atomically (a later section's crash leaves the earlier ones)."""
    partial_path = path.with_name(path.name + ".partial")
    partial_path.write_text(json.dumps(report, indent=2))
    partial_path.replace(path)


def print_table(report: dict) -> None:
    print(f"\n{report['machine']['device']}, torch {report['machine']['torch']}")
    for section, result in report["sections"].items():
        print(f"\n== {section} ({result.get('seconds', 0):.0f} s)")
        if "error" in result:
            print(f"   failed: {result['error']}")
            continue
        for row in result["rows"]:
            figures = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                                for key, value in row.items() if key != "name")
            print(f"   {row['name']:<58s} {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON report")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, not speed")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--photos", type=Path, default=COCO128 if COCO128.is_dir() else SAMPLE,
                        help="the training photos of the data section (default: ../shared/data/coco128)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    sizes = DRY if args.dry_run else FULL
    report = {"machine": describe(device), "dry_run": args.dry_run, "sections": {}}
    print(f"{report['machine']['device']}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    for name in args.sections:
        started = time.perf_counter()
        try:
            extra = (args.photos,) if name == "data" else ()
            result = {"rows": SECTIONS[name](device, not args.no_compile, sizes[name], *extra)}
        except Exception as error:  # a bench on borrowed GPU time keeps the other sections' figures
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        result["seconds"] = time.perf_counter() - started
        report["sections"][name] = result
        print(f"{name}: {result['seconds']:.0f} s", flush=True)
        write_json(args.out, report)
    print_table(report)


if __name__ == "__main__":
    main()
