"""Colour and metadata survive: embedded ICC profiles are converted to sRGB on load (Pillow's decoder and the
training decoder alike), outputs carry an sRGB profile, EXIF minus orientation, and the JPEG quality asked for.

The Display P3 profile is built here byte by byte (ICC.1:2001-04, version 2 matrix/TRC RGB display profile), and
the expected sRGB pixels are computed independently with numpy: P3 -> linear -> XYZ (D65) -> linear sRGB -> sRGB.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from fststyle.cli import jobs
from fststyle.io.decode import load_image, open_image, read_photo, read_rgb_uint8
from fststyle.io.encode import save_image
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import StyleModel
from fststyle.stylize.runner import stylize_paths
from fststyle.stylize.stylizer import Stylizer

# CIE 1931 xy chromaticities: Display P3 (Apple; SMPTE EG 432-1 primaries with a D65 white) and sRGB (IEC 61966-2-1)
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
D65_XY = (0.3127, 0.3290)
D50_XYZ = np.array([0.9642, 1.0, 0.8249])  # the ICC profile connection space illuminant (ICC.1 §7.2.16)
#: Bradford cone response matrix (Lam 1985), the chromatic adaptation ICC profiles use
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
ORIENTATION = 0x0112


def xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz_matrix(primaries) -> np.ndarray:
    """Linear RGB -> XYZ (D65 white at Y = 1) for the given primaries."""
    columns = np.stack([xy_to_xyz(*xy) for xy in primaries], axis=1)
    scale = np.linalg.solve(columns, xy_to_xyz(*D65_XY))
    return columns * scale


def srgb_decode(values: np.ndarray) -> np.ndarray:
    """sRGB (and Display P3) transfer function, encoded [0,1] -> linear (IEC 61966-2-1)."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def srgb_encode(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.power(values, 1 / 2.4) - 0.055)


def expected_srgb(p3_pixels: np.ndarray) -> np.ndarray:
    """uint8 Display P3 pixels H,W,3 -> the uint8 sRGB pixels of the same colours (out-of-gamut colours clipped)."""
    linear = srgb_decode(p3_pixels.astype(np.float64) / 255)
    to_srgb = np.linalg.inv(rgb_to_xyz_matrix(SRGB_PRIMARIES)) @ rgb_to_xyz_matrix(P3_PRIMARIES)
    srgb_linear = np.clip(linear @ to_srgb.T, 0, 1)
    return np.round(srgb_encode(srgb_linear) * 255).astype(np.uint8)


def _s15fixed16(values) -> bytes:
    return b"".join(struct.pack(">i", round(float(v) * 65536)) for v in values)


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + bytes(4) + _s15fixed16(xyz)


def icc_v2_rgb_profile(primaries, description: str) -> bytes:
    """An ICC v2 matrix/TRC RGB display profile: the primaries with a D65 white (colorants Bradford-adapted to
    D50, as ICC.1 requires) and the sRGB tone curve as a 1024-entry curveType table."""
    d65 = xy_to_xyz(*D65_XY)
    cone_ratio = (BRADFORD @ D50_XYZ) / (BRADFORD @ d65)
    adapt = np.linalg.inv(BRADFORD) @ np.diag(cone_ratio) @ BRADFORD
    colorants = adapt @ rgb_to_xyz_matrix(primaries)
    curve = np.round(srgb_decode(np.linspace(0, 1, 1024)) * 65535).astype(">u2").tobytes()
    text = description.encode("ascii") + b"\0"
    tags = {
        b"desc": b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67),
        b"cprt": b"text" + bytes(4) + b"No copyright, test profile\0",
        b"wtpt": _xyz_tag(d65),
        b"rXYZ": _xyz_tag(colorants[:, 0]),
        b"gXYZ": _xyz_tag(colorants[:, 1]),
        b"bXYZ": _xyz_tag(colorants[:, 2]),
        b"rTRC": b"curv" + bytes(4) + struct.pack(">I", 1024) + curve,
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags.items():
        body += bytes(-len(body) % 4)
        table.append(struct.pack(">4sII", signature, offset + len(data), len(body)))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(24) + struct.pack(">I", 0)
              + _s15fixed16(D50_XYZ) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


P3_ICC = icc_v2_rgb_profile(P3_PRIMARIES, "Display P3 (test)")


def p3_test_pixels() -> np.ndarray:
    """16x24 uint8 pixels: a colour gradient plus saturated P3 primaries (outside sRGB) and greys."""
    y, x = np.mgrid[0:16, 0:24]
    pixels = np.stack([x * 255 // 23, y * 255 // 15, (x + y) * 255 // 38], axis=-1).astype(np.uint8)
    pixels[0, :6] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [255, 255, 255], [0, 0, 0]]
    return pixels


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "TestMake"  # Make
    exif[0x0110] = "TestModel"  # Model
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"  # DateTimeOriginal
    return exif


def test_hand_built_p3_profile_is_a_valid_icc_profile() -> None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(P3_ICC))
    assert profile.profile.xcolor_space.strip() == "RGB" and profile.profile.is_matrix_shaper
    assert ImageCms.getProfileDescription(profile).strip() == "Display P3 (test)"


