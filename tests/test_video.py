"""Video in, video out (fststyle.io.video): every frame with its timestamp, the size, the rotation and the audio
kept; bad files named in one line; no partial output under a final name; folders with videos."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.bundled import bundled_path
from fststyle.errors import UserError
from fststyle.io.video import VideoReadError, stylize_video
from fststyle.nets.transformer import TransformerNet
from fststyle.stylize.stylizer import Stylizer

av = pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FRAMES = 96, 64, 24
MILLISECOND = Fraction(1, 1000)
BT709, LIMITED_RANGE = 1, 1  # FFmpeg's AVCOL_PRI/TRC/SPC_BT709 and AVCOL_RANGE_MPEG (libavutil/pixfmt.h)
PROGRESS = re.compile(r"frame/s|s/frame")  # tqdm's progress lines (frames/s and ETA) on stderr


def make_clip(path: Path, photo: Path, *, frames: int = FRAMES, variable_rate: bool = False, rotation: int = 0,
              audio: bool = True, video: bool = True, codec: str = "libx264", audio_codec: str = "aac",
              bt709: bool = False) -> Path:
    """A pan across ``photo`` (WIDTH x HEIGHT, ``frames`` frames at 24 fps, or alternating 20/40 ms frames),
    with ``rotation`` in its display matrix and a 440 Hz mono track; ``bt709``: converted and tagged as BT.709
    (primaries, transfer, matrix, limited range), else untagged."""
    strip = np.asarray(Image.open(photo).convert("RGB").resize((2 * WIDTH, HEIGHT)))
    tick = Fraction(1, 24) if path.suffix == ".avi" else MILLISECOND  # AVI counts frames
    output = av.open(str(path), "w")
    if video:
        stream = output.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = stream.codec_context.time_base = tick
        if bt709:
            context = stream.codec_context
            context.color_primaries = context.color_trc = context.colorspace = BT709
            context.color_range = LIMITED_RANGE
        if rotation:
            stream.set_display_rotation(rotation)
    rate = 48000 if audio_codec == "libopus" else 16000  # Opus encodes at 48 kHz (and 8/12/16/24)
    sound = output.add_stream(audio_codec, rate=rate, layout="mono") if audio else None
    pts = 0
    for index in range(frames if video else 0):
        left = index * WIDTH // FRAMES
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(strip[:, left:left + WIDTH]), format="rgb24")
        if bt709:
            frame = frame.reformat(format="yuv420p", dst_colorspace=BT709, dst_color_range=LIMITED_RANGE)
        frame.pts, frame.time_base = pts, tick
        pts += 1 if tick != MILLISECOND else (40 if index % 2 else 20) if variable_rate else 42
        for packet in stream.encode(frame):
            output.mux(packet)
    if video:
        for packet in stream.encode():
            output.mux(packet)
    if sound is not None:
        samples = max(frames, 1) * rate // 24
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)[None]
        for start in range(0, samples, 1024):  # PyAV re-chunks and converts to what the encoder takes
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = rate, start
            for packet in sound.encode(chunk):
                output.mux(packet)
        for packet in sound.encode():
            output.mux(packet)
    output.close()
    return path


def probe(path: Path) -> dict:
    """Frame count, frame times (s), size, rotation and audio packet count of a video file."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    with av.open(str(path)) as container:
        audio = [packet for packet in container.demux(audio=0) if packet.dts is not None] \
            if container.streams.audio else []
    return {"frames": len(frames), "times": [float(frame.pts * frame.time_base) for frame in frames],
            "size": (frames[0].width, frames[0].height), "rotation": frames[0].rotation, "audio_packets": len(audio),
            "pixels": np.stack([frame.to_ndarray(format="rgb24") for frame in frames]).astype(np.float32)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clips made once: a rotated VFR pan with audio, a truncated one, one without frames, audio only,
    a text file named .mp4."""
    folder = tmp_path_factory.mktemp("clips")
    photo = REPO / "data" / "preview" / "000000000030.jpg"
    pan = make_clip(folder / "pan.mp4", photo, variable_rate=True, rotation=90)
    whole = make_clip(folder / "whole.mkv", photo)
    (folder / "truncated.mkv").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    (folder / "truncated.mp4").write_bytes(pan.read_bytes()[:pan.stat().st_size // 2])
    make_clip(folder / "empty.mkv", photo, frames=0)
    make_clip(folder / "sound.mp4", photo, video=False)
    (folder / "notes.mp4").write_text("not a video\n")
    return {path.stem if path.suffix == ".mp4" else path.name: path for path in folder.iterdir()}


def tiny_stylizer(**options: object) -> Stylizer:
    torch.manual_seed(0)
    return Stylizer(TransformerNet(width=0.25, residual_blocks=1).eval(), **options)


def leftovers(folder: Path) -> list[str]:
    """Hidden files (atomic-write temporaries) left in ``folder``, recursively."""
    return [path.name for path in folder.rglob(".*") if path.name != ".fststyle-output"]


def test_every_frame_its_timestamp_the_size_rotation_and_audio_are_kept(clips: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    source = probe(clips["pan"])
    assert len(set(np.diff(source["times"]).round(3))) == 2  # the clip itself has a variable frame rate
    report = stylize_video(tiny_stylizer(), clips["pan"], tmp_path / "out.mp4", batch_size=5, progress=False)
    out = probe(tmp_path / "out.mp4")
    assert report.frames == out["frames"] == FRAMES and report.audio_streams == 1
    assert out["times"] == pytest.approx(source["times"], abs=1e-3)
    assert out["size"] == (WIDTH, HEIGHT) and out["rotation"] == source["rotation"] == 90
    assert out["audio_packets"] == source["audio_packets"] > 0
    assert np.abs(out["pixels"] - source["pixels"]).mean() > 10  # stylised, not copied
    assert leftovers(tmp_path) == []


def test_strength_and_the_smoother_apply_to_every_frame_in_order(clips: dict[str, Path], tmp_path: Path) -> None:
    seen = []

    def smoother(frame: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
        seen.append(frame.mean().item())
        assert torch.equal(frame, stylised)  # strength=0: the stylizer returns the frame itself
        return 1 - stylised

    stylize_video(tiny_stylizer(strength=0.0), clips["pan"], tmp_path / "out.mkv", batch_size=7, quality=0,
                  smoother=smoother, progress=False)
    source, out = probe(clips["pan"]), probe(tmp_path / "out.mkv")
    assert seen == pytest.approx(source["pixels"].mean(axis=(1, 2, 3)) / 255, abs=1e-4)
    assert np.abs(out["pixels"] - (255 - source["pixels"])).mean() < 3  # the smoother's frames, near lossless


def test_quality_is_the_encoders_crf(clips: dict[str, Path], tmp_path: Path) -> None:
    sizes = {}
    for crf in (0, 40):
        stylize_video(tiny_stylizer(), clips["pan"], tmp_path / f"crf{crf}.mp4", quality=crf, progress=False)
        sizes[crf] = (tmp_path / f"crf{crf}.mp4").stat().st_size
    assert sizes[0] > 3 * sizes[40]
    with pytest.raises(UserError, match="video_quality"):
        stylize_video(tiny_stylizer(), clips["pan"], tmp_path / "bad.mp4", quality=60, progress=False)


@pytest.mark.parametrize("name", ["truncated.mkv", "truncated", "empty.mkv", "sound", "notes"])
def test_a_bad_video_is_a_read_error_naming_it_and_leaves_no_output(clips: dict[str, Path], tmp_path: Path,
                                                                    name: str) -> None:
    with pytest.raises(VideoReadError, match=str(clips[name])) as caught:
        stylize_video(tiny_stylizer(), clips[name], tmp_path / "out.mp4", progress=False)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_the_error_says_how_to_install_it(clips: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(UserError, match=r'pip install "fststyle\[video\]"'):
        stylize_video(tiny_stylizer(), clips["pan"], tmp_path / "out.mp4", progress=False)


def run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_stylize_and_infer_py_write_a_video(clips: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(clips["pan"].read_bytes())
    result = run("-m", "fststyle", "stylize", "clip.mp4", "--model", "starry_night", "batch_size=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "clip_starry_night.mp4")["frames"] == FRAMES
    result = run(str(REPO / "infer.py"), f"model={REPO / 'checkpoints/starry_night.safetensors'}", "input=clip.mp4",
                 "output=out.mp4", "preserve_color=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4")["rotation"] == 90


def test_a_multi_style_model_chooses_or_blends_its_style_on_video(clips: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(clips["pan"].read_bytes())
    outputs = {}
    for style in ("udnie", "{udnie: 0.5, the_scream: 0.5}"):
        target = tmp_path / f"{len(outputs)}.mp4"
        result = run("-m", "fststyle", "stylize", "clip.mp4", "-m", "multistyle", f"style={style}", "-o", target.name,
                     "temporal=none", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert probe(target)["frames"] == FRAMES
        with av.open(str(target)) as container:
            outputs[style] = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    assert np.abs(outputs["udnie"] - outputs["{udnie: 0.5, the_scream: 0.5}"]).mean() > 5  # levels of 255
    result = run("-m", "fststyle", "stylize", "clip.mp4", "-m", "multistyle", "-o", "none.mp4", cwd=tmp_path)
    assert result.returncode == 2 and "starry_night, the_scream, udnie" in result.stderr
    assert not (tmp_path / "none.mp4").exists()


@pytest.mark.parametrize("name", ["truncated.mkv", "empty.mkv", "sound", "notes"])
def test_a_bad_video_is_one_line_exit_2(clips: dict[str, Path], tmp_path: Path, name: str) -> None:
    source = tmp_path / clips[name].name
    source.write_bytes(clips[name].read_bytes())
    result = run("-m", "fststyle", "stylize", source.name, "-m", "starry_night", "-o", "out.mp4", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and source.name in lines[0], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name]


def test_in_a_folder_the_other_files_still_run_and_the_status_is_1(clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "holiday"
    (folder / "day1").mkdir(parents=True)
    (folder / "day1" / "pan.mp4").write_bytes(clips["pan"].read_bytes())
    for name in ("truncated.mkv", "empty.mkv", "sound", "notes"):
        (folder / clips[name].name).write_bytes(clips[name].read_bytes())
    Image.open(REPO / "data" / "preview" / "000000000030.jpg").resize((48, 32)).save(folder / "photo.jpg")
    result = run("-m", "fststyle", "stylize", "holiday", "-m", "starry_night", "-o", "styled", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    log = result.stdout + result.stderr
    for name in ("truncated.mkv", "empty.mkv", "sound.mp4", "notes.mp4"):
        assert str(Path("holiday") / name) in log
    written = sorted(str(path.relative_to(tmp_path / "styled")) for path in (tmp_path / "styled").rglob("*"))
    assert written == [".fststyle-output", "day1", "day1/pan.mp4", "photo.jpg"]
    assert probe(tmp_path / "styled" / "day1" / "pan.mp4")["frames"] == FRAMES


def still_noisy_clip(path: Path, frames: int = 12) -> Path:
    """A still photo with fresh Gaussian sensor noise (sigma 3 levels) in every frame, near-lossless H.264."""
    photo = np.asarray(Image.open(bundled_path("data/preview/000000000030.jpg")).convert("RGB").resize((WIDTH, HEIGHT)))
    noise = np.random.default_rng(0)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=24, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        for _ in range(frames):
            pixels = np.clip(photo + noise.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def test_temporal_flow_is_the_default_and_calms_flicker_through_the_command(tmp_path: Path) -> None:
    still_noisy_clip(tmp_path / "still.mp4")
    change = {}
    for mode in ("flow", "none"):
        extra = () if mode == "flow" else ("temporal=none",)  # flow: the default
        result = run("-m", "fststyle", "stylize", "still.mp4", "-m", "starry_night", "-o", f"{mode}.mp4",
                     "video_quality=0", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        pixels = probe(tmp_path / f"{mode}.mp4")["pixels"]
        change[mode] = float(np.abs(np.diff(pixels, axis=0)).mean())
    assert change["flow"] < 0.6 * change["none"], change
    result = run("-m", "fststyle", "stylize", "still.mp4", "-m", "starry_night", "temporal=flwo", cwd=tmp_path)
    assert result.returncode == 2 and "choose one of none, flow" in result.stderr, result.stderr


def unknown_codec_clip(path: Path, photo: Path) -> Path:
    """A valid Matroska file whose video track's CodecID names no codec FFmpeg knows (the H.264 id patched)."""
    data = make_clip(path, photo, frames=4).read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_FSTSTYLE/NONE"))  # same length: the EBML sizes hold
    return path


def test_an_unknown_video_codec_is_one_line_naming_the_file(tmp_path: Path) -> None:
    source = unknown_codec_clip(tmp_path / "odd.mkv", REPO / "data" / "preview" / "000000000030.jpg")
    with av.open(str(source)) as container:  # the container opens; only the codec is unknown
        assert container.streams.video and container.streams.video[0].codec_context is None
    with pytest.raises(VideoReadError, match=rf"{re.escape(str(source))}: unknown video codec") as caught:
        stylize_video(tiny_stylizer(), source, tmp_path / "out.mp4", progress=False)
    assert "\n" not in str(caught.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["odd.mkv"]


def test_a_bad_video_fails_before_the_model_is_loaded(clips: dict[str, Path], tmp_path: Path) -> None:
    """The model file here is not a model: loading it would be its own error, so the video's line shows that
    the video was checked first."""
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    unknown_codec_clip(tmp_path / "odd.mkv", REPO / "data" / "preview" / "000000000030.jpg")
    (tmp_path / "sound.mp4").write_bytes(clips["sound"].read_bytes())
    (tmp_path / "notes.mp4").write_bytes(clips["notes"].read_bytes())
    for name, complaint in [("odd.mkv", "unknown video codec"), ("sound.mp4", "no video stream"),
                            ("notes.mp4", "not a readable video")]:
        for output in (("-o", "out.mp4"), ()):  # without -o the model names the output, yet the video goes first
            result = run("-m", "fststyle", "stylize", name, "-m", "broken.safetensors", *output, cwd=tmp_path)
            assert result.returncode == 2, result.stderr
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"error: {name}: ") and complaint in lines[0], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.safetensors", "notes.mp4", "odd.mkv",
                                                                "sound.mp4"]


