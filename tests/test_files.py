"""fststyle.io.files: durable atomic writes with the umask's mode, the one check that keeps outputs off inputs,
writable-output checks, and output-folder markers that keep earlier outputs out of image listings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fststyle.errors import UserError
from fststyle.io.files import (
    OUTPUT_MARKER,
    OverwriteError,
    atomic_write,
    atomic_write_text,
    check_writable,
    mark_output_folder,
    refuse_overwriting_inputs,
)
from fststyle.io.listing import list_images


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_published_files_get_the_current_umask_mode(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "out.txt", "hello")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "out.txt").read_text() == "hello"


def test_importing_and_writing_never_sets_the_umask(repo, tmp_path: Path) -> None:
    """os.umask can only be read by setting it, which races with threads creating files meanwhile."""
    script = (
        "import os\n"
        "calls = []\n"
        "real = os.umask\n"
        "os.umask = lambda mask: (calls.append(mask), real(mask))[1]\n"
        "from fststyle.io.files import atomic_write_text\n"
        f"atomic_write_text({str(tmp_path / 'x.txt')!r}, 'x')\n"
        "print(calls)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_atomic_write_fsyncs_the_file_before_publishing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(source, destination) -> None:
        events.append(("replace", os.stat(source).st_ino))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_write(tmp_path / "model.bin") as tmp:
        tmp.write_bytes(b"weights")
    inode = (tmp_path / "model.bin").stat().st_ino
    assert ("replace", inode) in events
    assert events.index(("fsync", inode)) < events.index(("replace", inode))
    if os.name != "nt":  # and the folder, so the rename itself survives a crash
        assert events[-1] == ("fsync", tmp_path.stat().st_ino)


def test_overwrite_check_sees_every_spelling_of_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(photo)
    (tmp_path / "link.png").symlink_to(photo)
    os.link(photo, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for output in ["x.png", "./x.png", str(photo), "sub/../x.png", "link.png", "hard.png"]:
        with pytest.raises(OverwriteError, match="would overwrite the input"):
            refuse_overwriting_inputs(["x.png"], [output])
    with pytest.raises(OverwriteError, match="x_stylised.png"):  # the message names a fix
        refuse_overwriting_inputs([photo], ["./x.png"])
    refuse_overwriting_inputs(["x.png"], ["y.png", "sub/x.png"])  # neither is the input


def test_overwrite_check_refuses_a_folder_written_onto_itself(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(OverwriteError, match="the input folder"):
        refuse_overwriting_inputs([tmp_path / "photos"], [f"{tmp_path}/photos/."])
    refuse_overwriting_inputs([tmp_path / "photos"], [tmp_path / "photos" / "styled"])  # inside is fine


def test_check_writable_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_writable(tmp_path / "notes.txt" / "deeper" / "out.png")
    with pytest.raises(UserError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(UserError, match="is a file"):
        check_writable(tmp_path / "notes.txt", folder=True)
    check_writable(tmp_path / "new" / "deeper" / "out.png")  # missing folders are created when writing
    check_writable(tmp_path / "new" / "folder", folder=True)


def test_listing_skips_marked_output_folders_but_not_the_folder_asked_for(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for relative in ["a.jpg", "trip/b.png", "styled/a.jpg", "styled/trip/b.png"]:
        (photos / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(photos / relative)
    mark_output_folder(photos / "styled")
    assert list_images(photos) == [photos / "a.jpg", photos / "trip" / "b.png"]
    assert list_images(photos / "styled") == [photos / "styled" / "a.jpg", photos / "styled" / "trip" / "b.png"]


def test_a_folder_holding_the_inputs_is_not_marked(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    mark_output_folder(tmp_path, [tmp_path / "photos"])  # output=. for input=photos: its parent stays listable
    assert not (tmp_path / OUTPUT_MARKER).exists()
    mark_output_folder(tmp_path / "out", [tmp_path / "photos"])
    assert (tmp_path / "out" / OUTPUT_MARKER).is_file()
