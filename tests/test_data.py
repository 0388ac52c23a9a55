"""Datasets and DataModule on real COCO-layout folders and real image files."""

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.io.convert import pil_to_tensor
from fststyle.io.decode import ImageReadError, open_image, read_rgb_uint8
from fststyle.io.listing import list_images
from fststyle.training import data
from fststyle.training.data import (
    CocoImages,
    ImageFolderImages,
    PreviewImages,
    StyleDataModule,
    UnreadableImageWarning,
)


def assert_crops(dataset, size, count=3):
    for index in range(min(count, len(dataset))):
        crop = dataset[index]
        assert crop.shape == (3, size, size) and crop.dtype == torch.float32
        assert 0.0 <= crop.min() and crop.max() <= 1.0 and crop.std() > 0.01


def test_coco_sample_bundled(bundled_data):
    dataset = CocoImages(bundled_data / "coco_sample", image_size=256)
    assert len(dataset) == 40
    assert dataset.image_ids == sorted(dataset.image_ids)
    assert all(path.is_file() for path in dataset.paths)
    assert_crops(dataset, 256)


def test_coco_layout_with_max_images(bundled_data):
    """The bundled sample has the COCO layout, so this runs in a clean clone (no downloaded COCO needed)."""
    dataset = CocoImages(bundled_data / "coco_sample", "train2017", image_size=128, max_images=10)
    assert len(dataset) == 10
    assert dataset.paths[0].name == "000000000025.jpg"  # the lowest image id of the sample
    assert_crops(dataset, 128)


def test_train2014_layout(tmp_path, tiny_jpegs):
    (tmp_path / "train2014").mkdir()
    entries = []
    for image_id, source in zip((42, 7), tiny_jpegs[:2], strict=True):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        (tmp_path / "train2014" / name).write_bytes(source.read_bytes())
        entries.append({"id": image_id, "file_name": name, "width": 1, "height": 1})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": entries, "annotations": [], "categories": []})
    )
    dataset = CocoImages(tmp_path, split="train2014", image_size=32)
    assert dataset.image_ids == [7, 42]
    assert [p.name for p in dataset.paths] == ["COCO_train2014_000000000007.jpg", "COCO_train2014_000000000042.jpg"]
    assert_crops(dataset, 32)


def test_missing_annotations_explain_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train2017.json") as caught:
        CocoImages(tmp_path)
    assert "data/README.md" in str(caught.value)


