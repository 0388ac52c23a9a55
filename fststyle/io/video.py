"""Video in, video out: decode with PyAV, stylise in batches, encode H.264 (VP9 into .webm), copy the audio.

    report = stylize_video(Stylizer.load("starry_night"), "clip.mp4", "clip_starry.mp4")

Streams: at most ``batch_size`` decoded frames are held, so memory does not grow with the clip's length
(docs/stylize.md §Video has the measurement). Every frame keeps its timestamp (variable frame rate too),
the output has the input's size, display rotation and colour description, and audio packets are remuxed
without re-encoding.
The output is written beside the target under a temporary name and renamed only when complete.
PyAV is the optional extra ``fststyle[video]``; it is imported only when a video is stylised.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fststyle.errors import UserError, check_integer_setting
from fststyle.io.files import atomic_write, check_writable, refuse_overwriting_inputs

#: containers fststyle reads and writes videos in; each but .webm takes H.264 video and the usual audio codecs
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
#: x264 constant rate factor: 0 lossless .. 51 worst; 18 is "visually lossless or nearly so"
#: (FFmpeg's H.264 encoding guide, trac.ffmpeg.org/wiki/Encode/H.264; x264's own default is 23)
DEFAULT_VIDEO_QUALITY = 18
DEFAULT_VIDEO_CODEC = "libx264"
#: what WebM holds (webmproject.org/docs/container): VP8, VP9 or AV1 video and Vorbis or Opus audio
WEBM_VIDEO_CODECS = ("vp8", "vp9", "av1")
WEBM_AUDIO_CODECS = ("vorbis", "opus")
DEFAULT_WEBM_CODEC = "libvpx-vp9"
#: FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic "unspecified" and AVColorRange's
#: (libavutil/pixfmt.h); YUV matrices swscale converts with (the AVColorSpace values it maps: BT.709, FCC,
#: BT.470BG, SMPTE 170M, SMPTE 240M, BT.2020 non-constant)
UNSPECIFIED_COLOUR, UNSPECIFIED_RANGE = 2, 0
CONVERTIBLE_MATRICES = (1, 4, 5, 6, 7, 9)

#: stylised frame (3,H,W in [0,1]) of the original frame (3,H,W) -> the frame to encode (3,H,W)
Smoother = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class VideoReadError(UserError):
    """A video input cannot be stylised (truncated, no frames, no video stream, unknown codec)."""


def _import_av() -> Any:
    """The ``av`` module, or a UserError that says how to install it."""
    try:
        import av
    except ImportError:
        raise UserError('video needs PyAV: pip install "fststyle[video]"') from None
    return av


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path``'s suffix is one of VIDEO_SUFFIXES (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_video_suffix(path: str | os.PathLike) -> Path:
    """Return ``path`` if its suffix is a video container fststyle writes, else raise UserError."""
    path = Path(path)
    if not is_video(path):
        raise UserError(f"output {path}: a video needs a video output, one of {', '.join(VIDEO_SUFFIXES)} "
                        f"(e.g. output={path.with_suffix('.mp4')})")
    return path


def check_video_job(source: str | os.PathLike, target: str | os.PathLike, codec: str | None = None) -> str:
    """Raise UserError unless ``source`` can be stylised into ``target`` with the encoder ``codec`` (None: the
    container's default): a video suffix, a writable folder, not the input itself, a readable video whose
    audio the container takes. Returns the encoder to use."""
    target = check_video_suffix(target)
    check_writable(target)
    refuse_overwriting_inputs([source], [target])
    return check_video_output(source, target, codec, check_video_input(source))


def _check_video_streams(container: Any, source: Path) -> None:
    """Raise VideoReadError naming ``source`` unless ``container`` has a video stream FFmpeg can decode."""
    if not container.streams.video:
        raise VideoReadError(f"{source}: no video stream (audio only?); pass a video file")
    if container.streams.video[0].codec_context is None:
        raise VideoReadError(f"{source}: unknown video codec; convert it, e.g. ffmpeg -i {source.name} "
                             f"-c:v libx264 {source.stem}_h264.mp4")


def _open_video(av: Any, source: Path) -> Any:
    """``source`` opened for reading, or a VideoReadError naming it."""
    try:
        return av.open(str(source))
    except av.FFmpegError as error:
        raise VideoReadError(f"{source}: not a readable video, or truncated ({error.strerror or error}); "
                             f"pass a complete {'/'.join(VIDEO_SUFFIXES)} file") from None


def check_video_input(source: str | os.PathLike) -> list[str]:
    """Open ``source`` (headers only, no frame decoded) and return its audio codecs' names; raise VideoReadError
    naming it unless it is a container with a video stream FFmpeg can decode."""
    source = Path(source)
    with _open_video(_import_av(), source) as container:
        _check_video_streams(container, source)
        return [stream.codec_context.name for stream in container.streams.audio if stream.codec_context]


def check_video_output(source: Path, target: Path, codec: str | None, audio_codecs: list[str]) -> str:
    """The encoder for ``target`` (``codec``, or the container's default for None); raise UserError unless the
    container takes its video and the audio of ``source`` (``audio_codecs``), which is copied unchanged."""
    webm = target.suffix.lower() == ".webm"
    codec = check_video_codec(codec or (DEFAULT_WEBM_CODEC if webm else DEFAULT_VIDEO_CODEC))
    if not webm:
        return codec
    if _import_av().codec.Codec(codec, "w").canonical_name not in WEBM_VIDEO_CODECS:
        raise UserError(f"output {target}: WebM takes VP8, VP9 or AV1 video, not video_codec={codec}; "
                        f"use video_codec={DEFAULT_WEBM_CODEC}, or -o {target.with_suffix('.mp4').name}")
    unfit = [name for name in audio_codecs if name not in WEBM_AUDIO_CODECS]
    if unfit:
        raise UserError(f"output {target}: WebM takes Opus or Vorbis audio, and {source} has {', '.join(unfit)} "
                        f"(copied unchanged); write -o {target.with_suffix('.mkv').name} instead")
    return codec


def check_video_codec(codec: str | None) -> str | None:
    """Return ``codec`` if PyAV's FFmpeg has an encoder of that name (None: the container's default, kept),
    else raise UserError."""
    av = _import_av()
    try:
        if codec is not None:
            av.codec.Codec(codec, "w")
    except (ValueError, av.FFmpegError):
        raise UserError(f"video_codec={codec!r} is not a video encoder this FFmpeg has; "
                        f"e.g. video_codec={DEFAULT_VIDEO_CODEC}") from None
    return codec


def check_video_quality(quality: int) -> int:
    """Return ``quality`` if it is an x264 CRF (an integer 0..51), else raise UserError."""
    return check_integer_setting("video_quality", quality, 0, 51, "x264's CRF: 0 lossless, 51 worst",
                                 DEFAULT_VIDEO_QUALITY)


def stylised_frames(stylizer: Any, originals: torch.Tensor, smoother: Smoother | None) -> list[torch.Tensor]:
    """Consecutive frames N,3,H,W in [0,1] -> their stylised frames (3,H,W each, on the CPU), each smoothed in
    order by ``smoother`` when there is one."""
    stylised = stylizer.stylize(originals).cpu()
    return [image if smoother is None else smoother(original, image)
            for original, image in zip(originals.cpu(), stylised, strict=True)]


@dataclass
class VideoReport:
    """What ``stylize_video`` wrote: the output, its frame count, the audio streams copied, wall seconds."""

    target: Path
    frames: int
    audio_streams: int
    seconds: float

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (f"wrote {self.target}: {self.frames} frames in {self.seconds:.1f} s ({rate:.1f} frames/s), "
                f"{self.audio_streams} audio stream(s) copied")


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    """The frame's display matrix side data (9 int32, FFmpeg's AV_PKT_DATA_DISPLAYMATRIX layout), or None."""
    for item in frame.side_data:
        if item.type.name == "DISPLAYMATRIX":
            return struct.unpack("<9i", bytes(item))
    return None


def _declared_seconds(stream: Any) -> float | None:
    """The video stream's duration in seconds as the container declares it (Matroska: the DURATION tag)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # "HH:MM:SS.fffffffff", written by FFmpeg's Matroska muxer
    if tag:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _expected_frames(stream: Any) -> int | None:
    """The frame count the container declares for ``stream``, or its duration times its average rate
    (None where it says neither)."""
    if stream.frames:
        return int(stream.frames)
    seconds = _declared_seconds(stream)
    if seconds is not None and stream.average_rate:
        return round(seconds * stream.average_rate)
    return None


