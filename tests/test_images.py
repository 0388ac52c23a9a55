"""Image decoding, saving and grids, on real files written by Pillow."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.errors import UserError
from fststyle.io.convert import longer_side_size, tensor_to_pil
from fststyle.io.decode import ImageReadError, load_image, open_image, read_photo
from fststyle.io.encode import encode_image, save_image
from fststyle.io.files import atomic_write, atomic_write_json
from fststyle.io.grids import labelled_grid
from fststyle.io.listing import list_images


def two_colour(width=40, height=20) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_grey_and_palette_become_rgb(tmp_path):
    grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    grey.save(tmp_path / "grey.png")
    rgb, alpha = open_image(tmp_path / "grey.png")
    assert rgb.mode == "RGB" and alpha is None
    assert np.array_equal(np.asarray(rgb)[..., 1], np.asarray(grey))

    palette = two_colour().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.save(tmp_path / "palette.png")
    rgb, alpha = open_image(tmp_path / "palette.png")
    assert rgb.mode == "RGB" and alpha is None
    assert np.array_equal(np.asarray(rgb), np.asarray(two_colour()))


def test_palette_with_transparency_returns_alpha(tmp_path):
    palette = two_colour().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    red_index = palette.getpixel((0, 0))
    palette.save(tmp_path / "transparent.png", transparency=red_index)
    _, alpha = open_image(tmp_path / "transparent.png")
    assert alpha is not None and alpha.getpixel((0, 0)) == 0 and alpha.getpixel((39, 0)) == 255


def test_cmyk_jpeg(tmp_path):
    two_colour().convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    rgb, _ = open_image(tmp_path / "cmyk.jpg")
    pixels = np.asarray(rgb).astype(int)
    assert np.abs(pixels[:, :15] - (255, 0, 0)).max() < 12
    assert np.abs(pixels[:, 25:] - (0, 0, 255)).max() < 12


def test_rgba_png_returns_alpha(tmp_path):
    rgba = two_colour().convert("RGBA")
    mask = np.tile(np.arange(0, 240, 6, dtype=np.uint8), (20, 1))
    rgba.putalpha(Image.fromarray(mask))
    rgba.save(tmp_path / "rgba.png")
    rgb, alpha = open_image(tmp_path / "rgba.png")
    assert rgb.mode == "RGB" and alpha.mode == "L"
    assert np.array_equal(np.asarray(alpha), mask)
    assert np.array_equal(np.asarray(rgb), np.asarray(two_colour()))


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp8 = np.tile(np.arange(256, dtype=np.uint16), (4, 1))
    Image.fromarray(ramp8 * 257).save(tmp_path / "ramp16.png")  # 0..65535
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")
    rgb, _ = open_image(tmp_path / "ramp16.png")
    assert np.array_equal(np.asarray(rgb)[..., 0], ramp8.astype(np.uint8))


def test_float_tiff_in_unit_range(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 11, dtype=np.float32), (3, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tif")
    rgb, _ = open_image(tmp_path / "float.tif")
    expected = np.round(ramp[0].astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(rgb)[0, :, 0], expected)  # 1.0 -> 255, 0.5 -> 128: scaled, not clipped


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    two_colour(40, 20).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    rgb, _ = open_image(tmp_path / "rotated.jpg")
    assert rgb.size == (20, 40)
    pixels = np.asarray(rgb).astype(int)
    assert np.abs(pixels[:15] - (255, 0, 0)).max() < 40  # the stored left (red) half is now on top
    assert np.abs(pixels[25:] - (0, 0, 255)).max() < 40


def test_truncated_jpeg_and_text_file_name_the_file(tmp_path, tiny_jpegs):
    data = tiny_jpegs[2].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.jpg").write_text("this is not an image")
    for name in ("truncated.jpg", "notes.jpg"):
        with pytest.raises(ImageReadError, match=name) as caught:
            open_image(tmp_path / name)
        assert "Fix" in str(caught.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "nowhere.png")


def test_bomb_guard_names_the_override(tmp_path):
    two_colour().save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="max_pixels") as caught:
        load_image(tmp_path / "big.png", max_pixels=100)
    assert "big.png" in str(caught.value) and "40x20" in str(caught.value)


def test_max_pixels_above_pillows_own_limit_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 800 > 2 * 100 pixels
    two_colour().save(tmp_path / "ok.png")
    rgb, _ = open_image(tmp_path / "ok.png", max_pixels=1000)
    assert rgb.size == (40, 20)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_load_image_sizes(tiny_jpegs):
    assert load_image(tiny_jpegs[0]).shape == (1, 3, 48, 64)
    assert load_image(tiny_jpegs[0], 32).shape == (1, 3, 24, 32)  # longer side
    assert load_image(tiny_jpegs[1], 36).shape == (1, 3, 36, 20)
    assert load_image(tiny_jpegs[1], (10, 30)).shape == (1, 3, 10, 30)  # exact (H, W)
    loaded = load_image(tiny_jpegs[2], 50)
    assert loaded.dtype == torch.float32 and 0 <= loaded.min() and loaded.max() <= 1


def test_longer_side_size_keeps_the_aspect_and_at_least_one_pixel():
    assert longer_side_size(48, 64, 32) == (24, 32)
    assert longer_side_size(64, 48, 128) == (128, 96)  # upscales too
    assert longer_side_size(1000, 3, 10) == (10, 1)


def test_png_round_trip_is_exact(tmp_path):
    original = torch.randint(0, 256, (3, 17, 23)).float() / 255
    path = save_image(original.unsqueeze(0), tmp_path / "deep" / "dir" / "out.png")
    assert torch.equal(load_image(path)[0], original)


def test_save_with_alpha_per_format(tmp_path):
    image = torch.rand(3, 8, 12)
    alpha = torch.linspace(0, 1, 12).expand(1, 8, 12)
    save_image(image, tmp_path / "a.png", alpha=alpha)
    save_image(image, tmp_path / "a.jpg", alpha=alpha)
    assert Image.open(tmp_path / "a.png").mode == "RGBA"
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    _, read_alpha = open_image(tmp_path / "a.png")
    assert np.array_equal(np.asarray(read_alpha)[0], np.round(np.linspace(0, 255, 12)).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\.gif"):
        save_image(image, tmp_path / "a.gif")


def test_an_upload_decodes_as_its_file_does(tmp_path):
    """Bytes (a web upload) decode to the same pixels, alpha and EXIF as the file they came from; too many
    pixels and bad bytes get the same one-line errors, naming the upload."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "fststyle test camera"  # orientation "rotate 90 clockwise", the maker
    two_colour(40, 20).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    from_file, from_bytes = read_photo(tmp_path / "rotated.jpg"), read_photo((tmp_path / "rotated.jpg").read_bytes())
    assert from_bytes.rgb.size == (20, 40)
    assert np.array_equal(np.asarray(from_bytes.rgb), np.asarray(from_file.rgb))
    assert from_bytes.exif == from_file.exif and b"fststyle test camera" in from_bytes.exif
    assert torch.equal(load_image((tmp_path / "rotated.jpg").read_bytes(), 10), load_image(tmp_path / "rotated.jpg", 10))
    with pytest.raises(ImageReadError, match="uploaded image: image is 40x20 = 800 pixels.*max_pixels=800"):
        read_photo((tmp_path / "rotated.jpg").read_bytes(), max_pixels=100)
    with pytest.raises(ImageReadError, match="uploaded image: cannot read image"):
        read_photo(b"not an image")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_encoded_bytes_are_the_saved_file(tmp_path, suffix):
    """encode_image gives exactly the bytes save_image writes for the same image, alpha, quality and EXIF."""
    image, alpha = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0)), torch.rand(1, 12, 16)
    exif = Image.Exif()
    exif[0x010F] = "fststyle test camera"
    saved = save_image(image, tmp_path / f"out{suffix}", alpha=alpha, quality=80, exif=exif.tobytes())
    encoded = encode_image(image, suffix, alpha=alpha, quality=80, exif=exif.tobytes())
    assert encoded == saved.read_bytes()
    decoded = read_photo(encoded)
    assert decoded.rgb.size == (16, 12)
    assert (decoded.alpha is not None) == (suffix in (".png", ".webp", ".tif"))


