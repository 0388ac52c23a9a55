"""Training under the GPU presets against plain fp32: the same seed, data and steps, compared loss by loss.

    PYTHONPATH=. python bench/precision_parity.py --steps 300 -- data.kind=folder data.root=/path/to/photos

Runs ``train.py`` (a real run each: Lightning Trainer, previews, checkpoints, export) once per variant:

- ``fp32``: ``trainer=gpu`` with ``trainer.precision=32-true networks.channels_last=false`` (the baseline);
- ``bf16``: ``trainer=gpu`` as shipped (bf16-mixed autocast, channels_last);
- ``bf16+compile``: the same with ``networks.compile=true``.

Every variant logs every step; the loss terms are read back from TensorBoard. The first step sees the same
weights and batch in every variant, so its loss differs only by arithmetic; later steps drift apart as the
weights do, so they are compared as means over the last quarter of the run. Steps/s come from the logged
events' wall times (after the first logged step: no start-up or compile time). Figures are printed, never
asserted; ``tests/test_cuda.py`` asserts the first-step agreement.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "fp32": ["trainer.precision=32-true", "networks.channels_last=false"],
    "bf16": [],
    "bf16+compile": ["networks.compile=true"],
}
TERMS = ("total", "content", "style", "tv")


def run(name: str, extra: list[str], steps: int, run_dir: Path) -> dict[str, list[tuple[float, int, float]]]:
    """One ``train.py`` run; its train/* scalars as {term: [(wall time, step, value)]}."""
    command = [sys.executable, str(REPO / "train.py"), "trainer=gpu", *extra, f"trainer.max_steps={steps}",
               "trainer.log_every_n_steps=1", f"trainer.val_check_interval={steps}", "trainer.num_sanity_val_steps=0",
               f"checkpoint_every_n_steps={steps}", f"run_dir={run_dir}", *VARIANTS[name]]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)  # train.py's folder is on its path
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {term: [(e.wall_time, e.step, e.value) for e in events.Scalars(f"train/{term}")]
            for term in TERMS if f"train/{term}" in events.Tags()["scalars"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("overrides", nargs="*", help="train.py overrides shared by every variant (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        logs = {name: run(name, args.overrides, args.steps, Path(scratch) / name) for name in args.variants}
    base_name = args.variants[0]
    base = logs[base_name]
    window = max(1, args.steps // 4)
    print(f"\n{args.steps} steps per variant; 'last' = mean over the last {window} logged steps; "
          f"differences relative to {base_name}")
    print(f"| variant | steps/s | {' | '.join(f'first {t} (rel.)' for t in base)} | "
          f"{' | '.join(f'last {t} (rel.)' for t in base)} |")
    print("|---" * (2 + 2 * len(base)) + "|")
    for name, scalars in logs.items():
        total = scalars["total"]
        speed = (len(total) - 1) / (total[-1][0] - total[0][0])
        cells = [name, f"{speed:.1f}"]
        for kind in ("first", "last"):
            for term, values in scalars.items():
                value = values[0][2] if kind == "first" else statistics.fmean(v for *_, v in values[-window:])
                ref = base[term][0][2] if kind == "first" else statistics.fmean(v for *_, v in base[term][-window:])
                cells.append(f"{value:.4g} ({(value - ref) / ref:+.2%})" if ref else f"{value:.4g}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