def stylize_video(stylizer: Any, source: str | os.PathLike, target: str | os.PathLike, *, batch_size: int = 4,
                  quality: int = DEFAULT_VIDEO_QUALITY, codec: str | None = None,
                  smoother: Smoother | None = None, progress: bool = True) -> VideoReport:
    """Stylise every frame of the video ``source`` with ``stylizer`` (a fststyle.stylize.stylizer.Stylizer: strength,
    preserve_color and tiling apply) into ``target``, ``batch_size`` frames at a time.

    ``codec``: the FFmpeg encoder, None for libx264 (libvpx-vp9 into .webm). ``quality``: the encoder's CRF
    (lower is better, larger). ``smoother(frame, stylised)``: applied to each stylised frame (3,H,W in [0,1])
    in display order. Raises VideoReadError naming ``source`` for a file that
    is not a video, has no video stream, no frames, an unknown codec, or ends early; nothing is left under
    ``target`` then. The checks of ``check_video_job``, then ``write_stylised_video``."""
    encoder = check_video_job(source, target, codec)
    return write_stylised_video(stylizer, Path(source), Path(target), encoder=encoder, batch_size=batch_size,
                                quality=check_video_quality(quality), smoother=smoother, progress=progress)


def write_stylised_video(stylizer: Any, source: Path, target: Path, *, encoder: str, batch_size: int, quality: int,
                         smoother: Smoother | None, progress: bool = True) -> VideoReport:
    """The run of a checked video job (``check_video_job`` returned ``encoder``): opens ``source`` once, streams
    its frames through ``stylizer`` and ``smoother`` into ``target`` (atomically), copies its audio. Raises
    VideoReadError naming ``source`` for a clip without frames or one that ends early."""
    av = _import_av()
    start = time.perf_counter()
    with _open_video(av, source) as container:
        video = container.streams.video[0]
        audio = list(container.streams.audio)
        expected = _expected_frames(video)
        with atomic_write(target) as temporary:
            frames = _transcode(av, container, video, audio, temporary, stylizer, source, batch_size=batch_size,
                                quality=quality, codec=encoder, smoother=smoother,
                                bar=tqdm(total=expected, desc=f"stylising {source.name}", unit="frame",
                                         disable=not progress))
            if frames == 0:
                raise VideoReadError(f"{source}: the video stream has no frames; pass a video with frames")
            # a count the container stores is exact; one from duration x average rate is not (variable frame
            # rate, rounding), so that one needs a margin of two frames (an arbitrary, generous rounding bound)
            margin = 0 if video.frames else 2
            if expected is not None and frames < expected - margin:
                raise VideoReadError(f"{source}: truncated: decoded {frames} of the {expected} frames it declares; "
                                     "pass the complete file")
    return VideoReport(target, frames, len(audio), time.perf_counter() - start)


