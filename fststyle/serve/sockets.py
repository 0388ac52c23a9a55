"""The page's two WebSockets: the webcam (frames in, stylised frames out, the newest frame first) and the
fast-vs-slow run (Gatys or MRF on one photo, its image and loss terms live, then both scored as compare scores).

Messages: JSON text for settings and reports, binary for images (JPEG or PNG bytes). Every report that has an
image is a text message ``{"type": ..., ...}`` followed by one binary message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import torch
from starlette.websockets import WebSocket, WebSocketDisconnect

from fststyle.compare.scoring import EngineRunner, choose_style, quantize, scoring_loss, style_images
from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.io.encode import encode_image
from fststyle.serve.batching import QueueFull
from fststyle.stylize.temporal import new_smoother

#: JPEG quality of the webcam's frames and the slow run's previews (small and quick; downloads use the setting)
PREVIEW_QUALITY = 85
#: WebSocket close codes (RFC 6455 7.4.1): policy violation, and "try again later" (IANA registry)
CLOSE_POLICY, CLOSE_TRY_AGAIN = 1008, 1013
#: what sending to a page that has just closed its socket raises (Starlette, uvicorn's websockets transport)
GONE = (WebSocketDisconnect, OSError, RuntimeError)


class Stopped(Exception):
    """Raised inside the slow engine's callback to end its run: cancelled by the page, or out of time."""


def state_of(socket: WebSocket) -> Any:
    return socket.app.state.fststyle


async def send_report(socket: WebSocket, report: dict[str, Any], image: bytes | None = None) -> None:
    await socket.send_text(json.dumps(report))
    if image is not None:
        await socket.send_bytes(image)


@dataclass
class WebcamSettings:
    """One webcam stream's choices, sent by the page as JSON whenever they change."""

    model: str
    style: Any = None
    strength: float = 1.0
    preserve_color: bool = False
    temporal: str = "none"

    @classmethod
    def parse(cls, text: str) -> WebcamSettings:
        try:
            values = json.loads(text)
            settings = cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"cannot read the webcam settings {text[:200]!r} ({error})") from None
        if settings.temporal not in ("none", "flow"):
            raise UserError(f"temporal={settings.temporal!r}: choose none or flow")
        if not isinstance(settings.strength, int | float) or not 0 <= settings.strength <= 1:
            raise UserError(f"strength={settings.strength!r} must be from 0 to 1")
        return settings


async def webcam_socket(socket: WebSocket) -> None:
    """Frames (JPEG bytes) in, stylised frames out. While a frame is being stylised the newest one that
    arrives waits and older waiting ones are dropped, so the latency stays one frame's work, never a backlog."""
    state = state_of(socket)
    await socket.accept()
    newest: bytes | None = None
    arrived = anyio.Event()
    current: dict[str, Any] = {}
    counts = {"dropped": 0, "served": 0}

    async def receive() -> None:
        nonlocal arrived, newest
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                try:
                    settings = WebcamSettings.parse(message["text"])
                    stylizer = await anyio.to_thread.run_sync(state.registry.stylizer, settings.model, settings.style)
                    smoother = new_smoother(settings.temporal)
                except UserError as error:
                    await send_report(socket, {"type": "error", "error": str(error)})
                    continue
                current.update(settings=settings, stylizer=stylizer, smoother=smoother)
            elif message.get("bytes") is not None:
                if newest is not None:
                    counts["dropped"] += 1
                newest = message["bytes"]
                arrived.set()

    async def serve_frames() -> None:
        with contextlib.suppress(*GONE):
            await frames_until_closed()

    async def frames_until_closed() -> None:
        nonlocal arrived, newest
        while True:
            await arrived.wait()
            arrived = anyio.Event()
            frame, newest = newest, None
            if frame is None or "stylizer" not in current:
                continue
            settings, stylizer, smoother = current["settings"], current["stylizer"], current["smoother"]
            try:
                image = await anyio.to_thread.run_sync(partial(load_image, frame, max_pixels=state.settings.max_pixels))
            except UserError as error:
                await send_report(socket, {"type": "dropped", "reason": str(error), **counts})
                continue
            started = time.perf_counter()
            try:
                future = state.queue.submit(stylizer, image, strength=settings.strength,
                                            preserve_color=settings.preserve_color, urgent=True)
            except QueueFull:  # the page waits for an answer to each frame: say this one was dropped
                counts["dropped"] += 1
                await send_report(socket, {"type": "dropped", "reason": "the server is busy", **counts})
                continue
            stylised, seconds = await asyncio.wrap_future(future)
            if smoother is not None:
                stylised = (await anyio.to_thread.run_sync(smoother, image[0], stylised[0])).unsqueeze(0)
            encoded = await anyio.to_thread.run_sync(partial(encode_image, stylised, ".jpg", quality=PREVIEW_QUALITY))
            counts["served"] += 1
            await send_report(socket, {"type": "frame", "network_seconds": seconds,
                                       "server_seconds": time.perf_counter() - started,
                                       "width": image.shape[-1], "height": image.shape[-2], **counts}, encoded)

    async with anyio.create_task_group() as group:
        group.start_soon(serve_frames)
        await receive()
        group.cancel_scope.cancel()


