"""What a local server refuses before any work: requests for another Host or from another Origin (DNS rebinding,
cross-site requests from other pages in the same browser), and uploads above the byte limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

#: the names a browser on this machine uses for a server bound to the loopback address
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class UploadTooLarge(Exception):
    """A request body above the server's upload limit (answered 413)."""


def allowed_hosts(host: str, port: int, extra: Collection[str] = ()) -> frozenset[str]:
    """The Host header values (``name:port``) this server answers: its own address, the loopback names when it
    is bound to loopback, and any ``extra`` names (for a server bound to another address)."""
    names = {host, *extra}
    if host in ("127.0.0.1", "localhost", "::1"):
        names.update(LOOPBACK_NAMES)
    return frozenset(f"[{name}]:{port}" if ":" in name and not name.startswith("[") else f"{name}:{port}"
                     for name in names)


class SameOriginGuard:
    """ASGI middleware: refuses (HTTP 403, or a WebSocket handshake refused with 403) any request whose Host is
    not one of ``hosts``, or whose Origin, when the browser sends one, is not ``http://`` one of them."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and not self.allows(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b"refused: this server answers only pages it served itself (Host and Origin checked)\n"
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def allows(self, scope: Scope) -> bool:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if headers.get("host", "").lower() not in self.hosts:
            return False
        origin = headers.get("origin")
        if origin is None:  # not sent by browsers for same-origin GETs; a non-browser client
            return True
        parts = urlsplit(origin)
        return parts.scheme == "http" and parts.netloc.lower() in self.hosts and not parts.path.strip("/")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (UploadTooLarge) as soon as it passes ``limit`` bytes: its declared
    Content-Length first, then the bytes as they arrive, so an oversized upload is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"the upload is {int(declared):,} bytes, more than this server's limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"the upload is more than this server's limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