def _transcode(av: Any, container: Any, video: Any, audio: list[Any], temporary: Path, stylizer: Any,
               source: Path, *, batch_size: int, quality: int, codec: str, smoother: Smoother | None,
               bar: tqdm) -> int:
    """Demux ``container`` once: video frames stylised and encoded into ``temporary`` (each at its own time, in
    ``video``'s time base), audio packets copied.
    Returns the number of frames written."""
    output = av.open(str(temporary), "w", format=_muxer(temporary))
    out_audio = {stream.index: output.add_stream_from_template(stream) for stream in audio}
    out_video = None
    held_audio: list[Any] = []  # audio packets before the first video frame fixes the video stream's settings
    batch: list[Any] = []
    written = 0
    # AVI stores decode order only, so B-frames decode with scrambled times: its frame n is shown at n / rate
    rate = video.average_rate or video.guessed_rate
    frame_ticks = 1 / (rate * video.time_base) if container.format.name == "avi" else None

    def encode(frames: list[Any]) -> None:
        nonlocal written
        pixels = torch.stack([torch.from_numpy(frame.to_ndarray(format="rgb24")) for frame in frames])
        originals = pixels.permute(0, 3, 1, 2).float().div_(255)
        for frame, image in zip(frames, stylised_frames(stylizer, originals, smoother), strict=True):
            array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            encoded = _to_encoder(av.VideoFrame.from_ndarray(array, format="rgb24"), out_video.codec_context)
            encoded.pts = frame.pts if frame_ticks is None else round(written * frame_ticks)
            encoded.time_base = video.time_base
            for packet in out_video.encode(encoded):
                output.mux(packet)
            written += 1
            bar.update(1)

    try:
        try:
            for packet in container.demux(video, *audio):
                if packet.stream.type == "audio":
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = out_audio[packet.stream.index]
                    if out_video is None:
                        held_audio.append(packet)
                    else:
                        output.mux(packet)
                    continue
                for frame in packet.decode():
                    if out_video is None:
                        out_video = _video_stream(output, video, frame, codec, quality)
                        for held in held_audio:
                            output.mux(held)
                        held_audio.clear()
                    batch.append(frame)
                    if len(batch) >= batch_size:
                        encode(batch)
                        batch = []
            if batch:
                encode(batch)
            if out_video is not None:
                for packet in out_video.encode():
                    output.mux(packet)
        except av.FFmpegError as error:
            raise VideoReadError(f"{source}: FFmpeg failed while decoding or writing it ({error.strerror or error}); "
                                 f"the file may be damaged, or its audio may not fit in {temporary.suffix} "
                                 f"(try -o {source.stem}.mkv)") from None
    finally:
        bar.close()
        output.close()
    return written