async def optimize_socket(socket: WebSocket) -> None:
    """The page sends ``{"model", "style", "engine"}`` and then the photo's bytes; the socket answers the fast
    result and its scores, the slow engine's image and loss terms as it converges, and both final scores.
    ``{"cancel": true}`` (or closing the page) stops the slow run; so does the server's time limit."""
    state = state_of(socket)
    await socket.accept()
    if state.slow_run.locked():
        await send_report(socket, {"type": "error", "error": "another slow run is going on; try again when it ends"})
        await socket.close(CLOSE_TRY_AGAIN)
        return
    async with state.slow_run:
        try:
            request = json.loads(await socket.receive_text())
            photo_bytes = await socket.receive_bytes()
            await run_slow(socket, state, request, photo_bytes)
        except UserError as error:
            await send_report(socket, {"type": "error", "error": str(error)})
            await socket.close(CLOSE_POLICY)
        except (WebSocketDisconnect, json.JSONDecodeError, KeyError):
            pass


async def run_slow(socket: WebSocket, state: Any, request: dict[str, Any], photo_bytes: bytes) -> None:
    """The fast model and one slow engine on the photo at the slow size, scored by the model's own loss."""
    settings = state.settings
    engine = request.get("engine")
    if engine not in settings.engines:
        raise UserError(f"engine={engine!r}: choose one of {', '.join(sorted(settings.engines))}")
    content = await anyio.to_thread.run_sync(partial(load_image, photo_bytes, settings.slow_image_size,
                                                      max_pixels=settings.max_pixels))
    record = choose_style(state.registry.model(request.get("model", "")), request.get("style") or None)
    device = state.registry.device

    def prepare() -> tuple[EngineRunner, Any]:
        styles = style_images(record)
        blend = (record.metadata.get("style") or {}).get("blend")
        runner = EngineRunner(record, ["fast", engine], settings.engines, styles, blend, settings.slow_image_size,
                              device, seed=0, progress=False)
        return runner, scoring_loss(record, device, styles)

    await send_report(socket, {"type": "status", "status": "building the loss (VGG) and the engine"})
    runner, loss = await anyio.to_thread.run_sync(prepare)

    def scored(image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        picture = quantize(image.detach().cpu())
        with torch.no_grad():
            terms = loss(picture.to(device), content.to(device))
        return picture, {key: float(value) for key, value in terms.items() if "." not in key}

    fast, fast_seconds, _ = await anyio.to_thread.run_sync(runner.run, "fast", content)
    fast_picture, fast_scores = await anyio.to_thread.run_sync(scored, fast)
    await send_report(socket, {"type": "fast", "seconds": fast_seconds, "scores": fast_scores},
                      encode_image(fast_picture, ".png"))

    updates: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    stop: dict[str, str | None] = {"reason": None}
    latest: dict[str, Any] = {}
    started, interval = time.perf_counter(), 1.0 / settings.slow_updates_per_second
    total = sum(runner.slow[engine][0].steps_per_level())

    def callback(step: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        """After each step (and once for the starting image, step 0); the time limit counts from step 1."""
        latest.update(step=step, image=image.detach().cpu().clone())
        if stop["reason"] is None and step > 0 and time.perf_counter() - started > settings.slow_time_limit:
            stop["reason"] = f"time limit ({settings.slow_time_limit:g} s)"
        if stop["reason"] is not None:
            raise Stopped(stop["reason"])
        now = time.perf_counter()
        if step == total or now - latest.get("sent", 0.0) >= interval:
            latest["sent"] = now
            loop.call_soon_threadsafe(updates.put_nowait, (step, latest["image"], dict(terms)))

    async def run_engine() -> None:
        try:
            latest["final"], _, _ = await anyio.to_thread.run_sync(runner.run, engine, content, callback)
        except Stopped:
            pass
        finally:
            updates.put_nowait(None)

    async def listen_for_cancel() -> None:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                stop["reason"] = "the page closed"
                return
            with contextlib.suppress(ValueError, AttributeError):
                if message.get("text") and json.loads(message["text"]).get("cancel"):
                    stop["reason"] = "cancelled"

    async def report_progress() -> None:
        while (update := await updates.get()) is not None:
            step, image, terms = update
            preview = await anyio.to_thread.run_sync(partial(encode_image, image, ".jpg", quality=PREVIEW_QUALITY))
            await send_report(socket, {"type": "progress", "step": step, "total": total,
                                       "seconds": time.perf_counter() - started,
                                       "terms": {k: v for k, v in terms.items() if "." not in k}}, preview)
        if "image" not in latest:
            await send_report(socket, {"type": "done", "stopped": stop["reason"], "step": 0})
            return
        slow_picture, slow_scores = await anyio.to_thread.run_sync(scored, latest.get("final", latest["image"]))
        await send_report(socket, {"type": "done", "engine": engine, "step": latest["step"], "total": total,
                                   "seconds": time.perf_counter() - started, "stopped": stop["reason"],
                                   "scores": {"fast": fast_scores, engine: slow_scores},
                                   "fast_seconds": fast_seconds}, encode_image(slow_picture, ".png"))

    async with anyio.create_task_group() as group:
        group.start_soon(run_engine)
        group.start_soon(listen_for_cancel)
        try:
            await report_progress()
        except GONE:
            stop["reason"] = "the page closed"  # the engine stops at its next step
        group.cancel_scope.cancel()
