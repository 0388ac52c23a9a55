"""The ``fststyle serve`` web app (Starlette): the page, the models, photos stylised through one batching queue,
and the webcam and fast-vs-slow WebSockets (serve/sockets.py).

    app = create_app(ModelRegistry([], device=resolve_device("auto"), tile=1024), ServeSettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from fststyle.errors import UserError, check_integer_setting
from fststyle.io.convert import pil_to_tensor
from fststyle.io.decode import ImageTooLarge, read_photo
from fststyle.io.encode import DEFAULT_JPEG_QUALITY, check_jpeg_quality, encode_image
from fststyle.serve.batching import BatchingQueue, QueueFull
from fststyle.serve.guard import SameOriginGuard, UploadTooLarge, allowed_hosts, read_body
from fststyle.serve.registry import ModelRegistry
from fststyle.serve.sockets import optimize_socket, webcam_socket

STATIC = Path(__file__).resolve().parent / "static"
#: what a 503 asks a client to wait before it retries, in seconds
RETRY_AFTER = 1


@dataclass
class ServeSettings:
    """How the server is bound and what it accepts (conf/serve.yaml documents each)."""

    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: list[str] = field(default_factory=list)
    max_upload_mb: int = 25
    max_pixels: int = 50_000_000
    queue: int = 32
    max_batch: int = 8
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    slow_image_size: int = 256
    slow_time_limit: float = 120.0
    slow_updates_per_second: float = 4.0
    engines: dict[str, Any] = field(default_factory=dict)  # engine name -> its composed config (gatys, mrf)

    def __post_init__(self) -> None:
        check_integer_setting("port", self.port, 1, 65535, "a TCP port", 8000)
        check_integer_setting("max_upload_mb", self.max_upload_mb, 1, 4096, "megabytes per upload", 25)
        check_integer_setting("max_pixels", self.max_pixels, 1, 10**10, "pixels per photo", 50_000_000)
        check_integer_setting("queue", self.queue, 1, 100_000, "requests waiting for the network", 32)
        check_integer_setting("max_batch", self.max_batch, 1, 256, "photos of one size run together", 8)
        check_integer_setting("slow_image_size", self.slow_image_size, 16, 4096, "the slow engines' longer side", 256)
        check_jpeg_quality(self.jpeg_quality, "jpeg_quality")
        if not self.slow_time_limit > 0:
            raise UserError(f"slow_time_limit={self.slow_time_limit} must be > 0 seconds; e.g. slow_time_limit=120")


@dataclass
class ServerState:
    """What every request shares: the models, the batching queue, the settings, the one slow run's lock."""

    registry: ModelRegistry
    queue: BatchingQueue
    settings: ServeSettings
    slow_run: anyio.Lock = field(default_factory=anyio.Lock)


def style_choice(raw: str | None) -> str | dict[str, float] | None:
    """The ``style`` query value: empty for a model's only style, a name, or a JSON ``{name: weight}`` blend."""
    if not raw:
        return None
    if raw.lstrip().startswith("{"):
        try:
            blend = json.loads(raw)
        except json.JSONDecodeError as error:
            raise UserError(f"style={raw!r} is not a JSON blend ({error.msg})") from None
        if not isinstance(blend, dict):
            raise UserError(f"style={raw!r} must be a style name or a JSON {{name: weight}} blend")
        return blend
    return raw


def number(query: Mapping[str, str], key: str, default: float, low: float, high: float) -> float:
    """The query's float ``key`` (``default`` when absent), or a UserError naming its range."""
    try:
        value = float(query.get(key, default))
    except ValueError:
        raise UserError(f"{key}={query[key]!r} is not a number") from None
    if not low <= value <= high:
        raise UserError(f"{key}={value} must be from {low} to {high}")
    return value


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.fststyle
    return JSONResponse({"models": state.registry.describe(), "engines": sorted(state.settings.engines),
                         "slow_image_size": state.settings.slow_image_size,
                         "slow_time_limit": state.settings.slow_time_limit})


async def stylize(request: Request) -> Response:
    """POST a photo's bytes; query: model, style, strength, preserve_color, format (jpg | png). Answers the
    stylised photo encoded as ``fststyle stylize`` writes it (sRGB ICC profile, the photo's EXIF)."""
    state: ServerState = request.app.state.fststyle
    query = request.query_params
    fmt = query.get("format", "jpg")
    if fmt not in ("jpg", "png"):
        raise UserError(f"format={fmt!r}: choose jpg or png")
    stylizer = await anyio.to_thread.run_sync(state.registry.stylizer, query.get("model", ""),
                                              style_choice(query.get("style")))
    strength = number(query, "strength", 1.0, 0.0, 1.0)
    preserve_color = query.get("preserve_color", "false").lower() in ("1", "true", "on", "yes")
    body = await read_body(request, state.settings.max_upload_mb * 2**20)
    photo = await anyio.to_thread.run_sync(lambda: read_photo(body, max_pixels=state.settings.max_pixels))
    image = pil_to_tensor(photo.rgb).unsqueeze(0)
    future = state.queue.submit(stylizer, image, strength=strength, preserve_color=preserve_color)
    stylised, seconds = await asyncio.wrap_future(future)
    encoded = await anyio.to_thread.run_sync(lambda: encode_image(
        stylised, f".{fmt}", alpha=photo.alpha, quality=state.settings.jpeg_quality, exif=photo.exif))
    return Response(encoded, media_type="image/jpeg" if fmt == "jpg" else "image/png",
                    headers={"x-network-seconds": f"{seconds:.4f}", "x-style": stylizer.style_name,
                             "cache-control": "no-store"})


async def user_error(request: Request, error: Exception) -> Response:
    return JSONResponse({"error": str(error)}, status_code=413 if isinstance(error, ImageTooLarge) else 400)


async def too_large(request: Request, error: Exception) -> Response:
    return JSONResponse({"error": str(error)}, status_code=413)


async def busy(request: Request, error: Exception) -> Response:
    return JSONResponse({"error": f"busy: {error}; retry in {RETRY_AFTER} s"}, status_code=503,
                        headers={"retry-after": str(RETRY_AFTER)})


def create_app(registry: ModelRegistry, settings: ServeSettings) -> SameOriginGuard:
    """The ASGI app serving ``registry``'s models under ``settings``, behind the Host/Origin guard."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        queue = BatchingQueue(settings.queue, settings.max_batch)
        app.state.fststyle = ServerState(registry, queue, settings)
        try:
            yield
        finally:
            queue.close()

    routes = [
        Route("/", index),
        Route("/api/models", models),
        Route("/api/stylize", stylize, methods=["POST"]),
        WebSocketRoute("/ws/webcam", webcam_socket),
        WebSocketRoute("/ws/optimize", optimize_socket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={UserError: user_error, UploadTooLarge: too_large, QueueFull: busy})
    return SameOriginGuard(app, allowed_hosts(settings.host, settings.port, settings.allowed_hosts))
