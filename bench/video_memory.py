"""Peak memory of ``stylize_video`` against clip length: it streams, so a longer clip must not need more.

    PYTHONPATH=. python bench/video_memory.py                          # 10 s and 60 s, 320x240, 24 fps
    PYTHONPATH=. python bench/video_memory.py --seconds 5 30 --size 640x360 --model the_scream

Each clip (a pan across a bundled photo with a 440 Hz AAC track, made with PyAV) is stylised in a fresh
process; the peak resident memory above the resident memory before the call (fststyle.memory.PeakMemory, on
CUDA the allocator's peak) is printed with the frame rate and the load averages, since other processes may
share the cores. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # fststyle, in this process and in the measuring subprocesses it starts


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int = 24) -> Path:
    """A ``seconds`` long pan across data/preview's first photo with a mono AAC tone."""
    import av
    from PIL import Image

    frames = round(seconds * fps)
    strip = np.asarray(Image.open(REPO / "data/preview/000000000030.jpg").convert("RGB").resize((2 * width, height)))
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = output.add_stream("aac", rate=16000, layout="mono")
        for index in range(frames):
            left = (index * width // max(frames - 1, 1)) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(strip[:, left:left + width]), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(video.encode(frame))
        output.mux(video.encode())
        samples = round(seconds * 16000)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            output.mux(sound.encode(chunk))
        output.mux(sound.encode())
    return path


def measure(clip: str, model: str, device: str, batch_size: int) -> None:
    """Stylise ``clip`` once in this process; print a JSON line with the peak memory and frames/s."""
    from fststyle.io.video import stylize_video
    from fststyle.memory import PeakMemory
    from fststyle.stylize.stylizer import Stylizer

    stylizer = Stylizer.load(model, device=device)
    target = Path(clip).with_name(Path(clip).stem + "_styled.mp4")
    with PeakMemory(stylizer.device) as peak:
        report = stylize_video(stylizer, clip, target, batch_size=batch_size, progress=False)
    print(json.dumps({"frames": report.frames, "seconds": report.seconds, "peak_bytes": peak.bytes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--model", default="starry_night")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process: stylise this clip
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.model, args.device, args.batch_size)
        return
    width, height = map(int, args.size.split("x"))
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            clip = make_clip(Path(folder) / f"clip_{seconds:g}s.mp4", seconds, width, height)
            child = subprocess.run([sys.executable, __file__, "--measure", str(clip), "--model", args.model,
                                    "--device", args.device, "--batch-size", str(args.batch_size)],
                                   capture_output=True, text=True, check=True)
            result = json.loads(child.stdout.strip().splitlines()[-1])
            peak = "n/a" if result["peak_bytes"] is None else f"{result['peak_bytes'] / 2**20:.0f} MiB"
            print(f"{seconds:g} s clip, {args.size}, {result['frames']} frames: peak memory {peak} above the start, "
                  f"{result['frames'] / result['seconds']:.1f} frames/s, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