def make_mixed_folder(folder, tiny_jpegs):
    """A grey PNG, a CMYK JPEG, a normal JPEG and a truncated (corrupt) JPEG."""
    folder.mkdir()
    Image.open(tiny_jpegs[0]).convert("L").save(folder / "a_grey.png")
    Image.open(tiny_jpegs[1]).convert("CMYK").save(folder / "b_cmyk.jpg")
    (folder / "c_photo.jpg").write_bytes(tiny_jpegs[2].read_bytes())
    data_bytes = tiny_jpegs[2].read_bytes()
    (folder / "d_corrupt.jpg").write_bytes(data_bytes[: len(data_bytes) // 3])


def test_folder_skips_corrupt_with_one_warning(tmp_path, tiny_jpegs):
    make_mixed_folder(tmp_path / "mixed", tiny_jpegs)
    dataset = ImageFolderImages(tmp_path / "mixed", image_size=24)
    assert len(dataset) == 4
    assert_crops(dataset, 24, count=3)  # grey, CMYK and the photo all decode
    with pytest.warns(UnreadableImageWarning, match="d_corrupt.jpg"):
        assert dataset[3] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset[3] is None  # warned once per file, not every epoch


def test_collate_counts_skipped(tmp_path, tiny_jpegs):
    make_mixed_folder(tmp_path / "mixed", tiny_jpegs)
    dataset = ImageFolderImages(tmp_path / "mixed", image_size=24)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=data.collate_skipping_bad)
    with pytest.warns(UnreadableImageWarning):
        batch, skipped = next(iter(loader))
    assert batch.shape == (3, 3, 24, 24) and skipped == 1
    empty, skipped = data.collate_skipping_bad([None, None], image_size=24)
    assert empty.shape == (0, 3, 24, 24) and skipped == 2


def test_fast_decoder_matches_pillow(tmp_path, tiny_jpegs):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(tiny_jpegs[0]).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    Image.open(tiny_jpegs[0]).save(tmp_path / "rotated.webp", exif=exif, quality=95)
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (2, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    Image.open(tiny_jpegs[1]).save(tmp_path / "photo.tif")
    for name in ("rotated.jpg", "rotated.webp", "ramp16.png", "photo.tif"):
        fast = read_rgb_uint8(tmp_path / name)
        reference = pil_to_tensor(open_image(tmp_path / name)[0]).mul(255).round()
        assert fast.dtype == torch.uint8 and fast.shape == reference.shape, name
        assert (fast.float() - reference).abs().mean() < 2.0, name


def test_fast_decoder_bomb_guard(tiny_jpegs):
    with pytest.raises(ImageReadError, match="max_pixels"):
        read_rgb_uint8(tiny_jpegs[0], max_pixels=100)


def png_declaring(width, height):
    """A valid PNG whose IHDR declares width x height RGB pixels but whose pixel data is one 64-px row."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * 64)))
            + chunk(b"IEND", b""))


def jpeg_declaring(width, height):
    """A 16x16 baseline JPEG whose SOF0 marker is rewritten to declare width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    return bytes(data)


def webp_declaring(width, height):
    """A 16x16 lossless WebP (extended format) whose canvas and bitstream are rewritten to width x height."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "forces the extended (VP8X) format"
    Image.new("RGB", (16, 16)).save(buffer, "WEBP", lossless=True, exif=exif)
    data = bytearray(buffer.getvalue())
    canvas = data.index(b"VP8X") + 12  # 24-bit width-1 and height-1
    data[canvas:canvas + 6] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    bits = data.index(b"VP8L") + 9  # after the 0x2f signature: 14-bit width-1, 14-bit height-1
    packed = int.from_bytes(data[bits:bits + 4], "little") & ~(2**28 - 1) | (width - 1) | (height - 1) << 14
    data[bits:bits + 4] = packed.to_bytes(4, "little")
    return bytes(data)


#: reads every item of a folder dataset; prints the names it decoded, the UnreadableImageWarnings and how
#: much the process's peak memory grew while reading
READ_ALL = """
import json, resource, sys, warnings
from fststyle.training.data import ImageFolderImages, UnreadableImageWarning
dataset = ImageFolderImages(sys.argv[1], image_size=16)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    read = [dataset.paths[i].name for i in range(len(dataset)) if dataset[i] is not None]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
warned = [str(w.message) for w in caught if issubclass(w.category, UnreadableImageWarning)]
print(json.dumps({"read": read, "warned": warned, "grown_mb": grown / 1024}))
"""


def test_decompression_bombs_and_damaged_pngs_are_skipped_without_decoding(tmp_path, tiny_jpegs):
    """Headers declaring more than max_pixels (PNG 40000x40000 with a few bytes of data; JPEG and WebP just
    over the limit, which Pillow's own bomb check used to wave through to torchvision) and a PNG with one
    damaged byte (torchvision's PNG decoder crashes the process on it) are skipped with a warning naming
    them, without memory growth. In a subprocess, so a crash or a multi-GB allocation fails only this test."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a_photo.jpg").write_bytes(tiny_jpegs[0].read_bytes())
    (folder / "bomb.png").write_bytes(png_declaring(40000, 40000))
    (folder / "bomb.jpg").write_bytes(jpeg_declaring(13500, 13500))  # 182M pixels > 178,956,970: 547 MB decoded
    (folder / "bomb.webp").write_bytes(webp_declaring(16383, 16383))  # WebP's largest size, 268M pixels
    damaged = io.BytesIO()
    Image.open(tiny_jpegs[1]).save(damaged, "PNG")
    damaged = bytearray(damaged.getvalue())
    damaged[damaged.index(b"IDAT") + 100] ^= 0xFF
    (folder / "damaged.png").write_bytes(bytes(damaged))
    done = subprocess.run([sys.executable, "-c", READ_ALL, str(folder)], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["read"] == ["a_photo.jpg"]
    warned = {name: [w for w in report["warned"] if f"{name}:" in w] for name in
              ("bomb.png", "bomb.jpg", "bomb.webp", "damaged.png")}
    assert all(len(messages) == 1 for messages in warned.values()), report["warned"]
    assert all("max_pixels" in warned[name][0] for name in ("bomb.png", "bomb.jpg", "bomb.webp")), warned
    assert "40000x40000" in warned["bomb.png"][0]
    assert report["grown_mb"] < 100, report


def test_preview_images_centre_crop(bundled_data):
    paths = list_images(bundled_data / "preview")
    assert len(paths) == 4
    previews = PreviewImages(paths, size=64)
    assert len(previews) == 4 and previews.paths == paths
    assert all(previews[i].shape == (3, 64, 64) for i in range(4))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_datamodule_loaders(bundled_data, num_workers):
    module = StyleDataModule(
        bundled_data / "coco_sample",
        image_size=64,
        batch_size=4,
        num_workers=num_workers,
        preview=list_images(bundled_data / "preview")[:3],
        preview_size=48,
        max_images=10,
    )
    assert module.hparams.batch_size == 4
    train = module.train_dataloader()
    assert len(train) == 2  # 10 images, batches of 4, last partial batch dropped
    assert train.persistent_workers == (num_workers > 0)
    assert train.pin_memory == torch.cuda.is_available()
    batches = list(train)
    assert len(batches) == 2
    for batch, skipped in batches:
        assert batch.shape == (4, 3, 64, 64) and skipped == 0
    (preview,) = list(module.val_dataloader())
    assert isinstance(preview, torch.Tensor) and preview.shape == (3, 3, 48, 48)


def test_datamodule_folder_kind_without_previews(tmp_path, tiny_jpegs):
    module = StyleDataModule(tmp_path / "jpegs", kind="folder", image_size=16, batch_size=3, num_workers=0)
    (batch, skipped), = list(module.train_dataloader())
    assert batch.shape == (3, 3, 16, 16) and skipped == 0
    assert module.val_dataloader() == []
    with pytest.raises(ValueError, match="kind"):
        StyleDataModule(tmp_path, kind="lmdb")


def test_decode_once_cache(tmp_path, tiny_jpegs):
    cache = tmp_path / "cache"
    dataset = ImageFolderImages(tmp_path / "jpegs", image_size=40, cache_dir=cache)
    first = [dataset[i] for i in range(3)]
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 3
    assert sorted(tuple(np.load(e).shape) for e in entries) == [(3, 40, 40), (3, 40, 53), (3, 72, 40)]
    source = tiny_jpegs[2]
    stat = source.stat()
    source.write_bytes(b"x" * stat.st_size)  # garbage, but same size and mtime: still served from the cache
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dataset[2].shape == (3, 40, 40)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file gets a new key
    with pytest.warns(UnreadableImageWarning, match="photo_2.jpg"):
        assert dataset[2] is None
    entries[0].write_bytes(b"damaged cache entry")  # unreadable cache entries are rebuilt
    assert all(dataset[i].shape == first[i].shape for i in range(2))


def test_cache_write_failure_does_not_drop_images(tmp_path, tiny_jpegs):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    dataset = ImageFolderImages(tmp_path / "jpegs", image_size=16, cache_dir=blocker)
    with pytest.warns(UserWarning, match="decode cache") as caught:
        crops = [dataset[i] for i in range(3)]
    assert all(crop.shape == (3, 16, 16) for crop in crops)
    assert len([w for w in caught if "decode cache" in str(w.message)]) == 1
