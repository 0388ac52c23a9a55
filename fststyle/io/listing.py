"""Find image files: a folder's images, or the images a list of files and folders names."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

from fststyle.errors import InputNotFoundError
from fststyle.io.files import OUTPUT_MARKER

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}

def list_images(folder: str | os.PathLike, suffixes: Collection[str] | None = IMAGE_SUFFIXES) -> list[Path]:
    """All image files (or files with other ``suffixes``, lower case; None: every file) under `folder` (recursive,
    sorted); hidden files and folders are skipped, and so are sub-folders that fststyle wrote outputs into (they
    hold files.OUTPUT_MARKER)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = []
    for directory, subfolders, names in os.walk(folder):
        # Skips macOS "._x.jpg" resource forks, .ipynb_checkpoints and our own atomic-write temp files.
        subfolders[:] = [name for name in subfolders
                         if not name.startswith(".") and not os.path.isfile(os.path.join(directory, name, OUTPUT_MARKER))]
        for name in names:
            path = Path(directory, name)
            if not name.startswith(".") and (suffixes is None or path.suffix.lower() in suffixes) and path.is_file():
                found.append(path)
    return sorted(found)


def image_files(sources: str | os.PathLike | Sequence[str | os.PathLike], setting: str = "images") -> list[Path]:
    """The image files ``sources`` names: each one a file, or a folder (its images, as ``list_images``).

    Raises InputNotFoundError naming ``setting`` for a source that does not exist or a folder without images."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise InputNotFoundError(f"{setting}: no images in {item} (looked for "
                                         f"{', '.join(sorted(IMAGE_SUFFIXES))}); pass a folder of photos")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise InputNotFoundError(f"{setting} not found: {item}; pass an image file or a folder of images")
    if not files:
        raise InputNotFoundError(f"{setting}: no image given; pass an image file or a folder of images")
    return files


