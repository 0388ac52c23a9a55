"""Labelled grids of images (previews, comparison strips, overviews)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from fststyle.io.convert import tensor_to_pil, to_rgb_and_alpha


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (the fixed bitmap font on Pillow < 10.1 or without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _cell_image(cell: torch.Tensor | Image.Image | None, height: int) -> Image.Image | None:
    """A grid cell as an RGB PIL image of the given height (aspect kept); None stays empty."""
    if cell is None:
        return None
    img = to_rgb_and_alpha(cell)[0] if isinstance(cell, Image.Image) else tensor_to_pil(cell)
    width = max(1, round(img.width * height / img.height))
    return img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BICUBIC)


def labelled_grid(
    rows: Sequence[Sequence[torch.Tensor | Image.Image | None]],
    *,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_height: int = 256,
    pad: int = 4,
) -> Image.Image:
    """Lay out images (Tensor[3,H,W]/[1,3,H,W] or PIL; None = blank) in a white grid with text labels.

    Every cell is scaled to `cell_height` keeping its aspect; a column is as wide as its widest cell
    (or label) and narrower cells are centred. Column labels form a header row, row labels a left column.
    """
    n_rows = len(rows)
    n_cols = max((len(row) for row in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("labelled_grid needs at least one cell")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"got {len(col_labels)} col_labels for {n_cols} columns")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"got {len(row_labels)} row_labels for {n_rows} rows")

    font = _font(max(12, cell_height // 16))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = font.getbbox(text)
        return right - left, bottom - top

    cells = [[_cell_image(cell, cell_height) for cell in row] for row in rows]
    col_widths = []
    for col in range(n_cols):
        widths = [row[col].width for row in cells if col < len(row) and row[col] is not None]
        if col_labels is not None:
            widths.append(text_size(col_labels[col])[0])
        col_widths.append(max(widths, default=cell_height))
    header_height = max(text_size(label)[1] for label in col_labels) + 2 * pad if col_labels else 0
    label_width = max(text_size(label)[0] for label in row_labels) + 2 * pad if row_labels else 0

    width = label_width + sum(col_widths) + pad * (n_cols + 1)
    height = header_height + n_rows * cell_height + pad * (n_rows + 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    col_lefts = [label_width + pad + sum(col_widths[:c]) + pad * c for c in range(n_cols)]

    for col, label in enumerate(col_labels or []):
        text_width = text_size(label)[0]
        draw.text((col_lefts[col] + (col_widths[col] - text_width) // 2, pad), label, fill="black", font=font)
    for r, row in enumerate(cells):
        top = header_height + pad + r * (cell_height + pad)
        if row_labels:
            text_height = text_size(row_labels[r])[1]
            draw.text((pad, top + (cell_height - text_height) // 2), row_labels[r], fill="black", font=font)
        for col, img in enumerate(row):
            if img is not None:
                canvas.paste(img, (col_lefts[col] + (col_widths[col] - img.width) // 2, top))
    return canvas
