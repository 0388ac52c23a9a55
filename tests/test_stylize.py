"""Instant stylisation: any size and format in, same size out; tiling; colour/strength; safe loading; folders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fststyle.color import rgb_to_yiq
from fststyle.io.decode import ImageReadError, load_image, open_image
from fststyle.io.files import OverwriteError
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import ModelFileError, StyleModel
from fststyle.stylize.runner import stylize_paths
from fststyle.stylize.stylizer import Stylizer, blend_ramp, tile_starts

PHOTO = Path(__file__).resolve().parents[1] / "data" / "preview" / "000000000030.jpg"


def tiny_network(seed: int = 0) -> TransformerNet:
    """A small random-weight transformer (width 1/4, one residual block): the real architecture, fast."""
    torch.manual_seed(seed)
    return TransformerNet(width=0.25, residual_blocks=1).eval()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return StyleModel(tiny_network(), {"style": {"name": "tiny"}}).save(path)


@pytest.fixture(scope="module")
def stylizer(model_path: Path) -> Stylizer:
    return Stylizer.load(model_path, device="cpu")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 3, 5), (2, 3, 37, 61), (1, 3, 64, 48)])
def test_fast_inference_matches_plain_eager(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    network = TransformerNet().eval()  # full Johnson width and depth
    images = torch.rand(shape)
    with torch.inference_mode():
        expected = network(images)
        fast = network.fast_inference()(images.contiguous(memory_format=torch.channels_last))
        assert network.fast_inference(False)(images).equal(expected)  # switching back restores the plain path
    assert fast.shape == expected.shape
    # E[x^2] - E[x]^2 in fp32 loses a few bits where a tiny image leaves 2x2 px at the bottleneck
    # (5e-5 seen at 3x5); 1e-4 is still 1/40 of an 8-bit level.
    torch.testing.assert_close(fast, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 61), (8, 8)])
def test_tensor_in_same_shape_out(stylizer: Stylizer, model_path: Path, size: tuple[int, int]) -> None:
    images = torch.rand(2, 3, *size)
    out = stylizer(images)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, stylizer.network(images), atol=2e-5, rtol=0)
    plain = StyleModel.load(model_path).network  # the plain path, which export and training run
    torch.testing.assert_close(out, plain(images), atol=2e-5, rtol=0)


def test_tile_layout_covers_with_overlap() -> None:
    for length, tile, overlap in [(1000, 256, 64), (257, 256, 64), (4097, 512, 128)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    ramp = blend_ramp(100, 32, rise=True, fall=True)
    assert ramp.min() > 0 and ramp[32:68].eq(1).all() and torch.all(ramp[:32].diff() > 0)


def test_tiles_blend_seamlessly_given_whole_image_statistics() -> None:
    image = load_image(PHOTO, size=(240, 320))
    network = tiny_network()
    whole = Stylizer(network).stylize(image)
    # by default images up to 2048 px get statistics from the full-resolution image: what remains is the
    # blending of tiles cut within the receptive field, which the overlap must hide (measured: mean 0.03, max 2.5)
    tiled = Stylizer(network, tile=224, tile_overlap=96).stylize(image)
    difference = (tiled - whole).abs() * 255
    assert difference.mean() < 0.1 and difference.max() < 6


def test_shared_statistics_are_closer_to_untiled_than_per_tile_statistics() -> None:
    image = load_image(PHOTO, size=(240, 320))
    network = tiny_network()
    whole = Stylizer(network).stylize(image)
    shared = Stylizer(network, tile=224, tile_overlap=96, statistics_size=224).stylize(image)  # downscaled
    per_tile = Stylizer(network, tile=224, tile_overlap=96, shared_statistics=False).stylize(image)
    assert shared.shape == image.shape
    # measured: 3.7 vs 11.3 levels mean
    assert (shared - whole).abs().mean() < 0.5 * (per_tile - whole).abs().mean()
    with pytest.raises(ValueError, match="tile >= 216"):
        Stylizer(network, tile=112, tile_overlap=32)


def test_strength_zero_returns_the_input_and_half_blends(model_path: Path) -> None:
    images = torch.rand(1, 3, 20, 30)
    assert torch.equal(Stylizer.load(model_path, device="cpu", strength=0.0)(images), images)
    full = Stylizer.load(model_path, device="cpu")(images)
    half = Stylizer.load(model_path, device="cpu", strength=0.5)(images)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * images)
    with pytest.raises(ValueError, match="strength"):
        Stylizer.load(model_path, device="cpu", strength=1.5)


def test_preserve_color_keeps_the_photos_chroma(model_path: Path) -> None:
    photo = load_image(PHOTO, size=64)
    plain = Stylizer.load(model_path, device="cpu")(photo)
    kept = Stylizer.load(model_path, device="cpu", preserve_color=True)(photo)
    chroma_error = (rgb_to_yiq(kept)[:, 1:] - rgb_to_yiq(photo)[:, 1:]).abs().mean()
    assert chroma_error < 0.01
    assert chroma_error < 0.2 * (rgb_to_yiq(plain)[:, 1:] - rgb_to_yiq(photo)[:, 1:]).abs().mean()
    torch.testing.assert_close(rgb_to_yiq(kept)[:, :1], rgb_to_yiq(plain)[:, :1], atol=0.02, rtol=0)


def test_pil_in_pil_out_with_alpha(stylizer: Stylizer) -> None:
    rgba = Image.new("RGBA", (13, 7), (200, 30, 30, 255))
    rgba.putalpha(Image.linear_gradient("L").resize((13, 7)))
    out = stylizer(rgba)
    assert out.size == (13, 7) and out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1).astype(np.uint8)


def _write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Every awkward input kind; returns file name -> expected output (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_gradient(33, 21))
    rgb.convert("L").save(folder / "grey.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    rgba.save(folder / "alpha.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(folder / "deep16.png")
    rgb.save(folder / "photo.webp")
    rgb.save(folder / "photo.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF Orientation 6: rotate 90 degrees clockwise to display
    rgb.save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(_gradient(1, 1)).save(folder / "one_pixel.png")
    expected = {name: (33, 21) for name in ["grey.png", "alpha.png", "cmyk.jpg", "deep16.png", "photo.webp",
                                             "photo.tif"]}
    return expected | {"rotated.jpg": (21, 33), "one_pixel.png": (1, 1)}


def test_every_input_kind_keeps_its_oriented_size(stylizer: Stylizer, tmp_path: Path) -> None:
    expected = _write_inputs(tmp_path / "in")
    assert open_image(tmp_path / "in" / "deep16.png")[0].getextrema()[0][1] > 200  # 16-bit scaled, not clipped
    for name, size in expected.items():
        target = stylize_paths([tmp_path / "in" / name], tmp_path / "out" / name, stylizer).written[0]
        with Image.open(target) as written:
            assert written.size == size, name
            if name == "alpha.png":
                assert written.mode == "RGBA"
                source_alpha = Image.open(tmp_path / "in" / name).getchannel("A")
                assert written.getchannel("A").tobytes() == source_alpha.tobytes()


def test_decompression_bomb_names_the_override(stylizer: Stylizer, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    with pytest.raises(ImageReadError, match="max_pixels="):
        stylize_paths([path], tmp_path / "out.png", stylizer, max_pixels=10_000)


def test_folder_keeps_subfolders_skips_a_broken_file_and_writes_a_grid(stylizer: Stylizer, tmp_path: Path) -> None:
    source = tmp_path / "photos"
    (source / "trip" / "day1").mkdir(parents=True)
    for index, relative in enumerate(["a.jpg", "trip/b.jpg", "trip/day1/c.png", "trip/day1/d.png"]):
        Image.fromarray(_gradient(40 + 8 * (index % 2), 30)).save(source / relative)
    (source / "trip" / "broken.jpg").write_bytes(PHOTO.read_bytes()[:300])  # truncated JPEG
    report = stylize_paths([source], tmp_path / "out", stylizer, batch_size=2, grid=tmp_path / "grid.png")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.written) == [
        "a.jpg", "trip/b.jpg", "trip/day1/c.png", "trip/day1/d.png"]
    assert [path.name for path, _ in report.failed] == ["broken.jpg"]
    assert "broken.jpg" in report.summary() and "4 images" in report.summary()
    assert not (tmp_path / "out" / "trip" / "broken.jpg").exists()
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.height > 4 * 256  # one row per processed photo


def test_batched_folder_matches_one_by_one(stylizer: Stylizer, tmp_path: Path) -> None:
    source = tmp_path / "same_size"
    source.mkdir()
    for index in range(3):
        Image.fromarray(np.roll(_gradient(24, 20), 5 * index, axis=1)).save(source / f"{index}.png")
    stylize_paths([source], tmp_path / "batched", stylizer, batch_size=3)
    stylize_paths([source], tmp_path / "single", stylizer, batch_size=1)
    for index in range(3):
        batched = np.asarray(Image.open(tmp_path / "batched" / f"{index}.png"), dtype=int)
        single = np.asarray(Image.open(tmp_path / "single" / f"{index}.png"), dtype=int)
        assert np.abs(batched - single).max() <= 1


def _photo_folder(root: Path, count: int = 3) -> Path:
    root.mkdir()
    for index in range(count):
        Image.fromarray(np.roll(_gradient(24, 20), 5 * index, axis=1)).save(root / f"{index}.png")
    return root


def test_file_and_folder_written_onto_themselves_are_refused(stylizer: Stylizer, tmp_path: Path) -> None:
    photos = _photo_folder(tmp_path / "photos")
    before = {path: path.read_bytes() for path in photos.iterdir()}
    (tmp_path / "alias").symlink_to(photos)
    with pytest.raises(OverwriteError):
        stylize_paths([photos / "0.png"], photos / "." / "0.png", stylizer)
    for output in (photos, tmp_path / "alias"):
        with pytest.raises(OverwriteError, match="input folder"):
            stylize_paths([photos], output, stylizer)
    assert {path: path.read_bytes() for path in photos.iterdir()} == before  # nothing written, not even a marker


def test_output_folders_inside_the_input_folder_are_not_read_as_inputs(stylizer: Stylizer, tmp_path: Path) -> None:
    photos = _photo_folder(tmp_path / "photos")
    first = stylize_paths([photos], photos / "starry", stylizer)
    second = stylize_paths([photos], photos / "scream", stylizer)  # a different output folder, same input
    third = stylize_paths([photos], photos / "starry", stylizer)  # and the first one again
    names = ["0.png", "1.png", "2.png"]
    for report, folder in ((first, "starry"), (second, "scream"), (third, "starry")):
        assert sorted(path.name for path in report.written) == names and not report.failed
        assert sorted(path.name for path in (photos / folder).rglob("*.png")) == names
    assert not (photos / "scream" / "starry").exists()


def test_skip_existing_resumes_an_interrupted_folder(stylizer: Stylizer, tmp_path: Path) -> None:
    photos = _photo_folder(tmp_path / "photos", count=4)
    stylize_paths([photos], tmp_path / "out", stylizer)
    (tmp_path / "out" / "2.png").unlink()  # as if the run had stopped before the third image
    (tmp_path / "out" / "3.png").unlink()
    (photos / "4.png").write_bytes(b"not an image")
    kept = {name: (tmp_path / "out" / name).stat() for name in ("0.png", "1.png")}
    report = stylize_paths([photos], tmp_path / "out", stylizer, skip_existing=True)
    for name, before in kept.items():
        after = (tmp_path / "out" / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert sorted(path.name for path in report.written) == ["2.png", "3.png"]
    assert sorted(path.name for path in report.skipped) == ["0.png", "1.png"]
    assert [path.name for path, _ in report.failed] == ["4.png"]
    assert "2 written, 2 skipped (already there), 1 failed" in report.summary()


class _RunsCode:
    """Unpickling this calls Path.touch: proof that the loader executed code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _RunsCode(marker)}, handle)
    torch.save({"state_dict": {"payload": _RunsCode(marker)}}, tmp_path / "evil_zip.ckpt")
    for candidate in (path, tmp_path / "evil_zip.ckpt"):
        with pytest.raises(ModelFileError, match="never run"):
            Stylizer.load(candidate, device="cpu")
    assert not marker.exists()


