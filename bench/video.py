"""Video throughput: frames/s of ``stylize_video`` with and without ``temporal=flow``, and where the time goes.

    PYTHONPATH=. python bench/video.py                          # 640x360 and 1280x720, 24 frames each
    PYTHONPATH=. python bench/video.py --sizes 320x240 --frames 48 --device cuda

For each size a pan across a bundled photo is encoded with PyAV (H.264), then stylised by the shipped
starry_night model: end to end with ``temporal=none`` (the baseline) and ``temporal=flow`` (frames/s and
the ratio to the baseline, measured in the same run), and phase by phase: decode, network (batches of
``--batch``), flow smoothing, encode (libx264, CRF 18), as shares of their sum. Load averages are printed
beside the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from fststyle.bundled import bundled_path
from fststyle.io.video import stylize_video
from fststyle.stylize.stylizer import Stylizer
from fststyle.stylize.temporal import FlowSmoother

PHOTO = "data/preview/000000000030.jpg"


def make_pan(path: Path, width: int, height: int, frames: int) -> Path:
    """A ``frames``-frame 24 fps H.264 pan across the bundled photo, ``width`` x ``height``."""
    strip = np.asarray(Image.open(bundled_path(PHOTO)).convert("RGB").resize((2 * width, height)))
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            left = index * width // frames
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(strip[:, left:left + width]), format="rgb24")
            for packet in stream.encode(picture):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def phases(stylizer: Stylizer, clip: Path, batch: int, out: Path) -> dict[str, float]:
    """Seconds spent decoding, in the network, in flow smoothing and encoding the clip, each on its own."""
    seconds = {}
    start = time.perf_counter()
    with av.open(str(clip)) as container:
        frames = [torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255
                  for frame in container.decode(video=0)]
    seconds["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    stylised = [image for index in range(0, len(frames), batch)
                for image in stylizer.stylize(torch.stack(frames[index:index + batch]))]
    seconds["network"] = time.perf_counter() - start
    smoother = FlowSmoother()
    start = time.perf_counter()
    smoothed = [smoother(frame, image) for frame, image in zip(frames, stylised, strict=True)]
    seconds["flow"] = time.perf_counter() - start
    start = time.perf_counter()
    with av.open(str(out), "w") as output:
        stream = output.add_stream("libx264", rate=24, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[-1], frames[0].shape[-2], "yuv420p"
        for image in smoothed:
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().cpu().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    seconds["encode"] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    stylizer = Stylizer.load("starry_night", device=args.device)
    print(f"device {stylizer.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.frames} frames, batch {args.batch}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'size':>10} {'none fps':>9} {'flow fps':>9} {'flow/none':>9}   decode  network  flow  encode")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            clip = make_pan(Path(folder) / f"pan_{size}.mp4", width, height, args.frames)
            fps = {}
            for mode, smoother in (("none", None), ("flow", FlowSmoother())):
                start = time.perf_counter()
                stylize_video(stylizer, clip, Path(folder) / f"out_{mode}_{size}.mp4", batch_size=args.batch,
                              smoother=smoother, progress=False)
                fps[mode] = args.frames / (time.perf_counter() - start)
            seconds = phases(stylizer, clip, args.batch, Path(folder) / f"phases_{size}.mp4")
            total = sum(seconds.values())
            shares = "  ".join(f"{100 * seconds[name] / total:5.1f}%" for name in ("decode", "network", "flow", "encode"))
            print(f"{size:>10} {fps['none']:9.2f} {fps['flow']:9.2f} {fps['flow'] / fps['none']:8.2f}x   {shares}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
