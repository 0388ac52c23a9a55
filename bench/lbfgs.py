"""The engine's L-BFGS (``DeviceLBFGS``, no host sync) against ``torch.optim.LBFGS`` on one Gatys problem.

    PYTHONPATH=. python bench/lbfgs.py                       # 100 iterations at 256 px on the CPU
    PYTHONPATH=. python bench/lbfgs.py --size 512 --iterations 500 --device cuda
    PYTHONPATH=. python bench/lbfgs.py --engine mrf --size 128 --iterations 50

Content: the first bundled preview photo; style: starry_night; the engine's loss (conf/engine/gatys.yaml or mrf.yaml).
Three optimisers from the same start, one after the other in this process, each after a 2-iteration warm-up:
torch's L-BFGS without a line search (the same algorithm as ours, the plain eager baseline), torch's L-BFGS with
its strong-Wolfe line search (what the engine ran before), and the engine's own. Each row prints the wall time,
the loss and gradient evaluations, and the total loss at the point reached (evaluated afresh), and the ratios of
time and loss against the baseline. It prints figures and never fails on timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fststyle.io.decode import load_image  # noqa: E402
from fststyle.optimize.engine import lbfgs_iterations  # noqa: E402
from fststyle.optimize.settings import LBFGS_TOLERANCE, OptimizeSettings, build_loss  # noqa: E402

CONTENT = REPO / "data" / "preview" / "000000000030.jpg"
STYLE = REPO / "data" / "styles" / "starry_night.jpg"


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_torch(loss, start: torch.Tensor, iterations: int, line_search: str | None) -> tuple[torch.Tensor, int]:
    """``iterations`` of torch.optim.LBFGS in one ``step`` call -> (x reached, evaluations)."""
    x = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=iterations, max_eval=iterations * 4, history_size=100,
                                  line_search_fn=line_search, tolerance_grad=LBFGS_TOLERANCE,
                                  tolerance_change=LBFGS_TOLERANCE)
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        total = loss(x)["total"]
        total.backward()
        return total

    optimizer.step(closure)
    return x.detach(), evaluations


def run_device(loss, start: torch.Tensor, iterations: int, settings: OptimizeSettings) -> tuple[torch.Tensor, int]:
    """``iterations`` of the engine's L-BFGS (its CUDA graph on CUDA) -> (x reached, evaluations)."""
    x = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)
    first, next_step, optimizer = lbfgs_iterations(x, loss, settings)
    first()
    for _ in range(iterations):
        next_step()
    optimizer.settle()
    return x.detach(), iterations + 1


def gatys_problem(engine: str, size: int, device: str):
    """(the engine's loss with its targets set, the content 1,3,H,W): the first preview photo, starry_night."""
    config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "engine" / f"{engine}.yaml"))
    loss = build_loss(config).to(device)
    content = load_image(CONTENT, size).to(device)
    loss.set_content(content)
    loss.set_style([load_image(STYLE, size).to(device)])
    return loss, content


def timed_run(run, iterations: int, loss, device: str) -> dict[str, float]:
    """``run(iterations)`` after a 2-iteration warm-up -> seconds, evaluations and the total loss reached."""
    run(2)  # warm-up: allocator, oneDNN / cuDNN plans
    _synchronize(device)
    started = time.perf_counter()
    x, evaluations = run(iterations)
    _synchronize(device)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        reached = float(loss(x)["total"])
    return {"seconds": seconds, "evaluations": evaluations, "loss": reached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="gatys", choices=["gatys", "mrf"])
    args = parser.parse_args()
    loss, content = gatys_problem(args.engine, args.size, args.device)
    settings = OptimizeSettings(steps=args.iterations, image_size=args.size)
    runs = {
        "torch LBFGS, no line search (baseline)": lambda n: run_torch(loss, content, n, None),
        "torch LBFGS, strong Wolfe (engine before)": lambda n: run_torch(loss, content, n, "strong_wolfe"),
        "DeviceLBFGS (engine now)": lambda n: run_device(loss, content, n, settings),
    }
    print(f"{args.engine}, {tuple(content.shape[-2:])} px, {args.iterations} L-BFGS iterations, device {args.device}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"{'optimiser':44s} {'seconds':>8s} {'evals':>6s} {'loss':>12s} {'time/base':>10s} {'loss/base':>10s}")
    baseline = None
    for name, run in runs.items():
        row = timed_run(run, args.iterations, loss, args.device)
        baseline = baseline or row
        print(f"{name:44s} {row['seconds']:8.2f} {row['evaluations']:6d} {row['loss']:12.5g} "
              f"{row['seconds'] / baseline['seconds']:9.2f}x {row['loss'] / baseline['loss']:9.4f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