def test_truncated_and_wrong_architecture_models_are_refused(model_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_path.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="truncated.safetensors"):
        Stylizer.load(truncated, device="cpu")
    wrong = tmp_path / "wrong.safetensors"
    StyleModel(tiny_network(), {}).save(wrong)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(wrong), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(wrong))
    tensors["encoder.0.1.weight"] = torch.zeros(5, 3, 9, 9)
    save_file(tensors, str(wrong), metadata=metadata)
    with pytest.raises(ModelFileError, match="do not match"):
        Stylizer.load(wrong, device="cpu")


def test_unavailable_cuda_and_bad_precision_are_clear_errors(model_path: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            Stylizer.load(model_path, device="cuda")
    with pytest.raises(ValueError, match="precision"):
        Stylizer.load(model_path, device="cpu", precision="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_half_precision_close_to_fp32(model_path: Path, precision: str) -> None:
    images = torch.rand(2, 3, 67, 45)
    reference = Stylizer.load(model_path, device="cpu")(images)
    out = Stylizer.load(model_path, device="cuda", precision=precision)(images.cuda())
    assert (out.cpu() - reference).abs().mean() < 0.02


@pytest.mark.slow
def test_compiled_matches_eager(model_path: Path) -> None:
    images = F.interpolate(load_image(PHOTO), size=(40, 56))
    eager = Stylizer.load(model_path, device="cpu")(images)
    compiled = Stylizer.load(model_path, device="cpu", compile=True)(images)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