def colour_tags(path: Path) -> tuple[int, int, int, int]:
    """The first frame's primaries, transfer, matrix and range, as FFmpeg's enum values."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    return frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range


def test_the_inputs_colour_description_is_kept(tmp_path: Path) -> None:
    bars = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200],
                     [120, 120, 120], [230, 230, 230]], dtype=np.uint8)  # saturated: the matrix matters
    Image.fromarray(np.repeat(np.repeat(bars[None], HEIGHT, 0), 2 * WIDTH // len(bars), 1)).save(tmp_path / "bars.png")
    source = make_clip(tmp_path / "hd.mp4", tmp_path / "bars.png", bt709=True, frames=6)
    assert colour_tags(source) == (BT709, BT709, BT709, LIMITED_RANGE)
    for suffix in (".mp4", ".mkv"):
        stylize_video(tiny_stylizer(strength=0.0), source, tmp_path / f"out{suffix}", quality=0, progress=False)
        assert colour_tags(tmp_path / f"out{suffix}") == (BT709, BT709, BT709, LIMITED_RANGE)
        # converted with the matrix it is tagged with, the unchanged frames come back: measured 1.0 levels
        # (4:2:0 rounding); BT.601's matrix under BT.709 tags gave 9.8
        assert np.abs(probe(tmp_path / f"out{suffix}")["pixels"] - probe(source)["pixels"]).mean() < 2
    untagged = make_clip(tmp_path / "plain.mp4", tmp_path / "bars.png", frames=6)
    stylize_video(tiny_stylizer(), untagged, tmp_path / "plain_out.mp4", progress=False)
    assert colour_tags(tmp_path / "plain_out.mp4") == colour_tags(untagged)  # nothing invented


def test_avi_and_webm_in_and_out(tmp_path: Path) -> None:
    photo = REPO / "data" / "preview" / "000000000030.jpg"
    make_clip(tmp_path / "clip.avi", photo)
    report = stylize_video(tiny_stylizer(), tmp_path / "clip.avi", tmp_path / "out.avi", progress=False)
    out = probe(tmp_path / "out.avi")
    assert report.frames == out["frames"] == FRAMES and out["audio_packets"] > 0
    # AVI keeps no display times (its H.264 B-frames decode with scrambled ones): frame n is at n / 24 s
    stylize_video(tiny_stylizer(), tmp_path / "clip.avi", tmp_path / "avi.mkv", progress=False)
    assert probe(tmp_path / "avi.mkv")["times"] == pytest.approx(np.arange(FRAMES) / 24, abs=1e-3)
    if not {"libvpx-vp9", "libopus"} <= av.codecs_available:
        pytest.skip("this PyAV's FFmpeg lacks libvpx-vp9 or libopus, so no WebM can be made here")
    make_clip(tmp_path / "clip.webm", photo, codec="libvpx-vp9", audio_codec="libopus")
    report = stylize_video(tiny_stylizer(), tmp_path / "clip.webm", tmp_path / "out.webm", progress=False)
    out = probe(tmp_path / "out.webm")
    assert report.frames == out["frames"] == FRAMES and report.audio_streams == 1 and out["audio_packets"] > 0
    with av.open(str(tmp_path / "out.webm")) as container:  # VP9 by default: WebM takes no H.264
        assert container.streams.video[0].codec_context.name == "vp9"
    with pytest.raises(UserError, match=r"video_codec=libvpx-vp9"):
        stylize_video(tiny_stylizer(), tmp_path / "clip.webm", tmp_path / "h264.webm", codec="libx264",
                      progress=False)
    with pytest.raises(UserError, match=rf"{re.escape(str(tmp_path / 'clip.avi'))} has aac .* -o aac.mkv"):
        stylize_video(tiny_stylizer(), tmp_path / "clip.avi", tmp_path / "aac.webm", progress=False)
    result = run("-m", "fststyle", "stylize", "clip.avi", "-m", "starry_night", "-o", "aac.webm", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "-o aac.mkv" in lines[0], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["avi.mkv", "clip.avi", "clip.webm", "out.avi",
                                                                "out.webm"]
