"""The comparison's report: Markdown tables, column labels, and where each output file goes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fststyle.losses import term_names

#: the overview grid and the two reports in the output folder
REPORT_FILES = ("overview.png", "report.json", "report.md")


def column_labels(style_count: int, engines: Sequence[str]) -> list[str]:
    """Column labels of the strips and the overview: content, the style image(s), then each engine."""
    styles = ["style"] if style_count == 1 else [f"style {i + 1}" for i in range(style_count)]
    return ["content", *styles, *engines]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table_text(text: str) -> str:
    """``text`` on one line with its pipes escaped, to sit in a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: summary and per-photo tables, the pictures, and how to re-run the comparison."""
    model, summary = report["model"], report["summary"]
    style = model.get("style") or {}
    # one column per whole term of the scoring loss (content, style, tv, total, and any other it has)
    columns = next((term_names(stats["losses"]) for stats in summary["engines"].values()), [])
    lines = [
        "# Fast model vs optimisation", "",
        f"Model `{model['path']}` (style {style.get('name', '?')}, {model.get('steps')} training steps), "
        f"photos at {report['image_size']} px (longer side) on {report['device']}, torch {report['torch']}.",
        "Every output is scored with the model's own training loss (lower is better); wall time and peak "
        "memory are per photo (fast: after one untimed warm-up run; CPU memory: peak resident set above the "
        "start).", "",
        "## Summary (mean ± std [min, max])", "",
        f"| engine | photos | {' | '.join(columns)} | seconds | peak MB | fast is faster by |",
        "|" + "---|" * (len(columns) + 5),
    ]
    for engine, stats in summary["engines"].items():
        cells = [f"{_fmt(s['mean'])} ± {_fmt(s['std'])} [{_fmt(s['min'])}, {_fmt(s['max'])}]"
                 for s in (stats["losses"][t] for t in columns)]
        speedup = summary["speedup_of_fast"].get(engine)
        lines.append(f"| {engine} | {stats['photos']} | {' | '.join(cells)} | {_fmt(stats['seconds']['mean'])} | "
                     f"{_megabytes(stats['peak_memory_bytes'])} | {'-' if speedup is None else f'{speedup:.3g}x'} |")
    lines += ["", "## Per photo", "", f"| photo | size | engine | {' | '.join(columns)} | seconds | peak MB |",
              "|" + "---|" * (len(columns) + 5)]
    for row in report["photos"]:
        for engine, result in row["results"].items():
            photo = f"| [{row['name']}]({row['strip']}) | {row['width']}x{row['height']} |"
            if "error" in result:
                empty = " |" * (len(columns) + 1)  # the rest of the term columns, seconds, peak MB
                lines.append(f"{photo} {engine} | **failed**: {_table_text(result['error'])} |{empty}")
                continue
            terms = " | ".join(_fmt(result["losses"][t]) for t in columns)
            lines.append(f"{photo} [{engine}]({result['image']}) | {terms} | {_fmt(result['seconds'])} | "
                         f"{_megabytes(result['peak_memory_bytes'])} |")
    if report.get("overview"):
        lines += ["", "## Pictures", "", f"![overview]({report['overview']})", ""]
        lines += [f"![{row['name']}]({row['strip']})" for row in report["photos"]]
    if report["failures"]:
        lines += ["", "## Failures (photos that could not be read, engines that failed on a photo)", ""]
        lines += [f"- `{f['photo']}`{' (' + f['engine'] + ')' if 'engine' in f else ''}: {f['error']}"
                  for f in report["failures"]]
    provenance = report.get("provenance") or {}
    lines += ["", "## Re-run", ""]
    if provenance.get("command"):
        lines += ["```", provenance["command"], "```", ""]
    lines += ["Engine settings (the full resolved config is in report.json under `provenance`):", "", "```json",
              json.dumps(report["engine_settings"], indent=2), "```", ""]
    return "\n".join(lines)


def engine_image(engine: str, name: str) -> str:
    """Where engine ``engine``'s output for photo ``name`` goes, relative to the output folder."""
    return f"{engine}/{name}.png"


def strip_image(name: str) -> str:
    """Where the strip (content, style, each engine) of photo ``name`` goes, relative to the output folder."""
    return f"strips/{name}.png"


def planned_outputs(output: Path, engines: Sequence[str], names: Sequence[str]) -> list[Path]:
    """Every file ``compare`` writes into ``output`` for photos with these output ``names``."""
    files = [output / engine_image(engine, name) for engine in engines for name in names]
    files += [output / strip_image(name) for name in names]
    return [*files, *(output / report_file for report_file in REPORT_FILES)]