def test_p3_png_is_converted_to_srgb(tmp_path: Path) -> None:
    pixels = p3_test_pixels()
    Image.fromarray(pixels).save(tmp_path / "p3.png", icc_profile=P3_ICC)
    rgb, _ = open_image(tmp_path / "p3.png")
    converted = np.asarray(rgb).astype(int)
    expected = expected_srgb(pixels).astype(int)
    assert np.abs(converted - expected).max() <= 2  # 8-bit LittleCMS pipeline vs float64 numpy
    assert np.abs(converted - pixels.astype(int)).max() > 40  # the conversion really changed the colours
    assert tuple(converted[0, 0]) == tuple(expected[0, 0]) and expected[0, 0, 1] == 0  # P3 red clips in sRGB


def test_p3_jpeg_is_converted_by_open_image_and_by_the_training_decoder(tmp_path: Path) -> None:
    Image.fromarray(p3_test_pixels()).save(tmp_path / "p3.jpg", quality=95, icc_profile=P3_ICC)
    decoded_p3 = np.asarray(Image.open(tmp_path / "p3.jpg").convert("RGB"))  # the raw (P3) JPEG pixels
    expected = expected_srgb(decoded_p3).astype(int)
    rgb, _ = open_image(tmp_path / "p3.jpg")
    assert np.abs(np.asarray(rgb).astype(int) - expected).max() <= 2
    training = read_rgb_uint8(tmp_path / "p3.jpg").permute(1, 2, 0).numpy()
    assert np.array_equal(training, np.asarray(rgb))


@pytest.mark.parametrize("profile", ["pillow-srgb", "v2-srgb", "none"])
def test_srgb_tagged_and_untagged_photos_are_unchanged(tmp_path: Path, profile: str) -> None:
    pixels = p3_test_pixels()
    icc = {"pillow-srgb": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
           "v2-srgb": icc_v2_rgb_profile(SRGB_PRIMARIES, "sRGB (test)"), "none": None}[profile]
    Image.fromarray(pixels).save(tmp_path / "photo.png", **({"icc_profile": icc} if icc else {}))
    rgb, _ = open_image(tmp_path / "photo.png")
    assert np.array_equal(np.asarray(rgb), pixels)
    assert torch.equal(read_rgb_uint8(tmp_path / "photo.png"), torch.from_numpy(pixels).permute(2, 0, 1))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_outputs_carry_srgb_profile_and_exif_without_orientation(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "photo.jpg"
    Image.fromarray(p3_test_pixels()).save(source, exif=exif_with_orientation(6), icc_profile=P3_ICC)
    photo = read_photo(source)
    assert photo.rgb.size == (16, 24)  # orientation 6 applied: rotated to portrait
    written = save_image(torch.rand(1, 3, 24, 16), tmp_path / f"out{suffix}", exif=photo.exif)
    with Image.open(written) as output:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(output.info["icc_profile"]))
        exif = output.getexif()
        taken = exif.get_ifd(0x8769)[0x9003]  # Exif sub-IFD: read while the file is open
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    assert ORIENTATION not in exif
    assert exif[0x010F] == "TestMake" and exif[0x0110] == "TestModel"
    assert taken == "2024:05:01 12:00:00"


def test_stylize_file_writes_srgb_pixels_and_keeps_exif(tmp_path: Path) -> None:
    """strength=0 returns the photo itself, so the output pixels are the photo's sRGB rendering."""
    torch.manual_seed(0)
    stylizer = Stylizer(TransformerNet(width=0.25, residual_blocks=1), strength=0.0)
    pixels = p3_test_pixels()
    source = tmp_path / "p3.png"
    Image.fromarray(pixels).save(source, icc_profile=P3_ICC, exif=exif_with_orientation(1))
    stylize_paths([source], tmp_path / "out.png", stylizer)
    with Image.open(tmp_path / "out.png") as output:
        written = np.asarray(output.convert("RGB")).astype(int)
        assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(output.info["icc_profile"])))
        exif = output.getexif()
    assert np.abs(written - expected_srgb(pixels).astype(int)).max() <= 2
    assert exif[0x0110] == "TestModel" and ORIENTATION not in exif
    assert torch.equal(load_image(tmp_path / "out.png"), torch.from_numpy(written).permute(2, 0, 1)[None] / 255.0)


def test_jpeg_quality_setting_reaches_the_written_jpeg(compose, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = StyleModel(TransformerNet(width=0.25, residual_blocks=1), {"style": {"name": "t"}}).save(
        tmp_path / "m.safetensors")
    Image.fromarray(p3_test_pixels()).save(tmp_path / "photo.png")
    cfg = compose("stylize", f"model={model}", f"input={tmp_path / 'photo.png'}", f"output={tmp_path / 'out.jpg'}",
                  "jpeg_quality=40")
    assert jobs.stylize(cfg) == 0
    Image.new("RGB", (8, 8)).save(tmp_path / "reference.jpg", quality=40)
    with Image.open(tmp_path / "out.jpg") as written, Image.open(tmp_path / "reference.jpg") as reference:
        assert written.quantization == reference.quantization
