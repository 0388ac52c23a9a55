"""Time per iteration and peak memory of the optimisation engines (Gatys, MRF) with L-BFGS and Adam.

    PYTHONPATH=. python bench/optimize.py                      # 256 and 512 px, CPU (and CUDA when present)
    PYTHONPATH=. python bench/optimize.py --sizes 128 --iterations 2
    PYTHONPATH=. python bench/optimize.py --sizes 512 --iterations 500 --devices cuda --engines gatys --optimizers lbfgs

Each setting runs in a fresh subprocess. Its peak memory is the timed run's ``peak_memory_bytes``, which
``optimize_image`` measures with ``fststyle.memory.PeakMemory`` (style targets and every iteration count): on CPU
the peak resident set above the resident set at its start, on CUDA the allocator peak.
Everything is plain eager fp32 (the engine has no other mode, so it is its own baseline); the ratios printed are
MRF / Gatys per evaluation at the same size and optimiser, where both ran. It prints figures and never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # fststyle, in this process and in the one-setting subprocesses it starts
CONTENT = REPO / "data" / "preview" / "000000000030.jpg"
STYLE = REPO / "data" / "styles" / "starry_night.jpg"


def measure(engine: str, optimizer: str, size: int, iterations: int, device: str) -> dict:
    """One setting, in this process: setup, one warm-up iteration, then ``iterations`` timed ones."""
    import torch
    from omegaconf import OmegaConf

    from fststyle.io.decode import load_image
    from fststyle.optimize.engine import optimize_image
    from fststyle.optimize.settings import OptimizeSettings, build_loss

    engine_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "engine" / f"{engine}.yaml"))
    loss = build_loss(engine_cfg).to(device)
    content, style = load_image(CONTENT, size), load_image(STYLE, size)
    settings = OptimizeSettings(steps=1, optimizer=optimizer, image_size=size)
    optimize_image(content, [style], loss, settings, progress=False)  # warm-up: allocator, oneDNN/cuDNN plans
    if device == "cuda":
        torch.cuda.synchronize()
    settings = OptimizeSettings(steps=iterations, optimizer=optimizer, image_size=size)
    started = time.perf_counter()
    result = optimize_image(content, [style], loss, settings, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "engine": engine, "optimizer": optimizer, "size": size, "device": device, "iterations": iterations,
        "evaluations": result.evaluations, "seconds_per_iteration": seconds / iterations,
        "seconds_per_evaluation": seconds / result.evaluations,
        "peak_bytes": result.peak_memory_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per setting (after a warm-up)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--engines", nargs="+", default=["gatys", "mrf"], choices=["gatys", "mrf"])
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"], choices=["lbfgs", "adam"])
    parser.add_argument("--one", nargs=4, metavar=("ENGINE", "OPTIMIZER", "SIZE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        engine, optimizer, size, device = args.one
        print(json.dumps(measure(engine, optimizer, int(size), args.iterations, device)))
        return

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU threads visible"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    rows = []
    for device in devices:
        for size in args.sizes:
            for optimizer in args.optimizers:
                for engine in args.engines:
                    command = [sys.executable, __file__, "--iterations", str(args.iterations),
                               "--one", engine, optimizer, str(size), device]
                    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    row = rows[-1]
                    print(f"  {device:4} {size:4}px {optimizer:5} {engine:5} {row['seconds_per_iteration']:8.4f} s/it "
                          f"({row['evaluations']} evals), {row['iterations']} iterations in "
                          f"{row['seconds_per_iteration'] * row['iterations']:.2f} s, "
                          f"peak +{row['peak_bytes'] / 2**20:7.0f} MiB", flush=True)
    if len(args.engines) < 2:
        return

    print("\n| device | size | optimiser | Gatys s/iter (evals) | MRF s/iter (evals) | Gatys s/eval | MRF s/eval "
          "| MRF / Gatys per eval | Gatys peak MiB | MRF peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for size in args.sizes:
            for optimizer in args.optimizers:
                gatys, mrf = (next(r for r in rows if (r["device"], r["size"], r["optimizer"], r["engine"])
                                   == (device, size, optimizer, engine)) for engine in ("gatys", "mrf"))
                ratio = mrf["seconds_per_evaluation"] / gatys["seconds_per_evaluation"]
                print(f"| {device} | {size} | {optimizer} | {gatys['seconds_per_iteration']:.2f} ({gatys['evaluations']}) "
                      f"| {mrf['seconds_per_iteration']:.2f} ({mrf['evaluations']}) | "
                      f"{gatys['seconds_per_evaluation']:.2f} | {mrf['seconds_per_evaluation']:.2f} | {ratio:.2f}x | "
                      f"{gatys['peak_bytes'] / 2**20:.0f} | {mrf['peak_bytes'] / 2**20:.0f} |")
    print("\npeak = the timed optimize_image's peak_memory_bytes (fststyle.memory.PeakMemory; CPU: peak RSS "
          "above its start; CUDA: allocator peak). An evaluation is one loss forward + backward; an L-BFGS iteration "
          "includes its line-search evaluations, Adam's run adds one forward to score the last step.")


if __name__ == "__main__":
    main()