def _muxer(path: Path) -> str:
    """FFmpeg's muxer for the output suffix (the temporary name keeps the suffix, but say it outright)."""
    return {".mkv": "matroska", ".mov": "mov", ".avi": "avi", ".webm": "webm"}.get(path.suffix.lower(), "mp4")


def _encoder_options(codec: str, quality: int) -> dict[str, str]:
    """The encoder's constant-quality options: CRF ``quality`` (libvpx-vp9 needs a zero bitrate for it,
    trac.ffmpeg.org/wiki/Encode/VP9), none for other encoders."""
    if codec in ("libx264", "libx265"):
        return {"crf": str(quality)}
    if codec == "libvpx-vp9":
        return {"crf": str(quality), "b": "0"}
    return {}


def _copy_colour_tags(first: Any, context: Any) -> None:
    """Give the encoder ``context`` the colour description the input's ``first`` frame declares (primaries,
    transfer, range; the YUV matrix where swscale converts into it), so a BT.709 clip stays tagged BT.709."""
    if first.color_primaries != UNSPECIFIED_COLOUR:
        context.color_primaries = first.color_primaries
    if first.color_trc != UNSPECIFIED_COLOUR:
        context.color_trc = first.color_trc
    if first.colorspace in CONVERTIBLE_MATRICES:
        context.colorspace = first.colorspace
    if first.color_range != UNSPECIFIED_RANGE:
        context.color_range = first.color_range


def _to_encoder(frame: Any, context: Any) -> Any:
    """The RGB ``frame`` converted to the encoder's pixel format with the matrix and range ``context`` is tagged
    with (the ones the input was decoded with), so the colours round-trip."""
    return frame.reformat(format=context.pix_fmt,
                          dst_colorspace=context.colorspace if context.colorspace in CONVERTIBLE_MATRICES else None,
                          dst_color_range=context.color_range or None)


def _video_stream(output: Any, video: Any, first: Any, codec: str, quality: int) -> Any:
    """The output video stream: ``codec`` at CRF ``quality``, the input's size, time base, display matrix and
    colour description."""
    stream = output.add_stream(codec, rate=video.average_rate or video.guessed_rate,
                               options=_encoder_options(codec, quality))
    stream.width, stream.height = first.width, first.height
    # 4:2:0 needs even sides; odd-sized videos keep full-resolution chroma instead of losing a row or column
    stream.pix_fmt = "yuv420p" if first.width % 2 == 0 and first.height % 2 == 0 else "yuv444p"
    stream.time_base = video.time_base
    stream.codec_context.time_base = video.time_base
    _copy_colour_tags(first, stream.codec_context)
    matrix = _display_matrix(first)
    if matrix is not None:
        stream.set_display_matrix(matrix)
    return stream
