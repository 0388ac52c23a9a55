"""Safe file writes: atomic and durable writes, and the checks that keep every output off the inputs.

A reader never sees a half-written image, JSON, model or checkpoint, a write that returned survives a power
cut, and no job writes onto one of its own inputs (``refuse_overwriting_inputs``, used by every engine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fststyle.errors import UserError

#: A folder that fststyle writes outputs into holds this (hidden) file; ``images.list_images`` skips such
#: sub-folders, so outputs written inside an input folder never become inputs of a later run.
OUTPUT_MARKER = ".fststyle-output"
_MARKER_TEXT = (
    "fststyle wrote the images in this folder. Image listings (input=<folder>, training data) skip a\n"
    "sub-folder that holds this file, so earlier outputs are not stylised again. Delete this file to\n"
    "have the folder read as input.\n"
)


class OverwriteError(UserError):
    """An output of a job is one of its inputs (same path, symlink or hard link); nothing was written."""


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path``'s data (or a folder's entries) to disk."""
    flags = os.O_RDONLY
    if directory:
        flags |= getattr(os, "O_DIRECTORY", 0)
    elif os.name == "nt":  # Windows flushes only handles opened for writing
        flags = os.O_RDWR
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> Path:
    """Create a new empty hidden file beside ``path`` with the mode the process umask gives (0o666 & ~umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            # the kernel applies the umask to 0o666, as for any file the user creates; the umask is never read
            # or changed here (os.umask can only read it by setting it, which races with other threads)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success flush it to disk and move it onto `path`, on error
    delete it.

    The temporary file keeps `path`'s suffix so format-sniffing writers (Pillow, torch.save) behave
    as they would on the real name. Parent directories are created. The published file has the usual
    umask mode; it and its folder entry are fsynced, so a write that returned survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name != "nt":  # the rename itself is durable once the folder is flushed (POSIX)
        _fsync(path.parent, directory=True)


@contextlib.contextmanager
def atomic_write_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a path beside ``path`` for a writer that makes a folder there (a Core ML ``.mlpackage``); on
    success flush its files to disk and move it onto ``path``, on error delete it.

    A folder already at ``path`` is renamed aside, replaced and then deleted: a reader sees the old folder or
    the new one, never a half-written one (between the two renames, for an instant, neither)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.{token}.tmp{path.suffix}")
    try:
        yield tmp
        for written in sorted(tmp.rglob("*"), reverse=True):  # files before the folders that hold them
            _fsync(written, directory=written.is_dir())
        _fsync(tmp, directory=True)
        if path.is_dir():
            previous = path.with_name(f".{path.name}.{token}.old{path.suffix}")
            os.replace(path, previous)
            os.replace(tmp, path)
            shutil.rmtree(previous)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.name != "nt":
        _fsync(path.parent, directory=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON (indent=2, trailing newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _identity(path: Path) -> tuple:
    """What makes two spellings the same file: (device, inode) for an existing path (symlinks and hard links
    included), else the normalised absolute path with symlinks resolved."""
    try:
        stat = path.stat()
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))
    return ("inode", stat.st_dev, stat.st_ino)


def _renamed(path: Path) -> str:
    """A suggested output name next to ``path``: ``x.png`` -> ``x_stylised.png``, ``photos`` -> ``photos_stylised``."""
    return str(path.with_name(f"{path.stem}_stylised{path.suffix}"))


def refuse_overwriting_inputs(inputs: Iterable[str | os.PathLike], outputs: Iterable[str | os.PathLike]) -> None:
    """Raise OverwriteError if any output (a file or folder a job would write) is one of the inputs (files or
    folders it reads): the same path in any spelling (``./x.png``, ``x.png``, a symlink) or a hard link.

    Call it before any work, with every path a job would write; the message names both paths and the fix.
    """
    by_identity = {_identity(Path(path)): Path(path) for path in inputs}
    for output in map(Path, outputs):
        source = by_identity.get(_identity(output))
        if source is not None:
            what = "the input folder" if output.is_dir() else "the input"
            raise OverwriteError(
                f"output {output} is {what} {source}: writing it would overwrite the input; nothing was written. "
                f"Fix: pass an output that is not an input, e.g. output={_renamed(output)}"
            )


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise UserError unless ``path`` (a file, or a folder with ``folder=True``) can be written: it is not a
    folder (a file) or a file (a folder), and its nearest existing ancestor is a folder we may write into."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind, wanted = ("a folder", "a file name") if path.is_dir() else ("a file", "a folder")
        raise UserError(f"output {path} is {kind}; pass {wanted} there (e.g. output={_renamed(path)})")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write {path}: {existing} is a file, not a folder. "
                        "Fix: choose an output path whose folders are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: no permission to write in {existing}. "
                        "Fix: choose an output in a folder you can write to")


def mark_output_folder(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Create ``folder`` with the ``OUTPUT_MARKER`` file, unless one of ``inputs`` lies inside it (marking a
    folder that holds the job's own inputs would hide those inputs from a later listing of its parent)."""
    folder = Path(folder)
    resolved = folder.resolve()
    if any(Path(path).resolve().is_relative_to(resolved) for path in inputs):
        return
    marker = folder / OUTPUT_MARKER
    if not marker.exists():
        atomic_write_text(marker, _MARKER_TEXT)


def resolved_path(value: str | os.PathLike, what: str, must_exist: bool = True) -> Path:
    """An absolute path (relative ones resolve against the working directory the command ran in); a missing
    one is a FileNotFoundError naming ``what`` and how it resolved."""
    path = Path(value).expanduser().resolve()
    if must_exist and not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (from {value!r}; relative paths resolve against "
                                f"{Path.cwd()}). Fix the path, or run from the directory it is relative to.")
    return path