def test_encode_image_refuses_a_format_it_cannot_write():
    with pytest.raises(UserError, match=r"unknown image suffix '\.gif'; use one of .*\(e\.g\. image\.png\)"):
        encode_image(torch.zeros(3, 4, 4), ".gif")


def test_tensor_to_pil_clamps_and_rounds():
    tensor = torch.tensor([-1.0, 0.5, 2.0, float("nan")]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert list(np.asarray(tensor_to_pil(tensor))[0, :, 0]) == [0, 128, 255, 0]
    with pytest.raises(ValueError, match="3,H,W"):
        tensor_to_pil(torch.zeros(2, 3, 4, 4))


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "model.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text('{"version": 2, "trunc')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temp file left behind


def test_list_images_recursive_sorted_case_insensitive(tmp_path, tiny_jpegs):
    (tmp_path / "jpegs" / "sub").mkdir()
    two_colour().save(tmp_path / "jpegs" / "sub" / "UPPER.PNG")
    (tmp_path / "jpegs" / "readme.txt").write_text("no")
    (tmp_path / "jpegs" / "._photo_0.jpg").write_bytes(b"macOS resource fork")
    found = list_images(tmp_path / "jpegs")
    assert [p.name for p in found] == ["photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "UPPER.PNG"]


def test_labelled_grid_size_and_layout():
    wide, square = torch.ones(3, 64, 128), torch.zeros(3, 64, 64)
    grid = labelled_grid([[wide, square], [square, wide]], cell_height=32, pad=4)
    # columns are as wide as their widest cell (64 each at height 32): 3 pads + 2 columns
    assert grid.size == (4 * 3 + 64 + 64, 4 * 3 + 32 * 2)
    assert grid.getpixel((4 + 16, 4 + 32 + 4 + 16)) == (0, 0, 0)  # square centred in column 0
    assert grid.getpixel((4 + 2, 4 + 32 + 4 + 16)) == (255, 255, 255)  # margin beside it is white
    labelled = labelled_grid(
        [[wide, square]], col_labels=["content", "stylised"], row_labels=["photo"], cell_height=32
    )
    assert labelled.width > 140 and labelled.height > 40
    with pytest.raises(ValueError, match="col_labels"):
        labelled_grid([[wide]], col_labels=["a", "b"])
