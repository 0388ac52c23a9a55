"""The one stylize runner: a checked plan (fststyle.stylize.plan) written item by item, each kind running its own items;
failures named while the others go on, one summary, the grid, and a clean stop on Ctrl-C or SIGTERM.

    report = stylize_paths(["photos/", "clip.mp4"], "styled/", Stylizer.load("starry_night"), temporal="flow")
    print(report.summary())

``stylize_paths`` is the whole job (``fststyle stylize`` is this call): check the inputs, plan, load the model
(only once the inputs are checked, when it is handed as a loader), run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from fststyle.errors import RunInterrupted
from fststyle.io.encode import save_image
from fststyle.io.files import mark_output_folder
from fststyle.io.grids import labelled_grid
from fststyle.stylize.kinds import InputKind, PlanItem
from fststyle.stylize.plan import Plan, check_sources, input_kinds, make_plan
from fststyle.stylize.sharding import process_rank
from fststyle.stylize.stylizer import Stylizer

log = logging.getLogger("fststyle")


@dataclass
class RunReport:
    """What a run did: outputs written (and how many of each kind), outputs left as they were, (input, reason)
    failures, files of no supported kind, wall seconds."""

    written: list[Path] = field(default_factory=list)
    written_by_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: what was stylised, how fast, and every file that failed or was left out, by name."""
        counts = [f"{count} {plural if count != 1 else noun}" for (noun, plural), count in self.written_by_kind.items()
                  if count] or ["0 images"]
        rate = len(self.written) / self.seconds if self.seconds > 0 else 0.0
        line = (f"stylised {' and '.join(counts)} in {self.seconds:.1f} s ({rate:.2f} files/s): "
                f"{len(self.written)} written, {len(self.skipped)} skipped (already there), {len(self.failed)} failed")
        if self.failed:
            line += ": " + ", ".join(str(path) for path, _ in self.failed)
        if self.unsupported:
            line += (f"; {len(self.unsupported)} skipped, not a photo or video: "
                     + ", ".join(map(str, self.unsupported)))
        return line


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside, SIGTERM raises RunInterrupted (as Ctrl-C raises KeyboardInterrupt), so a run stopped by a job
    scheduler ends cleanly too; outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, frame: Any) -> None:
        raise RunInterrupted(number)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_plan(plan: Plan, stylizer: Any, *, grid_cell_height: int = 256) -> RunReport:
    """Write every item of ``plan`` with ``stylizer`` (a fststyle.stylize.stylizer.Stylizer), kind by kind. A file
    named as an input that fails raises its error; one found in a folder is named in the log and the report,
    and the others still run. Raises RunInterrupted on Ctrl-C or SIGTERM, after logging how many outputs were
    written (each whole: writes are atomic) and how to resume."""
    start = time.perf_counter()
    report = RunReport(skipped=[item.target for item in plan.skipped], unsupported=list(plan.unsupported))
    for item in plan.skipped:
        log.info("skipped %s: it exists (skip_existing=true)", item.target)
    for item, error in plan.rejected:
        _record_failure(report, item, str(error))
    for folder, inputs in plan.output_folders.items():
        mark_output_folder(folder, inputs)
    previews: list[tuple[str, Image.Image, Image.Image]] = []
    try:
        with sigterm_interrupts():
            for kind, items in _by_kind(plan.items).items():
                for outcome in kind.run(stylizer, items, None if plan.grid is None else grid_cell_height):
                    if outcome.error is not None:
                        if outcome.item.folder is None:  # a file the user named: its error is the job's
                            raise outcome.error
                        _record_failure(report, outcome.item, outcome.reason)
                        continue
                    report.written.append(outcome.item.target)
                    counted = (kind.noun, kind.plural)
                    report.written_by_kind[counted] = report.written_by_kind.get(counted, 0) + 1
                    if outcome.item.folder is None:
                        log.info("wrote %s", outcome.item.target)
                    if outcome.preview is not None:
                        previews.append((outcome.item.label, *outcome.preview))
    except KeyboardInterrupt as stop:
        number = stop.signal_number if isinstance(stop, RunInterrupted) else signal.SIGINT
        log.warning("interrupted: wrote %d of %d outputs (each whole; %d were there already). To resume, run the "
                    "same command with skip_existing=true", len(report.written), len(plan.items), len(report.skipped))
        raise RunInterrupted(number) from None
    report.seconds = time.perf_counter() - start
    if plan.grid is not None and previews:
        write_grid([(photo, stylised) for _, photo, stylised in previews], [name for name, _, _ in previews],
                   plan.grid, stylizer.style_name, grid_cell_height)
    return report


def _by_kind(items: Sequence[PlanItem]) -> dict[InputKind, list[PlanItem]]:
    """``items`` grouped by kind, each group in plan order."""
    groups: dict[InputKind, list[PlanItem]] = {}
    for item in items:
        groups.setdefault(item.kind, []).append(item)
    return groups


def _record_failure(report: RunReport, item: PlanItem, reason: str) -> None:
    """Name ``item``'s failure in the log and the report."""
    log.error("%s", reason)
    report.failed.append((item.source, reason))


def write_grid(pairs: Sequence[tuple[Image.Image, Image.Image]], names: Sequence[str], path: str | os.PathLike,
               style_name: str, cell_height: int = 256) -> Path:
    """Save a labelled grid with one (photo | stylised) row per image to ``path``."""
    grid = labelled_grid([list(pair) for pair in pairs], col_labels=["photo", style_name], row_labels=list(names),
                         cell_height=cell_height)
    return save_image(grid, path)


def stylize_paths(paths: Sequence[str | os.PathLike], output: str | os.PathLike | None,
                  stylizer: Stylizer | Callable[[], Stylizer], *, grid: str | os.PathLike | None = None,
                  skip_existing: bool = False, kinds: Sequence[InputKind] | None = None,
                  **settings: Any) -> RunReport:
    """Stylise the photos, videos and folders ``paths`` into ``output`` (None: beside each, named after the
    style; a folder for several inputs) with ``stylizer``: a loaded Stylizer, or a function that loads one,
    called once every input is checked. ``settings``: those of ``plan.input_kinds`` (batch_size, max_pixels,
    jpeg_quality, video_quality, video_codec, temporal). ``grid``: also write a labelled photo | stylised grid
    there. ``skip_existing``: leave outputs already there (resumes a run). Under torchrun or SLURM each
    process writes its share. Logs and returns the report."""
    kinds = list(kinds) if kinds is not None else input_kinds(**settings)
    sources = check_sources(paths, kinds, grid)
    if output is None and not isinstance(stylizer, Stylizer):  # the default outputs name the style
        stylizer = stylizer()
    rank, world = process_rank()
    plan = make_plan(sources, output, kinds, style_name=stylizer.style_name if isinstance(stylizer, Stylizer) else None,
                     grid=grid, skip_existing=skip_existing, rank=rank, world=world)
    report = run_plan(plan, stylizer if isinstance(stylizer, Stylizer) else stylizer())
    log.info("%s", report.summary())
    return report
