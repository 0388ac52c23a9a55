"""Start-up times of the commands people run first: wall time and peak memory of each as a fresh process.

    PYTHONPATH=. python bench/startup.py                 # 5 runs each, medians
    PYTHONPATH=. python bench/startup.py --runs 9

Each command runs as ``python -m fststyle ...`` in a new process (cold imports, warm file cache after the first
run), beside two baselines measured in the same run: a bare interpreter (``python -c pass``, what no command
can beat) and ``python -c "import torch"`` (what a command pays once it touches torch). The stylize row
stylises a 512 px bundled photo with a shipped model on the CPU into a temporary folder. Figures: the median
wall time, its ratio to the bare interpreter, and the largest peak resident memory (``ru_maxrss`` of the
child). Nothing is asserted; the load averages are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from fststyle.bundled import bundled_path

PHOTO = "data/preview/000000000030.jpg"


def measure(argv: list[str], runs: int, cwd: Path) -> tuple[float, float]:
    """(median wall seconds, largest peak RSS in MB) of ``argv`` run ``runs`` times, each in a new process."""
    times, peaks = [], []
    for _ in range(runs):
        with tempfile.TemporaryFile() as errors:
            start = time.perf_counter()
            child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
            _, status, usage = os.wait4(child.pid, 0)  # reaped here, for this child's own peak memory
            times.append(time.perf_counter() - start)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode:
                errors.seek(0)
                raise SystemExit(f"{' '.join(argv)} failed: {errors.read().decode()[-500:]}")
        peaks.append(usage.ru_maxrss / 1024)  # KB on Linux
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        photo = work / "photo_512.jpg"
        with Image.open(bundled_path(PHOTO)) as image:
            image.convert("RGB").resize((512, 512 * image.height // image.width)).save(photo, quality=95)
        python = [sys.executable]
        rows = [("python -c pass (baseline)", [*python, "-c", "pass"]),
                ('python -c "import torch" (baseline)', [*python, "-c", "import torch"]),
                ("fststyle --help", [*python, "-m", "fststyle", "--help"]),
                ("fststyle models", [*python, "-m", "fststyle", "models"]),
                ("fststyle stylize --help", [*python, "-m", "fststyle", "stylize", "--help"]),
                ("fststyle stylize (512 px photo, starry_night, CPU)",
                 [*python, "-m", "fststyle", "stylize", str(photo), "-m", "starry_night", "-o", str(work / "out.jpg"),
                  "device=cpu"])]
        print(f"{args.runs} runs each, medians; {os.cpu_count()} CPUs; load average before {os.getloadavg()}")
        print("| command | wall s | x bare interpreter | peak MB |")
        print("|---|---|---|---|")
        bare = None
        for label, argv in rows:
            seconds, peak = measure(argv, args.runs, work)
            bare = bare or seconds
            print(f"| {label} | {seconds:.2f} | {seconds / bare:.1f}x | {peak:.0f} |", flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
