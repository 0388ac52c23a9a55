"""fststyle serve under load, against 127.0.0.1: concurrent photo uploads and webcam streams, then one webcam
stream alone at each frame size.

    PYTHONPATH=. python bench/serve_load.py                       # 50 uploads + 4 streams for 20 s, then 320x240, 640x480
    PYTHONPATH=. python bench/serve_load.py --uploads 100 --streams 8 --seconds 30 --device cuda

It starts ``fststyle serve`` as a user does (a fresh process on a free port, the shipped models), and reports:
every upload's answer (200, or 503 when the queue is full; anything else is counted as an error), their p50/p95
latency, the webcam streams' frames/s and round trip, and the server's peak resident memory (VmHWM). The plain
baseline measured in the same run is the network alone on one frame of each size (``Stylizer`` in this process),
so the frames/s of a stream reads against what the network allows. Nothing is asserted; load averages are
printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import torch
import websockets
from PIL import Image

from fststyle.io.convert import pil_to_tensor
from fststyle.stylize.stylizer import Stylizer

PHOTO = Path(__file__).resolve().parents[1] / "data" / "preview" / "000000000030.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like frame: the bundled preview photo resized, with a little noise so frames differ."""
    image = Image.open(PHOTO).convert("RGB").resize((width, height))
    noise = np.random.default_rng(seed).normal(0, 3, (height, width, 3))
    pixels = np.clip(np.asarray(image, np.float64) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share)) if values else float("nan")


async def upload(client: httpx.AsyncClient, url: str, body: bytes, results: list) -> None:
    started = time.perf_counter()
    try:
        answer = await client.post(f"{url}/api/stylize?model=starry_night", content=body)
        results.append((answer.status_code, time.perf_counter() - started))
    except httpx.HTTPError as error:
        results.append((type(error).__name__, time.perf_counter() - started))


async def webcam(url: str, model: str, frame: bytes, seconds: float) -> dict:
    """One stream as the page runs it: send a frame, wait for its stylised frame, send the next."""
    rounds, dropped = [], 0
    async with websockets.connect(url.replace("http", "ws") + "/ws/webcam", max_size=2**26) as stream:
        await stream.send(f'{{"model": "{model}"}}')
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            await stream.send(frame)
            while isinstance(message := await stream.recv(), str):  # a report, then its frame
                if json.loads(message)["type"] == "dropped":  # refused while busy: no frame follows
                    dropped += 1
                    break
            else:
                rounds.append(time.perf_counter() - started)
    return {"frames": len(rounds), "dropped": dropped, "fps": len(rounds) / seconds, "p50_ms": 1000 * percentile(rounds, 50),
            "p95_ms": 1000 * percentile(rounds, 95)}


async def load(url: str, uploads: int, streams: int, seconds: float) -> tuple[list, list]:
    results: list = []
    photo = PHOTO.read_bytes()
    async with httpx.AsyncClient(timeout=600) as client:
        cams = [asyncio.create_task(webcam(url, "the_scream", jpeg(320, 240, i), seconds)) for i in range(streams)]
        await asyncio.gather(*(upload(client, url, photo, results) for _ in range(uploads)))
        return results, await asyncio.gather(*cams)


def network_alone(size: tuple[int, int], device: str, runs: int = 5) -> float:
    """Median seconds of the network on one frame of ``size`` (W, H), in this process: the baseline."""
    stylizer = Stylizer.load("the_scream", device=device)
    frame = pil_to_tensor(Image.open(io.BytesIO(jpeg(*size)))).unsqueeze(0)
    stylizer.stylize(frame)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        stylizer.stylize(frame)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "fststyle", "serve", "--port", str(port), f"device={args.device}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/api/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        started = time.perf_counter()
        results, cams = asyncio.run(load(url, args.uploads, args.streams, args.seconds))
        wall = time.perf_counter() - started
        codes = [code for code, _ in results]
        answered = [seconds for code, seconds in results if code == 200]
        print(f"\n{args.uploads} concurrent uploads (a 640x427 photo) + {args.streams} webcam streams (320x240) "
              f"for {args.seconds:g} s; all done in {wall:.1f} s")
        print(f"  uploads: {codes.count(200)} answered 200, {codes.count(503)} refused 503, "
              f"{len(codes) - codes.count(200) - codes.count(503)} other")
        print(f"  upload latency of the 200s: p50 {percentile(answered, 50):.2f} s, p95 {percentile(answered, 95):.2f} s")
        for index, cam in enumerate(cams):
            print(f"  stream {index}: {cam['fps']:.1f} frames/s, round trip p50 {cam['p50_ms']:.0f} ms, "
                  f"p95 {cam['p95_ms']:.0f} ms, {cam['dropped']} frames refused as busy")
        print(f"  server peak resident memory: {peak_memory_mb(server.pid):.0f} MB")
        print("\none webcam stream alone (the page's loop: send a frame, wait for it):")
        for width, height in ((320, 240), (640, 480)):
            cam = asyncio.run(webcam(url, "the_scream", jpeg(width, height), args.seconds / 2))
            alone = network_alone((width, height), args.device)
            print(f"  {width}x{height}: {cam['fps']:.1f} frames/s, round trip p50 {cam['p50_ms']:.0f} ms, p95 "
                  f"{cam['p95_ms']:.0f} ms; the network alone {1000 * alone:.0f} ms = {1 / alone:.1f} frames/s "
                  f"(stream / network alone: {cam['fps'] * alone:.2f}x)")
        print(f"server peak resident memory at the end: {peak_memory_mb(server.pid):.0f} MB; "
              f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
